"""The GAN stages of a default `galearn run` on a copy of a finished workspace, with setting overrides.

Copies ``sample.h5`` / ``sample.parts`` / ``features`` / ``config.toml`` /
``manifest.json`` of SRC_WS into ``OUT_DIR/ws-NAME``, then
``gan train`` (``--steps``, one torch thread) -> ``gan sample`` ->
``gan evaluate`` with the workspace's configuration and the JSON overrides of
``[gan]``, and writes the headline metrics, CPU seconds and the overrides to
``OUT_DIR/NAME.json``. Used for the per-seed tables of docs/gan-experiments.md (issue 14)::

    PYTHONPATH=src OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/bench_gan_default.py \\
        /tmp/15r3-s1 wg0-s1 '{"g_template_warp": true, "g_out_scale": 0.0}' --out-dir /tmp/14r3

``--summary OUT_DIR`` prints, per setting, the mean and standard deviation of
the default-run aims over all of its runs in OUT_DIR (runs named
``SETTING-FIELD``; a ``r1`` etc. in SETTING marks another training seed of
the same setting, e.g. ``def-s0``, ``defr1-s0``), and how many runs met all
four aims.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from pathlib import Path

KEYS = ("steps", "fid", "fid_real_baseline", "precision", "precision_real_baseline", "recall", "recall_real_baseline",
        "memorised_fraction", "morphology_wasserstein", "morphology_wasserstein_real_baseline",
        "power_spectrum_wasserstein", "power_spectrum_wasserstein_real_baseline", "flux_wasserstein",
        "flux_wasserstein_real_baseline", "colour_wasserstein", "colour_wasserstein_real_baseline",
        "morphology_failed_fraction", "realism_untargeted", "verdict")


AIMS = {"morph_ratio": (lambda v: v <= 2.0), "precision": (lambda v: v >= 0.5), "recall": (lambda v: v >= 0.3),
        "memorised_fraction": (lambda v: v <= 0.01)}


def summary(out_dir: Path) -> None:
    """Per setting: mean +- sd over its runs of the default-run aims, and the runs that met all of them."""
    import re

    import numpy as np

    runs: dict[str, list] = {}
    for f in sorted(out_dir.glob("*.json")):
        m = json.loads(f.read_text())
        if not all(k in m for k in (*AIMS, "fid_ratio")):  # another benchmark's output in the same folder
            continue
        setting = re.sub(r"r\d+$", "", f.stem.rsplit("-", 1)[0])
        runs.setdefault(setting, []).append((f.stem, m))
    for setting, items in runs.items():
        values = {k: np.array([m[k] for _, m in items], dtype=float) for k in (*AIMS, "fid_ratio")}
        met = sum(all(ok(m[k]) for k, ok in AIMS.items()) for _, m in items)
        sd = (lambda a: a.std(ddof=1) if len(a) > 1 else float("nan"))
        print(f"{setting}: {len(items)} runs; " + "; ".join(f"{k} {v.mean():.2f} +- {sd(v):.2f}" for k, v in values.items())
              + f"; all aims met in {met}/{len(items)}")
        for name, m in items:
            print(f"    {name}: " + " ".join(f"{k} {m[k]:.2f}" for k in (*AIMS, "fid_ratio")))


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--summary"]:
        summary(Path(argv[1]))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="finished workspace (sample + features); only read")
    p.add_argument("name")
    p.add_argument("overrides", nargs="?", default="{}", help='JSON of [gan] settings, e.g. \'{"condition": "morph"}\'')
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out-dir", default="benchmarks/out/gan_default")
    p.add_argument("--no-train", action="store_true",
                   help="sample and evaluate OUT_DIR/ws-NAME's trained run again (after a change to sampling or "
                        "evaluation); its JSON keeps the training CPU time it had")
    args = p.parse_args(argv)

    from galearn.config import RunConfig, load_config
    from galearn.errors import GalearnError
    from galearn.gan import run_evaluate, run_sample, run_train
    from galearn.store import Workspace

    out_dir = Path(args.out_dir)
    ws_dir = out_dir / f"ws-{args.name}"
    if not ws_dir.exists():
        ws_dir.mkdir(parents=True)
        for f in ("sample.h5", "sample.parts", "features", "config.toml", "manifest.json"):
            src = Path(args.src) / f
            if src.is_dir():
                shutil.copytree(src, ws_dir / f, ignore=shutil.ignore_patterns("library_*"))
            elif src.exists():
                shutil.copy(src, ws_dir / f)
    ws = Workspace(ws_dir)
    try:
        cfg = load_config(ws_dir / "config.toml")
    except (GalearnError, OSError) as exc:  # a workspace of another branch's config keys: the defaults
        print(f"config: {exc}; using the defaults", file=sys.stderr)
        cfg = RunConfig()
    over = json.loads(args.overrides)
    # An override's "steps" (e.g. a smaller batch at equal CPU time) wins over --steps.
    g = dataclasses.replace(cfg.gan, **{"steps": args.steps, "checkpoint_every": 100000, "grid_every": 100000,
                                        "threads": 1, **over})
    cfg = dataclasses.replace(cfg, gan=g)
    c0, t0 = time.process_time(), time.time()
    out_json = out_dir / f"{args.name}.json"
    if args.no_train:
        if not ws.gan_checkpoints():
            p.error(f"--no-train: {ws_dir} has no trained run")
        train_cpu = json.loads(out_json.read_text())["train_cpu_s"] if out_json.exists() else None
    else:
        run_train(ws, g, progress=False)
        train_cpu = time.process_time() - c0
    c1 = time.process_time()
    run_sample(ws, g, progress=False)
    c2 = time.process_time()
    m = run_evaluate(ws, cfg, progress=False)
    c3 = time.process_time()
    out = {k: m.get(k) for k in KEYS}
    out["morph_ratio"] = m["morphology_wasserstein"] / m["morphology_wasserstein_real_baseline"]
    out["fid_ratio"] = m["fid"] / m["fid_real_baseline"]
    bs = m.get("backbone_space") or {}
    out["backbone"] = {k: bs.get(k) for k in ("fid", "fid_real_baseline", "precision", "recall")}
    out["balancing"] = {k: m["balancing"].get(k) for k in ("balanced_accuracy_real_only", "balanced_accuracy_reweighted",
                                                           "balanced_accuracy_with_gan")}
    out.update(train_cpu_s=train_cpu, sample_cpu_s=c2 - c1, eval_cpu_s=c3 - c2, wall_s=time.time() - t0, over=over)
    text = json.dumps(out, indent=1)
    print(text)
    out_json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
