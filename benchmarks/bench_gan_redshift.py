"""Does conditioning on redshift as well as class (``gan.redshift_bins``) give a library that follows redshift?

Reads two finished GAN runs on the same field (e.g. made by
``bench_gan_default.py``): WS_CLASS conditioned on the class only and WS_Z on
class + redshift bin. For every (class, redshift bin) of WS_Z it compares the
real held-out stamps of that cell (WS_Z's split: never shown to the WS_Z
generator) with

* the generated stamps of that cell (WS_Z's library),
* the generated stamps of that class (WS_CLASS's library: it cannot know the bin),
* the real training stamps of that cell (the real-vs-real baseline),

on the per-band flux inside H / 8 pixels, the adjacent-band colours
(:func:`galearn.morphometry.photometry_statistics`) and the flux-weighted
size (second moment of the band sum, pixels), as IQR-scaled 1-D Wasserstein
distances (:func:`galearn.morphometry.group_wasserstein`), and prints the
medians. WS_CLASS's generator may have trained on some of WS_Z's held-out
stamps (its split differs), which favours the class-only library::

    PYTHONPATH=src .venv/bin/python benchmarks/bench_gan_redshift.py /tmp/14r7/ws-def-s0 /tmp/14r7/ws-z3-s0 \\
        --json /tmp/14r7/redshift-s0.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from astropy.table import Table


def _size(physical: np.ndarray) -> np.ndarray:
    """Flux-weighted RMS radius (pixels) of the band sum inside H / 4 of the centre; positive pixels only."""
    img = np.clip(physical.sum(axis=1), 0, None)
    h = img.shape[-1]
    yy, xx = np.mgrid[:h, :h] - (h - 1) / 2.0
    r2 = yy**2 + xx**2
    w = img * (r2 < (h / 4.0) ** 2)
    return np.sqrt((w * r2).sum(axis=(1, 2)) / np.maximum(w.sum(axis=(1, 2)), 1e-12))


def _stats(stamps: np.ndarray, bands: list[str]) -> Table:
    from galearn.morphometry import photometry_statistics

    t = photometry_statistics(stamps, bands)
    t["size_rms"] = _size(stamps)
    return t


def compare(ws_class: Path, ws_z: Path) -> dict:
    from galearn.gan.data import REDSHIFT_BIN, class_condition, gan_condition, read_split, split_cells
    from galearn.morphometry import group_wasserstein
    from galearn.store import Workspace, open_sample

    wz, wc = Workspace(ws_z), Workspace(ws_class)
    sample = open_sample(wz.sample)
    split = read_split(wz)
    if not split["redshift_edges"]:
        raise SystemExit(f"{ws_z} was not conditioned on redshift (gan.redshift_bins)")
    _, joint = gan_condition(sample, split["condition"], split["redshift_edges"])
    lib_z, lib_c = open_sample(wz.library), open_sample(wc.library)
    class_col = class_condition(split["condition"])
    lz_joint = np.asarray(lib_z.catalog[split["condition"]]).astype(str)
    lc_class = np.asarray(lib_c.catalog[class_col]).astype(str)
    bands = sample.bands
    rows, groups = [], {"flux": "flux_", "colour": "colour_", "size": "size_"}
    for cell in split["classes"]:
        cls, zbin = (str(v) for v in split_cells(cell))
        held = split["heldout"][joint[split["heldout"]] == cell]
        train = split["train"][joint[split["train"]] == cell]
        gz = np.flatnonzero(lz_joint == cell)
        gc = np.flatnonzero(lc_class == cls)
        if len(held) < 5:
            continue
        rng = np.random.default_rng(0)
        n = min(len(gz), len(gc), 300)
        ref = _stats(sample.read("physical", held), bands)
        sets = {"z_conditioned": _stats(lib_z.read("physical", np.sort(rng.choice(gz, n, replace=False))), bands),
                "class_only": _stats(lib_c.read("physical", np.sort(rng.choice(gc, n, replace=False))), bands),
                "real_train": _stats(sample.read("physical", train), bands)}
        row = {"class": cls, REDSHIFT_BIN: zbin, "n_heldout": int(len(held)), "n_train": int(len(train))}
        for group, prefix in groups.items():
            for name, t in sets.items():
                row[f"{group}_{name}"] = group_wasserstein(ref, t, prefix)[0]
        band = bands[-1]
        for name, t in (("real_heldout", ref), *sets.items()):
            row[f"median_flux_{band}_{name}"] = float(np.median(t[f"flux_{band}"]))
            row[f"median_size_{name}"] = float(np.median(t["size_rms"]))
        rows.append(row)
    return {"ws_class": str(ws_class), "ws_z": str(ws_z), "redshift_edges": list(split["redshift_edges"]),
            "cells": rows}


def _print(result: dict) -> None:
    cells = result["cells"]
    print(f"redshift edges {result['redshift_edges']}; IQR-scaled W1 to the real held-out stamps of each cell "
          f"(z-conditioned / class-only / real train)")
    band = None
    for r in cells:
        band = next(k for k in r if k.startswith("median_flux_")).split("_")[2]
        print(f"  {r['class']:>14s} {r['redshift_bin']}: n_held {r['n_heldout']:3d}  "
              + "  ".join(f"{g} {r[f'{g}_z_conditioned']:.2f}/{r[f'{g}_class_only']:.2f}/{r[f'{g}_real_train']:.2f}"
                          for g in ("flux", "colour", "size"))
              + f"  median {band} flux real {r[f'median_flux_{band}_real_heldout']:.3g} z-cond "
              f"{r[f'median_flux_{band}_z_conditioned']:.3g} class-only {r[f'median_flux_{band}_class_only']:.3g}"
              + f"  size real {r['median_size_real_heldout']:.2f} z-cond {r['median_size_z_conditioned']:.2f} "
              f"class-only {r['median_size_class_only']:.2f} px")
    for g in ("flux", "colour", "size"):
        print(f"  mean over cells, {g}: z-conditioned {np.nanmean([r[f'{g}_z_conditioned'] for r in cells]):.2f}, "
              f"class-only {np.nanmean([r[f'{g}_class_only'] for r in cells]):.2f}, "
              f"real baseline {np.nanmean([r[f'{g}_real_train'] for r in cells]):.2f}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ws_class", type=Path, help="workspace of a class-only GAN run")
    ap.add_argument("ws_z", type=Path, help="workspace of a class + redshift GAN run (gan.redshift_bins)")
    ap.add_argument("--json", type=Path, default=None, help="also write the result here")
    args = ap.parse_args(argv)
    result = compare(args.ws_class, args.ws_z)
    _print(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
