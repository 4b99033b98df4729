"""Benchmark: stamps per second and peak memory of `galearn cutouts` on big mosaics.

Writes ``--bands`` float32 FITS mosaics of ``--side`` x ``--side`` pixels (noise
plus one Gaussian source per catalogue row, generated in strips so that no
mosaic is ever held in memory) and a catalogue of ``--rows`` random positions
into a temporary folder, then measures, each in a FRESH process (so peak
memory is that of the stage alone, mosaic creation excluded):

1. ``stream``: the cutting loop alone (vectorised positions, memory-mapped
   gathers, quality checks) with the stamps thrown away;
2. ``sample``: the whole ``make_sample_from_mosaics`` (stretch fit from the
   mosaics, writing physical + stretched stamps to ``sample.h5``, hashing
   the inputs), timed per phase;
3. ``resampled`` (``--resampled N``): N stamps of a band on a 2x coarser,
   rotated grid (flux-conserving ``reproject_adaptive`` per stamp).

Peak memory = ``ru_maxrss`` of the measuring process (resident set, includes
the Python interpreter and libraries, ~150-250 MB).

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_cutouts.py            # full: 3 x 20000^2, 20000 rows
    .venv/bin/python benchmarks/bench_cutouts.py --side 4000 --rows 2000   # quick

Results are printed and written to ``benchmarks/out/bench_cutouts.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BANDS = ["F435W", "F850LP", "F160W"]


def _wcs(side: int, scale_arcsec: float, rot_deg: float = 0.0):
    from astropy.wcs import WCS

    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [53.12, -27.81]
    w.wcs.crpix = [side / 2 + 0.5, side / 2 + 0.5]
    s = scale_arcsec / 3600.0
    c, si = np.cos(np.radians(rot_deg)), np.sin(np.radians(rot_deg))
    w.wcs.cd = np.array([[-s * c, s * si], [s * si, s * c]])
    return w


def write_mosaic(path: Path, side: int, w, xs: np.ndarray, ys: np.ndarray, seed: int, strip: int = 512) -> None:
    """Noise + Gaussian sources at (xs, ys), written strip by strip (astropy StreamingHDU)."""
    from astropy.io import fits

    header = fits.Header()
    header["SIMPLE"] = True
    header["BITPIX"] = -32
    header["NAXIS"] = 2
    header["NAXIS1"] = side
    header["NAXIS2"] = side
    header.update(w.to_header())
    header["BUNIT"] = "electrons/s"
    header["PHOTZP"] = (25.0, "AB mag of 1 electron/s (galearn calibrates stamps to nJy)")
    rng = np.random.default_rng(seed)
    half = 7
    g = np.exp(-(np.arange(-half, half + 1) ** 2) / (2 * 1.5**2)).astype("f4")
    blob = 2.0 * np.outer(g, g)
    order = np.argsort(ys)
    xs, ys = np.round(xs[order]).astype(int), np.round(ys[order]).astype(int)
    shdu = fits.StreamingHDU(path, header)
    for y0 in range(0, side, strip):
        y1 = min(y0 + strip, side)
        chunk = rng.standard_normal((y1 - y0, side), dtype=np.float32) * np.float32(0.01)
        lo, hi = np.searchsorted(ys, y0 - half), np.searchsorted(ys, y1 + half)
        for x, y in zip(xs[lo:hi], ys[lo:hi]):
            ya, yb = max(y - half, y0), min(y + half + 1, y1)
            xa, xb = max(x - half, 0), min(x + half + 1, side)
            if ya < yb and xa < xb:
                chunk[ya - y0 : yb - y0, xa:xb] += blob[ya - y + half : yb - y + half, xa - x + half : xb - x + half]
        shdu.write(chunk.astype(">f4"))
    shdu.close()


def make_inputs(d: Path, side: int, rows: int, n_bands: int, seed: int, resampled: int) -> dict:
    from astropy.table import Table

    rng = np.random.default_rng(seed)
    w = _wcs(side, 0.06)
    margin = 40
    xs = rng.uniform(margin, side - margin, rows)
    ys = rng.uniform(margin, side - margin, rows)
    ra, dec = w.all_pix2world(xs, ys, 0)
    Table({"ID": np.arange(rows), "RA_1": ra, "DEC_1": dec, "zbest": rng.uniform(0, 3, rows)}).write(
        d / "catalog.fits", overwrite=True)
    images = {}
    for b, band in enumerate(BANDS[:n_bands]):
        t0 = time.perf_counter()
        images[band] = d / f"{band}.fits"
        write_mosaic(images[band], side, w, xs, ys, seed + 1 + b)
        print(f"  wrote {images[band]} ({images[band].stat().st_size / 1e9:.2f} GB) in {time.perf_counter() - t0:.1f} s",
              flush=True)
    out = {"catalog": str(d / "catalog.fits"), "images": {k: str(v) for k, v in images.items()}}
    if resampled:
        side2 = side // 2
        w2 = _wcs(side2, 0.12, rot_deg=20.0)
        x2, y2 = w2.all_world2pix(ra, dec, 0)
        write_mosaic(d / "coarse.fits", side2, w2, x2, y2, seed + 99)
        out["coarse"] = str(d / "coarse.fits")
    return out


# --------------------------------------------------------------------------- measurements (child processes)


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def measure_stream(inputs: dict, batch: int) -> dict:
    from astropy.table import Table

    from galearn.survey.catalog import resolve_columns
    from galearn.survey.cutouts import _Cutter, _open_all

    rss0 = _peak_mb()
    t0 = time.perf_counter()
    table = Table.read(inputs["catalog"])
    mosaics = _open_all(inputs["images"])
    cutter = _Cutter(table, mosaics, resolve_columns(table, "candels"), size=64, select=None,
                     max_bad_fraction=0.05, require_central_brightest=False, resample="adaptive")
    t_geom = time.perf_counter() - t0
    kept = 0
    t1 = time.perf_counter()
    for start in range(0, len(cutter.candidates), batch):
        rows = cutter.candidates[start : start + batch]
        stamps = cutter.read(rows)
        kept += int(np.sum(cutter.check(stamps, None) == ""))
    t_cut = time.perf_counter() - t1
    for m in mosaics:
        m.close()
    total = time.perf_counter() - t0
    return {"rows": len(table), "stamps": kept, "geometry_s": t_geom, "cut_s": t_cut, "total_s": total,
            "stamps_per_s_cut": kept / t_cut, "stamps_per_s_total": kept / total,
            "peak_rss_mb": _peak_mb(), "rss_after_imports_mb": rss0}


def measure_sample(inputs: dict, ws: str, batch: int) -> dict:
    from galearn.config import CutoutConfig
    from galearn.store import Workspace
    from galearn.survey import make_sample_from_mosaics

    rss0 = _peak_mb()
    t0 = time.perf_counter()
    s = make_sample_from_mosaics(inputs["catalog"], inputs["images"], Workspace(ws), CutoutConfig(batch_size=batch),
                                 progress=False)
    total = time.perf_counter() - t0
    timing = s.extra["timing"]
    return {"stamps": s.n, "rejected": len(s.rejected), "total_s": total, **timing,
            "stamps_per_s_cut_and_write": s.n / timing["cut_s"], "stamps_per_s_total": s.n / total,
            "sample_file_gb": Path(s.path).stat().st_size / 1e9, "peak_rss_mb": _peak_mb(),
            "rss_after_imports_mb": rss0}


def measure_resampled(inputs: dict, n: int) -> dict:
    from astropy.table import Table

    from galearn.survey import cut_stamps

    table = Table.read(inputs["catalog"])[:n]
    first = next(iter(inputs["images"]))
    t0 = time.perf_counter()
    res = cut_stamps(table, {first: inputs["images"][first], "F160W": inputs["coarse"]}, size=64)
    dt = time.perf_counter() - t0
    return {"stamps": len(res.catalog), "total_s": dt, "stamps_per_s": len(res.catalog) / dt,
            "method": res.info["resample"], "peak_rss_mb": _peak_mb()}


def _child(kind: str, args: argparse.Namespace, inputs: dict, ws: str = "") -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--inputs", json.dumps(inputs), "--batch", str(args.batch),
           "--resampled", str(args.resampled), "--ws", ws]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--side", type=int, default=20000, help="mosaic side (pixels)")
    p.add_argument("--rows", type=int, default=20000, help="catalogue rows")
    p.add_argument("--bands", type=int, default=3, choices=[1, 2, 3])
    p.add_argument("--batch", type=int, default=1024, help="stamps per batch")
    p.add_argument("--resampled", type=int, default=500, help="stamps for the resampled-band measurement (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmpdir", default="/tmp", help="where the mosaics go (deleted afterwards)")
    p.add_argument("--keep", action="store_true", help="keep the temporary folder")
    p.add_argument("--out", default=str(Path(__file__).parent / "out" / "bench_cutouts.json"))
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    p.add_argument("--inputs", default=None, help=argparse.SUPPRESS)
    p.add_argument("--ws", default="", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.child:
        inputs = json.loads(args.inputs)
        if args.child == "stream":
            res = measure_stream(inputs, args.batch)
        elif args.child == "sample":
            res = measure_sample(inputs, args.ws, args.batch)
        else:
            res = measure_resampled(inputs, args.resampled)
        print(json.dumps(res))
        return

    d = Path(tempfile.mkdtemp(prefix="galearn-bench-cutouts-", dir=args.tmpdir))
    try:
        print(f"generating {args.bands} mosaics of {args.side}^2 float32 + {args.rows} rows in {d}", flush=True)
        t0 = time.perf_counter()
        inputs = make_inputs(d, args.side, args.rows, args.bands, args.seed, args.resampled)
        gen_s = time.perf_counter() - t0
        mosaic_mb = args.side**2 * 4 / 1e6
        results = {"side": args.side, "rows": args.rows, "bands": args.bands, "batch": args.batch,
                   "mosaic_size_mb": mosaic_mb, "generation_s": gen_s, "cpu_count": os.cpu_count()}
        print("measuring the cutting loop (stamps discarded) ...", flush=True)
        results["stream"] = _child("stream", args, inputs)
        print(json.dumps(results["stream"], indent=1), flush=True)
        print("measuring make_sample_from_mosaics (writes sample.h5) ...", flush=True)
        results["sample"] = _child("sample", args, inputs, ws=str(d / "ws"))
        print(json.dumps(results["sample"], indent=1), flush=True)
        if args.resampled:
            print(f"measuring {args.resampled} stamps with a resampled band ...", flush=True)
            results["resampled"] = _child("resampled", args, inputs)
            print(json.dumps(results["resampled"], indent=1), flush=True)
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        s, st = results["sample"], results["stream"]
        print(f"\nSUMMARY {args.bands} x {args.side}^2 mosaics ({mosaic_mb:.0f} MB each), {args.rows} rows:\n"
              f"  cutting loop: {st['stamps_per_s_cut']:.0f} stamps/s (incl. opening + geometry "
              f"{st['stamps_per_s_total']:.0f}/s), peak RSS {st['peak_rss_mb']:.0f} MB\n"
              f"  make_sample_from_mosaics: cut+write {s['stamps_per_s_cut_and_write']:.0f} stamps/s, "
              f"total {s['total_s']:.1f} s (hash {s['hash_s']:.1f} s, stretch fit {s['stretch_fit_s']:.1f} s), "
              f"peak RSS {s['peak_rss_mb']:.0f} MB\n  wrote {out}")
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    main()
