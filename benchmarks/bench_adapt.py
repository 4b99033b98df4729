"""Does self-supervised adaptation (``galearn adapt``) make better galaxy features?

Side by side, on real images (``../shared/data/galaxy-zoo-dev``: 600 SDSS
galaxies, elliptical vs spiral) and on the mock field (``galearn simulate`` +
cutouts: UVJ class and truth classes), for

(a) the ImageNet backbone,
(b) the ImageNet backbone with features averaged over the 8 flips / quarter turns,
(c) the adapted backbone (SimCLR on the same stamps, no labels), with and without that averaging,

it prints and writes (``benchmarks/out/bench_adapt.json``)
``knn_balanced_accuracy``, ``linear_balanced_accuracy`` and
``cluster_accuracy`` (``galearn.evaluate.agreement_metrics``, DESIGN
definitions), plus the adaptation's wall time and steps.

Examples
--------
    nice -n 10 .venv/bin/python benchmarks/bench_adapt.py --datasets real
    nice -n 10 .venv/bin/python benchmarks/bench_adapt.py --datasets real mock --budget-minutes 8

Timings depend on the machine's load (the reference machine is shared): the
JSON records the number of CPU threads and the load average at the start.
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


def _metrics(features: np.ndarray, labels: np.ndarray, seed: int) -> dict:
    from galearn.evaluate import agreement_metrics

    m = agreement_metrics(features, labels, random_state=seed)
    return {k: round(float(m[k]), 4) for k in ("knn_balanced_accuracy", "linear_balanced_accuracy",
                                               "cluster_accuracy", "ari", "nmi")} | {"n_classes": m["n_classes"]}


def _real_workspace(root: Path, real_dir: Path, stamp_size: int):
    from galearn.config import IngestConfig
    from galearn.store import Workspace
    from galearn.survey import make_sample_from_images

    ws = Workspace(root / "real")
    if not ws.sample.exists():
        make_sample_from_images(real_dir / "images", real_dir / "labels.csv", ws,
                                IngestConfig(stamp_size=stamp_size), progress=False)
    return ws, {"morph": "morph"}


def _mock_workspace(root: Path, n_galaxies: int, seed: int):
    from galearn.config import CutoutConfig, SimulateConfig
    from galearn.mock import simulate_field
    from galearn.store import Workspace
    from galearn.survey import make_sample_from_mosaics

    ws = Workspace(root / "mock")
    if not ws.sample.exists():
        files = simulate_field(root / "mock-field", SimulateConfig(n_galaxies=n_galaxies, random_state=seed))
        images = {b: files[b] for b in ("F435W", "F850LP", "F160W")}
        make_sample_from_mosaics(files["catalog"], images, ws, CutoutConfig())
    return ws, {"uvj": None, "truth_class": "truth_class", "truth_morph": "truth_morph"}


def _labels(sample, spec: dict) -> dict[str, np.ndarray]:
    from galearn.evaluate import uvj_class_of_catalog

    out = {}
    for key, col in spec.items():
        if key == "uvj":
            values = uvj_class_of_catalog(sample.catalog, sample.columns)
            if values is not None:
                out[key] = np.asarray(values)
        elif col in sample.catalog.colnames:
            out[key] = np.asarray([str(v) for v in sample.catalog[col]])
    return out


def run(dataset: str, ws, spec: dict, args) -> dict:
    import torch

    from galearn.config import AdaptConfig
    from galearn.features import extract_features, load_backbone
    from galearn.features.adapt import run_adapt
    from galearn.store import open_sample

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

    base = load_backbone(args.backbone, device=args.device)
    for size in args.imagenet_sizes:
        for tta in (None, 8):
            t = time.perf_counter()
            f = extract_features(stamps, bands, base, input_size=size, tta=tta, progress=False)
            add("imagenet" + ("+tta8" if tta else ""), f, time.perf_counter() - t, input_size=size)

    cfg = AdaptConfig(backbone=args.backbone, epochs=args.epochs, budget_minutes=args.budget_minutes,
                      batch_size=args.batch_size, learning_rate=args.learning_rate, random_state=args.seed,
                      device=args.device, input_size=args.input_size, freeze_stages=args.freeze_stages,
                      bn=args.bn, temperature=args.temperature)
    t = time.perf_counter()
    path = run_adapt(ws, cfg, progress=False)
    wall = time.perf_counter() - t
    state = torch.load(path, map_location="cpu", weights_only=True)
    hist = state["history"]
    result["adapt"] = {"wall_seconds": round(wall, 1), "steps": hist["step"], "total_steps": hist["total_steps"],
                       "finished": hist["finished"], "epoch_losses": [round(v, 4) for v in hist["losses"]],
                       "settings": state["settings"]}
    print(json.dumps({"dataset": dataset, "adapt": result["adapt"]}), flush=True)
    adapted = load_backbone("adapted", workspace=ws, device=args.device)
    for tta in (None, 8):
        t = time.perf_counter()
        f = extract_features(stamps, bands, adapted, input_size=args.input_size, tta=tta, progress=False)
        add("adapted" + ("+tta8" if tta else ""), f, time.perf_counter() - t, input_size=args.input_size)
    return result


def main(argv: list[str] | None = None) -> int:
    from galearn.config import AdaptConfig

    d = AdaptConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", choices=["real", "mock"], default=["real", "mock"])
    p.add_argument("--real-dir", type=Path, default=DEFAULT_REAL)
    p.add_argument("--workdir", type=Path, default=None, help="keep workspaces here (default: a temporary folder)")
    p.add_argument("--stamp-size", type=int, default=64, help="real images: stamp side after ingest (pixels)")
    p.add_argument("--mock-galaxies", type=int, default=1500)
    p.add_argument("--backbone", default=d.backbone)
    p.add_argument("--imagenet-sizes", type=int, nargs="+", default=[64, 224],
                   help="input sizes (pixels) at which the ImageNet baseline is measured")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--budget-minutes", type=float, default=d.budget_minutes)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument("--input-size", type=int, default=d.input_size)
    p.add_argument("--freeze-stages", type=int, default=d.freeze_stages)
    p.add_argument("--bn", default=d.bn, choices=["train", "frozen"])
    p.add_argument("--temperature", type=float, default=d.temperature)
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
    try:
        for name in args.datasets:
            if name == "real":
                if not (args.real_dir / "labels.csv").exists():
                    print(f"skipping real images: {args.real_dir} not found", file=sys.stderr)
                    continue
                ws, spec = _real_workspace(root, args.real_dir, args.stamp_size)
            else:
                ws, spec = _mock_workspace(root, args.mock_galaxies, args.seed)
            results["datasets"][name] = run(name, ws, spec, args)
    finally:
        info["load_average_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"wrote {args.out}")
        if tmp:
            tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
