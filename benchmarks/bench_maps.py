"""Time `galearn embed` and `galearn classify` at the default run's size.

Builds a synthetic workspace (no CNN needed): N galaxies with rest-frame
U, V, J colours, a ``truth_class`` (5 classes), ``truth_morph`` (2) and
``truth_activity`` (2) column, a 1280-D "pre-trained" feature file whose
class structure is buried in noise and a 512-D noise file standing in for
``random-resnet18``. Then runs ``run_embed`` (t-SNE, or ``--method``) and
``run_classify`` (3-4 columns x 2 backbones) and prints wall and CPU seconds.

    nice -n 10 .venv/bin/python benchmarks/bench_maps.py --n 1500 --seed 0

On a shared machine the wall time depends on the other jobs; the CPU time
(``process_time``, all threads of this process) is the steadier number.
Results go to ``benchmarks/out/bench_maps.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.table import Table


def build(root: Path, n: int, seed: int):
    from galearn.store import FeatureWriter, Workspace, open_sample, update_metrics, write_sample

    ws = Workspace(root)
    rng = np.random.default_rng(seed)
    k = rng.integers(0, 5, n)  # elliptical, spiral, edge-on, irregular, merger
    names = np.array(["elliptical", "spiral", "edge-on", "irregular", "merger"])
    early = k == 0
    V = rng.uniform(20, 25, n)
    U = V + np.where(early, 1.8, 0.8) + rng.normal(0, 0.25, n)
    J = V - (np.where(early, 1.0, 0.9) + rng.normal(0, 0.25, n))
    U[rng.random(n) < 0.02] = np.nan
    cat = Table({
        "ID": np.arange(n) + 1, "zbest": rng.uniform(0.1, 2.5, n),
        "restUXbessel": U, "restVbessel": V, "restJpalomar": J,
        "truth_class": names[k], "truth_morph": np.where(early, "early-type", "disk"),
        "truth_activity": np.where(early, "quiescent", "star-forming"),
    })
    write_sample(ws.sample, rng.uniform(0, 1, (n, 3, 4, 4)).astype("f4"), cat, physical=None,
                 bands=["F435W", "F850LP", "F160W"], kind="mock",
                 columns={"id": "ID", "z": "zbest", "u_mag": "restUXbessel", "v_mag": "restVbessel",
                          "j_mag": "restJpalomar"})
    sample = open_sample(ws.sample)
    centres = rng.normal(0, 1, (5, 1280))
    signal = np.abs(rng.normal(0, 1, (n, 1280))) + 0.35 * centres[k]  # ReLU-like, weak class signal
    for name, values in (("efficientnet-lite0", signal),
                         ("random-resnet18", np.abs(rng.normal(0, 1, (n, 512))))):
        w = FeatureWriter(ws.features(name), n, values.shape[1], sample.ids(), {"sample_checksum": sample.checksum})
        w.write(0, values.astype("f4"))
        w.finish({"backbone": name})
    update_metrics(ws.metrics, {"features": {"backbone": "efficientnet-lite0"}})
    return ws


def timed(fn, *args):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="tsne", choices=["tsne", "umap", "pca"])
    ap.add_argument("--n-jobs", type=int, default=-1)
    ap.add_argument("--out", default="benchmarks/out/bench_maps.json")
    args = ap.parse_args()

    from galearn.config import ClassifyConfig, EmbedConfig
    from galearn.evaluate import run_classify, similar_galaxies
    from galearn.maps import run_embed

    with tempfile.TemporaryDirectory() as tmp:
        ws = build(Path(tmp) / "ws", args.n, args.seed)
        _, embed_wall, embed_cpu = timed(run_embed, ws,
                                         EmbedConfig(method=args.method, n_jobs=args.n_jobs, random_state=args.seed))
        metrics, cls_wall, cls_cpu = timed(run_classify, ws, ClassifyConfig(method=args.method,
                                                                           random_state=args.seed))
        _, sim_wall, sim_cpu = timed(similar_galaxies, ws, "1", 10)
    result = {
        "n": args.n, "seed": args.seed, "method": args.method, "n_jobs": args.n_jobs,
        "embed_wall_s": round(embed_wall, 2), "embed_cpu_s": round(embed_cpu, 2),
        "classify_wall_s": round(cls_wall, 2), "classify_cpu_s": round(cls_cpu, 2),
        "similar_wall_s": round(sim_wall, 2), "similar_cpu_s": round(sim_cpu, 2),
        "columns": list(metrics["agreement"]),
        "knn_balanced_accuracy": {c: round(m["knn_balanced_accuracy"], 3) for c, m in metrics["agreement"].items()},
        "knn_balanced_accuracy_noise_backbone": {
            c: round(m["knn_balanced_accuracy"], 3)
            for c, m in metrics.get("agreement_by_backbone", {}).get("random-resnet18", {}).items()},
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg(), "python": platform.python_version()},
    }
    print(json.dumps(result, indent=2))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
