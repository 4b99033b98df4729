"""Benchmark of the mock field: rendering time per galaxy (3 bands) and the whole `simulate` stage.

Usage::

    nice -n 10 .venv/bin/python benchmarks/bench_mock.py [--n-galaxies 1500] [--seed 0] [--n-render 200] [--full]

Prints the CPU time per source for rendering in F435W + F850LP + F160W (one
process, ``time.process_time``, the first ``--n-render`` sources of a default
field), split by class, and with ``--full`` the wall time of
``simulate_field`` at the given size with the default number of workers.
Writes ``benchmarks/out/bench_mock.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-galaxies", type=int, default=None, help="field size (default: SimulateConfig default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-render", type=int, default=200, help="sources timed one by one")
    parser.add_argument("--full", action="store_true", help="also time the whole simulate_field call")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out" / "bench_mock.json")
    args = parser.parse_args()

    from galearn.config import SimulateConfig
    from galearn.mock.field import build_truth, render_source, simulate_field

    cfg = SimulateConfig(random_state=args.seed)
    if args.n_galaxies is not None:
        cfg = dataclasses.replace(cfg, n_galaxies=args.n_galaxies)
    t0 = time.perf_counter()
    truth = build_truth(cfg)
    t_truth = time.perf_counter() - t0
    tasks = truth["tasks"][: args.n_render]
    classes = np.asarray(truth["catalog"]["truth_class"])[: len(tasks)]
    render_source(tasks[0])  # warm caches (PSF kernels, Sersic tables)
    cpu = np.empty(len(tasks))
    for i, task in enumerate(tasks):
        t = time.process_time()
        render_source(task)
        cpu[i] = time.process_time() - t
    result = {
        "n_galaxies": cfg.n_galaxies,
        "seed": args.seed,
        "field_size_pix": int(truth["size"]),
        "cpu_count": os.cpu_count(),
        "truth_seconds": round(t_truth, 2),
        "render_cpu_ms_per_source_3bands": {
            "mean": round(1e3 * cpu.mean(), 1),
            "median": round(1e3 * float(np.median(cpu)), 1),
            "p90": round(1e3 * float(np.percentile(cpu, 90)), 1),
            "max": round(1e3 * cpu.max(), 1),
            "n": len(cpu),
        },
        "render_cpu_ms_by_class": {c: round(1e3 * float(cpu[classes == c].mean()), 1) for c in np.unique(classes)},
        "projected_render_cpu_seconds": round(float(cpu.mean()) * len(truth["tasks"]), 1),
    }
    if args.full:
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            c0 = os.times()
            simulate_field(Path(tmp), cfg, progress=False)
            c1 = os.times()
            result["simulate_field_wall_seconds"] = round(time.perf_counter() - t0, 1)
            result["simulate_field_cpu_seconds_incl_children"] = round(
                (c1.user + c1.system + c1.children_user + c1.children_system)
                - (c0.user + c0.system + c0.children_user + c0.children_system), 1)
    print(json.dumps(result, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
