"""Benchmark: the default clusterer of ``galearn classify`` at survey scale (issue 15 on top of the scale-out).

On synthetic features (two Gaussian populations in ``--dim`` dimensions, 85 % / 15 %, the
small one offset by ``--separation`` sigma per axis, seeded) it runs
:func:`galearn.maps.cluster_scale.clusters_at_scale` exactly as ``classify`` does for stamps in
linear units (``--clusterer spectral --space pca``, k by the silhouette in 2..10, 10 stability
resamples; fitted on ``fit_subsample`` = 50 000 rows, of which the clusterer itself uses at most
20 000, every other row assigned) and prints wall and CPU seconds, peak memory, the chosen k,
the stability and the ARI against the two populations. One process per N (the first call of a
process includes UMAP's numba compilation of NN-descent, about a minute).

``--eigensolver-n N`` times the spectral step alone on the 15-neighbour graph of N synthetic
rows: galearn's Lanczos embedding (one eigensolve cut at every k of 2..10) against
``sklearn.cluster.SpectralClustering`` (ARPACK shift-invert) for one k, each in a child process
stopped after ``--timeout`` seconds.

Usage::

    python benchmarks/bench_cluster_scale.py --n 100000 [--dim 128] [--out /tmp/cluster_scale.json]
    python benchmarks/bench_cluster_scale.py --eigensolver-n 3000 20000 --timeout 600
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def populations(n: int, dim: int, separation: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.15).astype(np.int64)
    X = rng.normal(size=(n, dim))
    X[y == 1] += separation
    return X.astype(np.float32), y


def _clusters(n: int, dim: int, separation: float, queue) -> None:
    from sklearn.metrics import adjusted_rand_score

    from galearn.maps.cluster_scale import clusters_at_scale
    from galearn.runtime import blas_threads

    X, y = populations(n, dim, separation)
    t0, c0 = time.perf_counter(), time.process_time()
    with blas_threads(1):
        fit, info = clusters_at_scale(X, method="spectral", space="pca", select="silhouette", random_state=0)
    queue.put({"n": n, "dim": dim, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
               "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, "k": fit.n_clusters,
               "stability": fit.stability, "ari_vs_populations": adjusted_rand_score(y, fit.labels), "info": info})


def _eigensolver(n: int, which: str, queue) -> None:
    from galearn.maps.clusters import _fuzzy_graph, _spectral_labels, _spectral_maps

    X, _ = populations(n, 50, 0.35)
    graph = _fuzzy_graph(X.astype(np.float64), 0)
    c0 = time.process_time()
    if which == "galearn":
        maps = _spectral_maps(graph, 10, 0)
        for k in range(2, 11):
            _spectral_labels(maps, k)
    else:
        from sklearn.cluster import SpectralClustering

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SpectralClustering(n_clusters=2, affinity="precomputed", assign_labels="cluster_qr",
                               random_state=0).fit(graph)
    queue.put({"n": n, "solver": which, "cpu_s": time.process_time() - c0})


def _in_child(target, args, timeout: float) -> dict | None:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.terminate()
        proc.join()
        return None
    return queue.get() if not queue.empty() else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, nargs="*", default=[], help="rows for the whole clustering")
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--separation", type=float, default=0.6, help="offset of the small population, sigma per axis")
    ap.add_argument("--eigensolver-n", type=int, nargs="*", default=[], help="graph sizes for the eigensolver timing")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    result: dict = {"clusters": [], "eigensolver": []}
    for n in args.n:
        row = _in_child(_clusters, (n, args.dim, args.separation), args.timeout)
        row = row or {"n": n, "timed_out_after_s": args.timeout}
        result["clusters"].append(row)
        print(json.dumps(row, default=str), flush=True)
    for n in args.eigensolver_n:
        for which in ("galearn", "sklearn"):
            row = _in_child(_eigensolver, (n, which), args.timeout)
            row = row or {"n": n, "solver": which, "timed_out_after_s": args.timeout}
            result["eigensolver"].append(row)
            print(json.dumps(row), flush=True)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
