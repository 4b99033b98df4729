"""ImageNet vs flip/rotation-averaged vs adapted vs fused features, on real images AND the mock field.

One run prints, side by side for each data set,

(a) ``imagenet``       the ImageNet backbone (galearn's input size and layers), the whole stamp, no averaging,
(b) ``imagenet+tta``   the same, features averaged over the dihedral transforms (``--tta``),
(c) ``default``        (b) at two scales, the whole stamp + its central quarter, concatenated
                       (``--scales``; ``galearn features`` defaults),
(d) ``adapted``        the backbone after ``galearn adapt`` (SimCLR on the same stamps, no labels),
                       at its training size, plain, ``+tta`` and ``+tta+scales``,
(e) ``fused``          (c) + colours + statmorph morphology (``galearn features --fuse morphology``),

with ``knn_balanced_accuracy``, ``linear_balanced_accuracy`` and
``cluster_accuracy`` (``galearn.evaluate.agreement_metrics``, DESIGN
definitions, seed ``--seed``) for every label column, plus the adaptation's
wall time and steps and the seconds each feature set took. Data sets:

* ``real``: ``../shared/data/galaxy-zoo-dev`` (600 SDSS images, elliptical / spiral),
  ingested with ``galearn ingest-images`` defaults;
* ``mock``: ``galearn simulate --n-galaxies N`` + ``galearn cutouts`` with the
  selection ``galearn run`` uses (``pipeline.DEFAULT_MOCK_SELECT``); labels
  ``uvj_class``, ``truth_morph``, ``truth_class``.

(c) and (e) go through ``run_features`` (the code path of ``galearn features``),
so they are exactly what a user gets.

Examples
--------
    nice -n 10 .venv/bin/python benchmarks/bench_adapt.py --budget-minutes 8 --mock-galaxies 1500 --fuse-jobs 2
    nice -n 10 .venv/bin/python benchmarks/bench_adapt.py --datasets real --skip adapted
    nice -n 10 .venv/bin/python benchmarks/bench_adapt.py --datasets mock --skip fused --adapt-input-size 64

Writes ``benchmarks/out/bench_adapt.json``. Timings depend on the machine's
load (the reference machine is shared): the JSON records the number of torch
threads and the load average at the start and the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
DEFAULT_REAL = REPO.parent / "shared" / "data" / "galaxy-zoo-dev"
KEYS = ("knn_balanced_accuracy", "linear_balanced_accuracy", "cluster_accuracy")


def _metrics(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from galearn.evaluate import agreement_metrics

    m = agreement_metrics(features, labels, random_state=seed)
    return {k: round(float(m[k]), 4) for k in (*KEYS, "ari", "nmi")} | {"n_classes": m["n_classes"],
                                                                       "n_galaxies": m["n_galaxies"]}


def _real_workspace(root: Path, real_dir: Path):
    from galearn.config import IngestConfig
    from galearn.store import Workspace
    from galearn.survey import make_sample_from_images

    ws = Workspace(root / "real")
    if not ws.sample.exists():
        make_sample_from_images(real_dir / "images", real_dir / "labels.csv", ws, IngestConfig(), progress=False)
    return ws, {"morph": "morph"}


def _mock_workspace(root: Path, n_galaxies: int, seed: int):
    from dataclasses import replace

    from galearn.config import CutoutConfig, SimulateConfig
    from galearn.mock import simulate_field
    from galearn.pipeline import DEFAULT_MOCK_SELECT
    from galearn.store import Workspace
    from galearn.survey import make_sample_from_mosaics

    ws = Workspace(root / "mock")
    if not ws.sample.exists():
        files = simulate_field(root / "mock-field", SimulateConfig(n_galaxies=n_galaxies, random_state=seed))
        images = {b: files[b] for b in ("F435W", "F850LP", "F160W")}
        make_sample_from_mosaics(files["catalog"], images, ws, replace(CutoutConfig(), select=DEFAULT_MOCK_SELECT))
    return ws, {"uvj_class": None, "truth_morph": "truth_morph", "truth_class": "truth_class"}


def _labels(sample, spec: dict) -> dict[str, np.ndarray]:
    from galearn.evaluate import uvj_class_of_catalog

    out = {}
    for key, col in spec.items():
        if col is None:
            values = uvj_class_of_catalog(sample.catalog, sample.columns)
            if values is not None:
                out[key] = np.asarray(values)
        elif col in sample.catalog.colnames:
            out[key] = sample.catalog[col]  # masked entries = no label (agreement_metrics leaves them out)
    return out


def run(dataset: str, ws, spec: dict, args) -> dict:
    import torch

    from galearn.config import AdaptConfig, FeatureConfig
    from galearn.features import extract_features, load_backbone, run_features
    from galearn.features.adapt import run_adapt
    from galearn.features.extract import DEFAULT_INPUT_SIZE, DEFAULT_SCALES, DEFAULT_TTA
    from galearn.store import open_sample, read_features

    torch.manual_seed(args.seed)
    sample = open_sample(ws.sample)
    stamps, bands = sample.read(), sample.bands
    labels = _labels(sample, spec)
    result: dict = {"n_stamps": sample.n, "bands": bands, "stamp_size": sample.stamp_size, "rows": []}

    def add(name: str, feats: np.ndarray, seconds: float, **info) -> None:
        for col, y in labels.items():
            row = {"dataset": dataset, "features": name, "column": col, **info,
                   "feature_seconds": round(seconds, 1), **_metrics(feats, y, args.seed)}
            result["rows"].append(row)
            print(json.dumps(row), flush=True)

    size = DEFAULT_INPUT_SIZE
    base = load_backbone(args.backbone, device=args.device)
    t = time.perf_counter()
    add("imagenet", extract_features(stamps, bands, base, input_size=size, tta=None, progress=False),
        time.perf_counter() - t, input_size=size, tta=1, scales=[1.0])
    t = time.perf_counter()
    add("imagenet+tta", extract_features(stamps, bands, base, input_size=size, tta=DEFAULT_TTA, progress=False),
        time.perf_counter() - t, input_size=size, tta=DEFAULT_TTA, scales=[1.0])

    # (c) and (e): the `galearn features` code path (defaults: input size, layers, TTA, scales)
    fuse = "fused" not in args.skip
    cfg = FeatureConfig(backbone=args.backbone, device=args.device, random_state=args.seed,
                        fuse="morphology" if fuse else "none", fuse_jobs=args.fuse_jobs)
    t = time.perf_counter()
    path = run_features(ws, cfg)
    seconds = time.perf_counter() - t
    plain = read_features(ws.features(base.name))
    add("default", plain.values, float(plain.attrs.get("seconds", seconds)), input_size=size,
        tta=int(plain.attrs["tta"]), scales=list(plain.attrs["scales"]))
    if fuse:
        fused = read_features(path)
        info = fused.attrs["fused"]
        add("fused", fused.values, seconds, input_size=size, tta=int(plain.attrs["tta"]),
            scales=list(plain.attrs["scales"]),
            fused={k: info[k] for k in ("with", "columns", "weight", "repeats", "n_failed")},
            statmorph_and_fuse_seconds=round(seconds - float(plain.attrs.get("seconds", 0.0)), 1))

    if "adapted" not in args.skip:
        acfg = AdaptConfig(backbone=args.backbone, epochs=args.epochs, budget_minutes=args.budget_minutes,
                           random_state=args.seed, device=args.device,
                           input_size=args.adapt_input_size or AdaptConfig().input_size)
        t = time.perf_counter()
        apath = run_adapt(ws, acfg, progress=False)
        wall = time.perf_counter() - t
        state = torch.load(apath, map_location="cpu", weights_only=True)
        hist = state["history"]
        result["adapt"] = {"wall_seconds": round(wall, 1), "steps": hist["step"],
                           "total_steps": hist["total_steps"], "finished": hist["finished"],
                           "epoch_losses": [round(v, 4) for v in hist["losses"]], "settings": state["settings"]}
        print(json.dumps({"dataset": dataset, "adapt": result["adapt"]}), flush=True)
        adapted = load_backbone("adapted", workspace=ws, device=args.device)
        for name, tta, scales in (("adapted", None, None), ("adapted+tta", DEFAULT_TTA, None),
                                  ("adapted+tta+scales", DEFAULT_TTA, DEFAULT_SCALES)):
            t = time.perf_counter()
            f = extract_features(stamps, bands, adapted, input_size=adapted.native_size, tta=tta, scales=scales,
                                 progress=False)
            add(name, f, time.perf_counter() - t, input_size=adapted.native_size, tta=tta or 1,
                scales=list(scales or (1.0,)), adapt_wall_seconds=round(wall, 1))
    return result


def _table(results: dict) -> str:
    lines = []
    for name, res in results["datasets"].items():
        cols = sorted({r["column"] for r in res["rows"]}, key=lambda c: (c != "morph", c != "uvj_class", c))
        lines.append(f"\n{name} ({res['n_stamps']} stamps of {res['stamp_size']} px)"
                     + (f"; adaptation {res['adapt']['wall_seconds']} s, {res['adapt']['steps']}/"
                        f"{res['adapt']['total_steps']} steps" if "adapt" in res else ""))
        lines.append(f"{'features':<20}" + "".join(f"{c + ' knn/lin/clu':>32}" for c in cols))
        for feat in dict.fromkeys(r["features"] for r in res["rows"]):
            cells = []
            for c in cols:
                r = next((r for r in res["rows"] if r["features"] == feat and r["column"] == c), None)
                cells.append("" if r is None else "/".join(f"{r[k]:.3f}" for k in KEYS))
            lines.append(f"{feat:<20}" + "".join(f"{v:>32}" for v in cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from galearn.config import AdaptConfig

    d = AdaptConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=["real", "mock"], default=["real", "mock"])
    p.add_argument("--real-dir", type=Path, default=DEFAULT_REAL)
    p.add_argument("--workdir", type=Path, default=None,
                   help="keep workspaces here (a re-run reuses their stamps and statmorph tables)")
    p.add_argument("--mock-galaxies", type=int, default=1500)
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--budget-minutes", type=float, default=d.budget_minutes, help="adaptation cap per data set")
    p.add_argument("--adapt-input-size", type=int, default=None,
                   help="adaptation training size in pixels (default: AdaptConfig's)")
    p.add_argument("--skip", nargs="*", default=[], choices=["adapted", "fused"])
    p.add_argument("--fuse-jobs", type=int, default=1, help="statmorph worker processes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=HERE / "out" / "bench_adapt.json")
    args = p.parse_args(argv)

    import torch

    info = {"threads": torch.get_num_threads(), "load_average_start": os.getloadavg(),
            "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}}
    results: dict = {"machine": info, "datasets": {}}
    tmp = tempfile.TemporaryDirectory(prefix="bench_adapt_") if args.workdir is None else None
    root = Path(tmp.name) if tmp else args.workdir
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        for name in args.datasets:
            if name == "real":
                if not (args.real_dir / "labels.csv").exists():
                    print(f"skipping real images: {args.real_dir} not found", file=sys.stderr)
                    continue
                ws, spec = _real_workspace(root, args.real_dir)
            else:
                ws, spec = _mock_workspace(root, args.mock_galaxies, args.seed)
            results["datasets"][name] = run(name, ws, spec, args)
    finally:
        info["load_average_end"] = os.getloadavg()
        info["wall_seconds"] = round(time.perf_counter() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(_table(results))
        print(f"wrote {args.out}")
        if tmp:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
