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
        [--mock-methods ...] [--real-full-seeds 1] [--fuse catalog:zbest ...] [--colours auto|off]
        [--colour-weight 0.2] [--resamples 10] [--json out.json]

``--methods auto`` is exactly what ``galearn classify`` runs by default on each
workspace (spectral clustering in the PCA space when the aperture colours are
fused, k-means in the 5-D UMAP otherwise); the table names what it resolved to.

``--colours auto`` (default) clusters what ``galearn classify`` clusters by
default: the CNN features with the label-free aperture colours appended
(:mod:`galearn.features.aperture`; not for display images); ``off``: the CNN
features alone.

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

from galearn.errors import BadValueError  # noqa: E402
from galearn.evaluate import cluster_agreement  # noqa: E402
from galearn.config import ClassifyConfig  # noqa: E402
from galearn.evaluate.classify import colour_block_for, comparison_columns  # noqa: E402
from galearn.features.fuse import append_block  # noqa: E402
from galearn.features.fuse import (CATALOG_PREFIX, catalog_matrix, check_fuse, fuse_blocks,  # noqa: E402
                                   fuse_repeats, robust_standardise)
from galearn.maps.clusters import default_clusters, default_method  # noqa: E402
from galearn.store import load_features, require_sample, resolve_backbone  # noqa: E402
from galearn.runtime import blas_threads  # noqa: E402
from galearn.store import Workspace, read_map  # noqa: E402

#: name -> (space, method, select). ``auto`` is what ``galearn classify`` runs by default
#: (``galearn.maps.default_method``: ``spectral-silhouette`` when the aperture colours are fused,
#: else ``kmeans-silhouette-umap5``), resolved per workspace.
METHODS = {
    "auto": ("auto", "auto", None),
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
    "graph-modularity-umap5": ("umap:5", "graph", "modularity"),
    "kmeans-stablesil-umap5": ("umap:5", "kmeans", "stable-silhouette"),
    "kmeans-stability-umap5": ("umap:5", "kmeans", "stability"),
    "spectral-silhouette": ("pca", "spectral", "silhouette"),
    "spectral-silhouette-umap5": ("umap:5", "spectral", "silhouette"),
}
KEYS = ("n_clusters", "cluster_majority_balanced_accuracy", "ami", "ari", "cluster_accuracy", "majority_rate")


def load(ws_path: str, compare: tuple[str, ...], fuse: str | None = None, colours: str = "auto",
         colour_weight: float = 0.2):
    """Features (optionally with catalogue columns fused as ``galearn features --fuse catalog:...`` does), map, columns
    and whether the aperture colours were fused.

    ``colours`` ``auto`` appends the label-free aperture colours as ``galearn classify`` does
    (:func:`galearn.evaluate.classify.colour_block_for`: only for stamps in linear units), ``off`` does not.
    """
    ws = Workspace(Path(ws_path))
    sample = require_sample(ws)
    try:
        backbone = resolve_backbone(ws)
    except BadValueError:  # a copied workspace without a manifest: the default backbone
        backbone = "efficientnet-lite0"
    feats = load_features(ws, backbone, sample=sample)
    columns = comparison_columns(sample, compare)
    xy = np.asarray(read_map(ws.map("tsne"))[0], dtype=np.float64) if ws.map("tsne").exists() else None
    X = np.asarray(feats.values, dtype=np.float64)
    if fuse:
        fuse, weight = check_fuse(fuse)
        block, _ = catalog_matrix(sample, fuse[len(CATALOG_PREFIX):].split(","))
        X = fuse_blocks(X, robust_standardise(block)[0], weight)[0].astype(np.float64)
    cfg = ClassifyConfig(colours=colours, colour_weight=colour_weight)
    block, record = colour_block_for(sample, cfg, "umap:5")
    if block is not None:
        X = append_block(X, block["values"], fuse_repeats(X.shape[1], block["values"].shape[1], colour_weight))
        X = X.astype(np.float64)
    print(f"  {ws_path}: colours {'fused ' + str(record['columns']) if record['fused'] else 'not fused: ' + record['reason']}"
          + (f" (weight {colour_weight})" if record["fused"] else ""), flush=True)
    return X, xy, columns, bool(record["fused"])


def encode(labels: np.ndarray):
    keep = labels != ""
    names, counts = np.unique(labels[keep], return_counts=True)
    names = names[counts >= 5]
    keep &= np.isin(labels, names)
    return keep, np.searchsorted(names, labels[keep]), list(names)


def evaluate(X, xy, columns, seed, methods, resamples, colours_fused=False):
    rows = {}
    with blas_threads(1):
        for name in methods:
            space, method, select = METHODS[name]
            if method == "auto":
                method, space = default_method(colours_fused)
            t0 = time.perf_counter()
            fit = default_clusters(X, method=method, space=space, xy=xy, select=select,
                                   stability_resamples=resamples, random_state=seed)
            row = {"stability": fit.stability, "seconds": time.perf_counter() - t0, "clusterer": f"{method} in {space}",
                   "stability_by_k": {int(k): float(v) for k, v in fit.stability_scores.items()}}
            for col, labels in columns.items():
                keep, yi, names = encode(labels)
                row[col] = cluster_agreement(fit.labels[keep], yi, len(names), names)
            rows[name] = row
            print(f"  {name:26s} k={fit.n_clusters:2d} stab={fit.stability:.2f} "
                  + " ".join(f"{c}={row[c]['cluster_majority_balanced_accuracy']:.3f}/{row[c]['ami']:.3f}"
                             for c in columns)
                  + f"  ({row['seconds']:.1f} s)"
                  + (" stability by k " + " ".join(f"{k}:{v:.2f}" for k, v in row["stability_by_k"].items())
                     if row["stability_by_k"] else ""), flush=True)
    return rows


def mean_table(runs: list[dict]) -> dict:
    """Mean (and min) over the runs that hold each method; ``n_runs`` says how many."""
    out = {}
    names = list(dict.fromkeys(name for r in runs for name in r))
    for name in names:
        have = [r[name] for r in runs if name in r]
        entry = {"n_runs": len(have),
                 "stability": float(np.mean([r["stability"] for r in have])),
                 "stability_min": float(np.min([r["stability"] for r in have])),
                 "seconds": float(np.mean([r["seconds"] for r in have])),
                 "clusterer": sorted({r["clusterer"] for r in have})}
        for col in have[0]:
            if col in ("stability", "seconds", "stability_by_k", "clusterer"):
                continue
            entry[col] = {k: float(np.mean([r[col][k] for r in have])) for k in KEYS}
            entry[col]["cluster_majority_balanced_accuracy_min"] = float(
                np.min([r[col]["cluster_majority_balanced_accuracy"] for r in have]))
        out[name] = entry
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mock", nargs="*", default=[], help="mock workspaces (one per field seed)")
    ap.add_argument("--mock-seeds", type=int, nargs="*", default=None,
                    help="clustering seed of each mock workspace (default: its index)")
    ap.add_argument("--real", default=None, help="ingested real-image workspace (label column: --real-column)")
    ap.add_argument("--real-column", default="morph")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="clustering seeds of the real set")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--mock-methods", nargs="+", default=None, choices=list(METHODS),
                    help="methods on the mock workspaces (default: --methods)")
    ap.add_argument("--real-full-seeds", type=int, default=None,
                    help="all --methods only for the first this-many real seeds, the default (first) method on all")
    ap.add_argument("--fuse", nargs="*", default=[],
                    help="also the default method on the mock with these catalogue columns fused, e.g. catalog:zbest")
    ap.add_argument("--colours", choices=("auto", "off"), default="auto",
                    help="append the label-free aperture colours to the features as `galearn classify` does "
                         "(auto: stamps in linear units only) or not (off: the CNN features alone)")
    ap.add_argument("--colour-weight", type=float, default=0.2, help="classify.colour_weight")
    ap.add_argument("--resamples", type=int, default=10, help="bootstrap resamples of the stability figure")
    ap.add_argument("--json", default=None, help="write the mean table here")
    args = ap.parse_args(argv)

    result = {}
    if args.mock:
        runs = []
        seeds = args.mock_seeds or list(range(len(args.mock)))
        if len(seeds) != len(args.mock):
            ap.error("--mock-seeds: one seed per --mock workspace")
        for i, path in zip(seeds, args.mock):
            print(f"mock {path} (seed {i})", flush=True)
            X, xy, cols, fused = load(path, (), colours=args.colours, colour_weight=args.colour_weight)
            runs.append(evaluate(X, xy, cols, i, args.mock_methods or args.methods, args.resamples, fused))
        result["mock"] = mean_table(runs)
        for fuse in args.fuse:
            runs = []
            for i, path in zip(seeds, args.mock):
                print(f"mock {path} (seed {i}) fused {fuse}", flush=True)
                X, xy, cols, fused = load(path, (), fuse, colours=args.colours, colour_weight=args.colour_weight)
                runs.append(evaluate(X, xy, cols, i, (args.mock_methods or args.methods)[:1], args.resamples, fused))
            result[f"mock+{fuse}"] = mean_table(runs)
    if args.real:
        runs = []
        X, xy, cols, fused = load(args.real, (args.real_column,), colours=args.colours, colour_weight=args.colour_weight)
        for seed in args.seeds:
            print(f"real {args.real} (seed {seed})", flush=True)
            full = args.real_full_seeds is None or len(runs) < args.real_full_seeds
            runs.append(evaluate(X, xy, cols, seed, args.methods if full else args.methods[:1], args.resamples, fused))
        result["real"] = mean_table(runs)

    print()
    mock_cols = ("uvj_class", "truth_morph", "truth_class")
    head = "| method | clusterer in space |"
    if "mock" in result:
        head += " mock k | UVJ maj-BA | UVJ AMI | ET/disk maj-BA | 5-class maj-BA | mock stability |"
    if "real" in result:
        head += " real k | morph maj-BA | morph AMI | real stability |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name in args.methods:
        if not any(name in result.get(k, {}) for k in ("mock", "real")):
            continue
        resolved = {c for k in ("mock", "real") for c in result.get(k, {}).get(name, {}).get("clusterer", [])}
        line = f"| {name} | {', '.join(sorted(resolved))} |"
        if "mock" in result and name in result["mock"]:
            m = result["mock"][name]
            c = [m.get(k) for k in mock_cols]
            line += f" {m['uvj_class']['n_clusters']:.1f} |" if c[0] else " |"
            line += (f" {c[0]['cluster_majority_balanced_accuracy']:.3f} | {c[0]['ami']:.3f} |" if c[0] else " | |")
            line += "".join(f" {x['cluster_majority_balanced_accuracy']:.3f} |" if x else " |" for x in c[1:])
            line += f" {m['stability']:.2f} ({m['n_runs']}) |"
        elif "mock" in result:
            line += " | | | | | |"
        if "real" in result and name in result["real"]:
            r = result["real"][name]
            col = r[args.real_column]
            line += (f" {col['n_clusters']:.1f} | {col['cluster_majority_balanced_accuracy']:.3f} | "
                     f"{col['ami']:.3f} | {r['stability']:.2f} ({r['n_runs']}) |")
        print(line)
    if "mock" in result:
        m0 = next(iter(result["mock"].values()))
        print("majority rate (mock):", {k: round(m0[k]["majority_rate"], 3) for k in mock_cols if k in m0})
    if "real" in result:
        r0 = next(iter(result["real"].values()))
        print("majority rate (real):", round(r0[args.real_column]["majority_rate"], 3))
    for key in result:
        if key.startswith("mock+"):
            for name, m in result[key].items():
                print(f"{key} {name}: " + ", ".join(
                    f"{c} maj-BA {m[c]['cluster_majority_balanced_accuracy']:.3f} AMI {m[c]['ami']:.3f} "
                    f"k {m[c]['n_clusters']:.1f}" for c in ("uvj_class", "truth_morph", "truth_class") if c in m)
                      + f", stability {m['stability']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
