"""Which feature-extraction choices agree best with morphology on REAL galaxy images?

Measures, on the 600 real SDSS galaxy images of ``../shared/data/galaxy-zoo-dev``
(Galaxy Zoo 1 labels elliptical / spiral), the agreement of CNN features with
the labels for each choice galearn makes:

* crop fraction of the image kept around the centre (before making the stamp),
* stamp size (the resolution ``ingest-images`` keeps) and network input size
  (native stamp size vs resized to 96 / 128 / 160 / 224 px),
* the layers pooled (last stage only vs concatenated last stages),
* test-time augmentation: features averaged over 1 / 2 / 4 / 8 dihedral
  transforms (flips and quarter turns),
* pre-trained EfficientNet-Lite0 vs the untrained ``random-resnet18`` baseline,

plus the "straightforward ImageNet pipeline" baseline (resize to 256, one 224 px
centre crop of the full image, pooled last layer, kNN).

Metrics follow DESIGN: kNN balanced accuracy (5-fold stratified CV, k=10, after
standardising + PCA to <= 50 dims) and cluster accuracy (k-means with as many
clusters as classes, Hungarian matching). ``galearn.evaluate.agreement_metrics``
is used when it exists; otherwise a local helper with the same definitions.
To separate real differences from split noise, the kNN / cluster numbers are
also averaged over 5 CV / k-means seeds (``*_mean5``); with 600 images the
sampling error of a balanced accuracy is still ~0.013.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_feature_choices.py [--quick]

Writes ``benchmarks/out/feature_choices.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

DATA = ROOT.parent / "shared" / "data" / "galaxy-zoo-dev"


# --------------------------------------------------------------------------- metrics


def _local_agreement(features: np.ndarray, labels: np.ndarray, random_state: int = 0) -> dict:
    from scipy.optimize import linear_sum_assignment
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import adjusted_rand_score, balanced_accuracy_score, normalized_mutual_info_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    classes, y = np.unique(labels, return_inverse=True)
    n_comp = min(50, features.shape[1], features.shape[0] - 1)
    cv = StratifiedKFold(5, shuffle=True, random_state=random_state)

    def pipe(clf):
        return make_pipeline(StandardScaler(), PCA(n_comp, random_state=random_state), clf)

    knn = cross_val_predict(pipe(KNeighborsClassifier(10)), features, y, cv=cv)
    lin = cross_val_predict(pipe(LogisticRegression(max_iter=2000)), features, y, cv=cv)
    z = PCA(n_comp, random_state=random_state).fit_transform(StandardScaler().fit_transform(features))
    cl = KMeans(len(classes), n_init=10, random_state=random_state).fit_predict(z)
    cont = np.zeros((len(classes), len(classes)), dtype=int)
    np.add.at(cont, (cl, y), 1)
    r, c = linear_sum_assignment(-cont)
    return {
        "n_classes": len(classes),
        "knn_balanced_accuracy": float(balanced_accuracy_score(y, knn)),
        "linear_balanced_accuracy": float(balanced_accuracy_score(y, lin)),
        "ari": float(adjusted_rand_score(y, cl)),
        "nmi": float(normalized_mutual_info_score(y, cl)),
        "cluster_accuracy": float(cont[r, c].sum() / len(y)),
    }


def agreement(features: np.ndarray, labels: np.ndarray, random_state: int = 0) -> dict:
    try:
        from galearn.evaluate import agreement_metrics
    except ImportError:
        agreement_metrics = None
    if agreement_metrics is not None:
        m = agreement_metrics(features, labels, random_state=random_state)
        m["metrics_impl"] = "galearn.evaluate.agreement_metrics"
    else:
        m = _local_agreement(features, labels, random_state)
        m["metrics_impl"] = "local helper (bench_feature_choices)"
    return {k: v for k, v in m.items() if k != "confusion"}


def scored(features: np.ndarray, labels: np.ndarray, seeds: int) -> dict:
    out = agreement(features, labels, 0)
    if seeds > 1:
        runs = [out] + [agreement(features, labels, s) for s in range(1, seeds)]
        for key in ("knn_balanced_accuracy", "cluster_accuracy", "linear_balanced_accuracy"):
            out[f"{key}_mean{seeds}"] = float(np.mean([r[key] for r in runs]))
    return out


# --------------------------------------------------------------------------- images


def load_labels() -> tuple[list[Path], np.ndarray]:
    with open(DATA / "labels.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    files = []
    for r in rows:
        hits = [p for p in (DATA / "images").glob(f"{r['id']}.*")]
        files.append(hits[0])
    return files, np.array([r["morph"] for r in rows])


_IMG_CACHE: dict = {}


def stamps_from_images(files: list[Path], crop: float, size: int) -> np.ndarray:
    """Centre crop ``crop`` of the image side, resized to ``size`` px (Lanczos) -> (N, 3, size, size) in 0..1."""
    from PIL import Image

    key = (crop, size)
    if key not in _IMG_CACHE:
        out = np.empty((len(files), 3, size, size), dtype=np.float32)
        for i, f in enumerate(files):
            with Image.open(f) as im:
                im = im.convert("RGB")
                w, h = im.size
                side = crop * min(w, h)
                box = ((w - side) / 2, (h - side) / 2, (w + side) / 2, (h + side) / 2)
                im = im.resize((size, size), Image.Resampling.LANCZOS, box=box)
                out[i] = np.asarray(im, dtype=np.float32).transpose(2, 0, 1) / 255.0
        _IMG_CACHE[key] = out
    return _IMG_CACHE[key]


# --------------------------------------------------------------------------- runs


def features_per_transform(stamps, bb, input_size, n_tta, batch_size=32):
    """Features of each dihedral transform separately: (T, N, D), and images/s of one pass."""
    import torch

    from galearn.features.extract import _transform_ids, dihedral, extract_features

    out = []
    t0 = time.perf_counter()
    for j in _transform_ids(n_tta):
        x = dihedral(torch.from_numpy(stamps), j).contiguous().numpy()
        out.append(extract_features(x, ["R", "G", "B"], bb, batch_size=batch_size, input_size=input_size, progress=False))
    rate = len(stamps) * len(out) / (time.perf_counter() - t0)
    return np.stack(out), rate


def slice_layers(feats: np.ndarray, dims: dict[str, int], want: tuple[str, ...]) -> np.ndarray:
    cols, start = [], 0
    for name, d in dims.items():
        if name in want:
            cols.append(feats[..., start : start + d])
        start += d
    return np.concatenate(cols, axis=-1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer settings (smoke run)")
    ap.add_argument("--seeds", type=int, default=5, help="CV / k-means seeds averaged")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "feature_choices.json"))
    args = ap.parse_args()

    import torch

    from galearn.features import load_backbone

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not DATA.exists():
        sys.exit(f"{DATA} not found: this benchmark needs the galaxy-zoo-dev images")
    files, labels = load_labels()
    results: list[dict] = []
    t_start = time.time()

    taps = ("stage5", "stage6", "stage7", "head")
    lite = load_backbone("efficientnet-lite0", layers=taps, device="cpu")
    # dims of each tap, in order
    dims = {}
    with torch.inference_mode():
        for t in taps:
            sub = load_backbone("efficientnet-lite0", layers=(t,), device="cpu")
            dims[t] = sub.dim
    print(f"efficientnet-lite0 taps {dims}", flush=True)

    def record(tag: str, feats: np.ndarray, **info) -> dict:
        m = scored(feats, labels, args.seeds)
        row = {"tag": tag, **info, **m}
        results.append(row)
        print(
            f"{tag:<58s} kNN {m['knn_balanced_accuracy']:.3f} (mean {m.get('knn_balanced_accuracy_mean5', np.nan):.3f})"
            f"  lin {m['linear_balanced_accuracy']:.3f}  clu {m['cluster_accuracy']:.3f}"
            f" (mean {m.get('cluster_accuracy_mean5', np.nan):.3f})  {info.get('images_per_second', 0):.0f} img/s",
            flush=True,
        )
        return row

    LAYER_CHOICES = (("head",), ("stage7", "head"), ("stage6", "head"), ("stage6", "stage7", "head"))

    def run(crop, stamp, input_size, n_tta=1, layers_list=(("head",),), tag=""):
        cache = Path(args.out).parent / "cache" / f"lite0_c{crop}_s{stamp}_i{input_size}_t{n_tta}.npz"
        if cache.exists():
            z = np.load(cache)
            per_t, rate = z["per_t"], float(z["rate"])
        else:
            stamps = stamps_from_images(files, crop, stamp)
            per_t, rate = features_per_transform(stamps, lite, input_size, n_tta)
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez(cache, per_t=per_t, rate=rate)
        for n in sorted({1, n_tta}):
            avg = per_t[:n].mean(axis=0) if n > 1 else per_t[0]
            for layers in layers_list:
                record(
                    f"{tag}crop {crop} stamp {stamp} in {input_size or stamp} tta {n} {'+'.join(layers)}",
                    slice_layers(avg, dims, layers),
                    backbone="efficientnet-lite0", crop=crop, stamp_size=stamp, input_size=input_size or stamp,
                    tta=n, layers=list(layers), images_per_second=rate / n,
                    forward_images_per_second=rate,
                )
        return per_t

    # 0. the straightforward ImageNet pipeline: resize 256 + centre crop 224 of the full image, one view
    run(224 / 256, 224, None, tag="BASELINE imagenet-style ")

    # 1. crop fraction (64 px stamps as ingest makes them, network input 128 px to keep the sweep cheap)
    crops = (0.35, 0.6) if args.quick else (0.3, 0.45, 0.6, 0.8)
    for crop in crops:
        run(crop, 64, 128, layers_list=LAYER_CHOICES)
    best = max((r for r in results if r["tta"] == 1 and r["layers"] == ["head"] and r["stamp_size"] == 64
                and r["input_size"] == 128),
               key=lambda r: r.get("knn_balanced_accuracy_mean5", r["knn_balanced_accuracy"])
               + r.get("cluster_accuracy_mean5", r["cluster_accuracy"]))
    crop = best["crop"]
    print(f"-> crop {crop}", flush=True)

    # 2. network input size at that crop (from 64 px stamps), with TTA x8 where affordable
    run(crop, 64, None, n_tta=8, layers_list=LAYER_CHOICES, tag="")
    if not args.quick:
        run(crop, 64, 96, n_tta=8, layers_list=LAYER_CHOICES, tag="")
        run(crop, 64, 224, n_tta=1, layers_list=LAYER_CHOICES, tag="")
        run(crop, 64, 128, n_tta=4, layers_list=LAYER_CHOICES, tag="")

    # 4. the untrained baseline on the same stamps
    rnd = load_backbone("random-resnet18", layers=("layer3", "layer4"), device="cpu")
    stamps = stamps_from_images(files, crop, 64)
    from galearn.features import extract_features

    for size in (None, 128):
        t0 = time.perf_counter()
        f = extract_features(stamps, ["R", "G", "B"], rnd, input_size=size, progress=False)
        rate = len(stamps) / (time.perf_counter() - t0)
        record(f"random-resnet18 crop {crop} stamp 64 in {size or 64} tta 1 layer4", f[:, 256:],
               backbone="random-resnet18", crop=crop, stamp_size=64, input_size=size or 64, tta=1, layers=["layer4"],
               images_per_second=rate)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "data": str(DATA), "n_images": len(labels), "classes": dict(zip(*np.unique(labels, return_counts=True))),
        "threads": args.threads, "seeds": args.seeds, "seconds": round(time.time() - t_start, 1),
        "note": "shared 2-core machine: images/s are noisy (other jobs running)",
        "results": results,
    }
    out.write_text(json.dumps(payload, indent=2, default=lambda o: o.item() if hasattr(o, "item") else str(o)))
    print(f"wrote {out} ({payload['seconds']} s)")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
