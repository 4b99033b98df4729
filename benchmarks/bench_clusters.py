"""Which unsupervised clustering recovers the galaxy populations? (issue 15)

Every method of :func:`galearn.maps.default_clusters` (what ``galearn classify`` runs) (k-means / Gaussian mixture /
Ward / over-clustering + merging / HDBSCAN, in the 50-component PCA space, a
few leading PCA components, a 5-D UMAP of the PCA space, or the 2-D t-SNE map),
each with its number of clusters chosen *without labels*, is fitted once per
workspace and seed and compared with every label column
(:func:`galearn.evaluate.cluster_agreement`): ``n_clusters``, the many-to-one
``cluster_majority_balanced_accuracy``, AMI, the majority-class rate and the
bootstrap ``stability``. Results are averaged over the workspaces / seeds given.

Workspaces need ``sample.h5``, a feature file and ``maps/tsne.h5``
(``galearn run run_gan=false``, or ``ingest-images`` + ``features`` + ``embed``).
Mock fields for seeds 1, 2 can be built with::

    galearn run -w /tmp/mock1 run_gan=false 'baseline_backbone=""' simulate.random_state=1

Usage::

    python benchmarks/bench_clusters.py --mock WS0 WS1 WS2 --real WS_GZ [--seeds 0 1 2] [--methods ...]
        [--resamples 10] [--json out.json]

The mock workspaces are used with clustering seed = index of the workspace
(one field per seed); the real workspace is clustered with every ``--seeds``
value (one image set, several seeds). Timings on a loaded shared machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from galearn.evaluate import cluster_agreement  # noqa: E402
from galearn.evaluate.classify import comparison_columns  # noqa: E402
from galearn.maps.clusters import default_clusters  # noqa: E402
from galearn.maps._workspace import load_features, require_sample, resolve_backbone  # noqa: E402
from galearn.maps.reduce import blas_threads  # noqa: E402
from galearn.store import Workspace, read_map  # noqa: E402

#: name -> (space, method, select); the first is galearn's default (galearn.maps.clusters.DEFAULT_*)
METHODS = {
    "kmeans-silhouette-umap5": ("umap:5", "kmeans", "silhouette"),
    "kmeans-silhouette": ("pca", "kmeans", "silhouette"),
    "kmeans-stability": ("pca", "kmeans", "stability"),
    "gmm-bic-pca5": ("pca:5", "gmm", "bic"),
    "ward-silhouette": ("pca", "ward", "silhouette"),
    "merge-silhouette": ("pca", "merge", "silhouette"),
    "hdbscan-map": ("map", "hdbscan", None),
    "hdbscan-pca5": ("pca:5", "hdbscan", None),
    "hdbscan-umap5": ("umap:5", "hdbscan", None),
    "gmm-bic-umap5": ("umap:5", "gmm", "bic"),
    "ward-silhouette-umap5": ("umap:5", "ward", "silhouette"),
    "merge-silhouette-umap5": ("umap:5", "merge", "silhouette"),
    "kmeans-silhouette-map": ("map", "kmeans", "silhouette"),
    "ward-silhouette-map": ("map", "ward", "silhouette"),
}
KEYS = ("n_clusters", "cluster_majority_balanced_accuracy", "ami", "ari", "cluster_accuracy", "majority_rate")


def load(ws_path: str, compare: tuple[str, ...]):
    ws = Workspace(Path(ws_path))
    sample = require_sample(ws)
    feats = load_features(ws, resolve_backbone(ws), sample=sample)
    columns = comparison_columns(sample, compare)
    xy = np.asarray(read_map(ws.map("tsne"))[0], dtype=np.float64) if ws.map("tsne").exists() else None
    return np.asarray(feats.values, dtype=np.float64), xy, columns


def encode(labels: np.ndarray):
    keep = labels != ""
    names, counts = np.unique(labels[keep], return_counts=True)
    names = names[counts >= 5]
    keep &= np.isin(labels, names)
    return keep, np.searchsorted(names, labels[keep]), list(names)


def evaluate(X, xy, columns, seed, methods, resamples):
    rows = {}
    with blas_threads(1):
        for name in methods:
            space, method, select = METHODS[name]
            t0 = time.perf_counter()
            fit = default_clusters(X, method=method, space=space, xy=xy, select=select,
                                   stability_resamples=resamples, random_state=seed)
            row = {"stability": fit.stability, "seconds": time.perf_counter() - t0}
            for col, labels in columns.items():
                keep, yi, names = encode(labels)
                row[col] = cluster_agreement(fit.labels[keep], yi, len(names), names)
            rows[name] = row
            print(f"  {name:26s} k={fit.n_clusters:2d} stab={fit.stability:.2f} "
                  + " ".join(f"{c}={row[c]['cluster_majority_balanced_accuracy']:.3f}" for c in columns)
                  + f"  ({row['seconds']:.1f} s)", flush=True)
    return rows


def mean_table(runs: list[dict]) -> dict:
    out = {}
    for name in runs[0]:
        entry = {"stability": float(np.mean([r[name]["stability"] for r in runs])),
                 "stability_min": float(np.min([r[name]["stability"] for r in runs])),
                 "seconds": float(np.mean([r[name]["seconds"] for r in runs]))}
        for col in runs[0][name]:
            if col in ("stability", "seconds"):
                continue
            entry[col] = {k: float(np.mean([r[name][col][k] for r in runs])) for k in KEYS}
            entry[col]["cluster_majority_balanced_accuracy_min"] = float(
                np.min([r[name][col]["cluster_majority_balanced_accuracy"] for r in runs]))
        out[name] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mock", nargs="*", default=[], help="mock workspaces (one per field seed)")
    ap.add_argument("--real", default=None, help="ingested real-image workspace (label column: --real-column)")
    ap.add_argument("--real-column", default="morph")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="clustering seeds of the real set")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--resamples", type=int, default=10, help="bootstrap resamples of the stability figure")
    ap.add_argument("--json", default=None, help="write the mean table here")
    args = ap.parse_args(argv)

    result = {}
    if args.mock:
        runs = []
        for i, path in enumerate(args.mock):
            print(f"mock {path} (seed {i})", flush=True)
            X, xy, cols = load(path, ())
            runs.append(evaluate(X, xy, cols, i, args.methods, args.resamples))
        result["mock"] = mean_table(runs)
    if args.real:
        runs = []
        X, xy, cols = load(args.real, (args.real_column,))
        for seed in args.seeds:
            print(f"real {args.real} (seed {seed})", flush=True)
            runs.append(evaluate(X, xy, cols, seed, args.methods, args.resamples))
        result["real"] = mean_table(runs)

    print()
    mock_cols = ("uvj_class", "truth_morph", "truth_class")
    head = "| method | space |"
    if "mock" in result:
        head += " mock k | UVJ maj-BA | UVJ AMI | ET/disk maj-BA | 5-class maj-BA | mock stability |"
    if "real" in result:
        head += " real k | morph maj-BA | morph AMI | real stability |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.methods:
        line = f"| {name} | {METHODS[name][0]} |"
        if "mock" in result:
            m = result["mock"][name]
            c = [m.get(k) for k in mock_cols]
            line += f" {m['uvj_class']['n_clusters']:.1f} |" if c[0] else " |"
            line += (f" {c[0]['cluster_majority_balanced_accuracy']:.3f} | {c[0]['ami']:.3f} |" if c[0] else " | |")
            line += "".join(f" {x['cluster_majority_balanced_accuracy']:.3f} |" if x else " |" for x in c[1:])
            line += f" {m['stability']:.2f} |"
        if "real" in result:
            r = result["real"][name]
            col = r[args.real_column]
            line += (f" {col['n_clusters']:.1f} | {col['cluster_majority_balanced_accuracy']:.3f} | "
                     f"{col['ami']:.3f} | {r['stability']:.2f} |")
        print(line)
    if "mock" in result:
        m0 = next(iter(result["mock"].values()))
        print("majority rate (mock):", {k: round(m0[k]["majority_rate"], 3) for k in mock_cols if k in m0})
    if "real" in result:
        r0 = next(iter(result["real"].values()))
        print("majority rate (real):", round(r0[args.real_column]["majority_rate"], 3))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
