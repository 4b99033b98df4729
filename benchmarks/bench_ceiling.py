"""How far can these real images go with labels? A supervised reference for issue 6's aims.

Issue 6 asks unsupervised (label-free) features to reach an elliptical / spiral
``knn_balanced_accuracy`` of 0.92 on ``../shared/data/galaxy-zoo-dev``. This
benchmark measures what the same backbone reaches when it is *given the labels*:
EfficientNet-Lite0 (ImageNet, the offline backbone) is fine-tuned with a
cross-entropy head on 4/5 of the galaxies and scored on the other 1/5, over the
same 5 stratified folds as ``agreement_metrics`` (seed ``--seed``).

Everything except the loss is ``galearn adapt``'s recipe: the stamps of
``galearn ingest-images`` (``--size``, ``--crop-fraction``), network input
``--input-size`` px, stem..stage4 frozen (weights and BatchNorm statistics),
AdamW (backbone 1e-4, head 1e-3), batches of 32, the adaptation's
augmentations (flip, any rotation, shift, scale jitter, blur, noise; no colour
change). The test prediction averages the softmax over the 4 quarter turns.

It is an upper reference, not a galearn feature: labels are used. If a
supervised network cannot separate the classes better than X, label-free
features will not either, on these images and labels.

Examples
--------
    nice -n 10 .venv/bin/python benchmarks/bench_ceiling.py
    nice -n 10 .venv/bin/python benchmarks/bench_ceiling.py --size 128 --folds 0,1 --out benchmarks/out/bench_ceiling_128.json

Writes ``benchmarks/out/bench_ceiling.json`` (per-fold balanced accuracy,
mean, standard error, seconds, settings, torch threads, load average).
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


def fine_tune_fold(x, y, train, test, *, epochs: int, batch_size: int, freeze_stages: int, seed: int) -> float:
    """Balanced accuracy on ``test`` of Lite0 fine-tuned with labels on ``train``."""
    import torch
    from sklearn.metrics import balanced_accuracy_score
    from torch import nn

    from galearn.features import load_backbone
    from galearn.features.adapt import AugmentSettings, _freeze, _set_train_mode, augment_views

    torch.manual_seed(seed)
    backbone = load_backbone("efficientnet-lite0")
    frozen = _freeze(backbone.model, freeze_stages)
    n_classes = int(y.max()) + 1
    head = nn.Linear(backbone.dim, n_classes)
    trainable = [p for p in backbone.model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": trainable, "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}],
                            weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    augment = AugmentSettings()
    targets = torch.as_tensor(y)
    for _ in range(epochs):
        _set_train_mode(backbone.model, frozen, "frozen")
        head.train()
        order = train[torch.randperm(len(train), generator=gen).numpy()]
        for start in range(0, len(order) - batch_size + 1, batch_size):
            idx = order[start:start + batch_size]
            views = augment_views(x[idx], augment, gen, std=backbone.std)
            loss = nn.functional.cross_entropy(head(backbone.model(views)), targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    backbone.model.eval()
    head.eval()
    with torch.inference_mode():
        prob = sum(head(backbone.model(torch.rot90(x[test], k, (2, 3)))).softmax(1) for k in range(4))
    return float(balanced_accuracy_score(y[test], prob.argmax(1).numpy()))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--real-dir", type=Path, default=DEFAULT_REAL)
    ap.add_argument("--label", default="morph")
    ap.add_argument("--size", type=int, default=64, help="stamp side of ingest-images (px)")
    ap.add_argument("--crop-fraction", type=float, default=0.5)
    ap.add_argument("--input-size", type=int, default=128, help="network input side (px)")
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--freeze-stages", type=int, default=5)
    ap.add_argument("--folds", default="0,1,2,3,4", help="which of the 5 folds to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "bench_ceiling.json")
    args = ap.parse_args(argv)
    if not (args.real_dir / "labels.csv").exists():
        print(f"no real images at {args.real_dir} (labels.csv missing)", file=sys.stderr)
        return 2

    import torch
    from sklearn.model_selection import StratifiedKFold

    from galearn.config import IngestConfig
    from galearn.features import load_backbone
    from galearn.features.extract import prepare_batch
    from galearn.store import Workspace, open_sample
    from galearn.survey import make_sample_from_images

    torch.set_num_threads(args.threads)
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="galearn-ceiling-") as tmp:
        ws = Workspace(Path(tmp))
        cfg = IngestConfig(stamp_size=args.size, crop_fraction=args.crop_fraction)
        make_sample_from_images(args.real_dir / "images", args.real_dir / "labels.csv", ws, cfg, progress=False)
        sample = open_sample(ws.sample)
        stamps = sample.read("stretched")
        labels = np.asarray(sample.catalog[args.label]).astype(str)
    classes, y = np.unique(labels, return_inverse=True)
    x = prepare_batch(stamps, sample.bands, load_backbone("efficientnet-lite0"), input_size=args.input_size)
    x = x.contiguous()
    folds = list(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(stamps, y))
    per_fold = {}
    for k in (int(f) for f in args.folds.split(",")):
        t0 = time.perf_counter()
        acc = fine_tune_fold(x, y, folds[k][0], folds[k][1], epochs=args.epochs, batch_size=args.batch_size,
                             freeze_stages=args.freeze_stages, seed=args.seed + k)
        per_fold[k] = {"balanced_accuracy": round(acc, 4), "seconds": round(time.perf_counter() - t0, 1)}
        print(f"fold {k}: supervised balanced accuracy {acc:.3f} ({per_fold[k]['seconds']} s)", flush=True)
    accs = np.array([v["balanced_accuracy"] for v in per_fold.values()])
    result = {
        "what": "supervised fine-tuning (labels used): upper reference for label-free features",
        "label": args.label, "classes": classes.tolist(), "n_galaxies": int(len(y)),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"},
        "per_fold": per_fold,
        "balanced_accuracy_mean": round(float(accs.mean()), 4),
        "balanced_accuracy_sem": round(float(accs.std(ddof=1) / np.sqrt(len(accs))), 4) if len(accs) > 1 else None,
        "torch_threads": torch.get_num_threads(),
        "load_average": {"start": load_start, "end": os.getloadavg()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    sem = result["balanced_accuracy_sem"]
    print(f"{args.label}: supervised balanced accuracy {accs.mean():.3f}" + (f" ± {sem:.3f} (SE)" if sem else "")
          + f" over folds {list(per_fold)}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
