"""Benchmark: cost of one GAN training step, before / after the faster step, per discriminator.

Runs ``galearn.gan.loop.train_step`` (the function ``galearn gan train``
runs) for a few steps per setting on the same stamps and reports, per
setting, CPU seconds and wall seconds per step, steps per CPU second and
real images shown to D per CPU second (``batch_size * d_steps`` per step).
CPU time (``time.process_time``) is the fair measure on a shared machine;
wall time is printed beside it. CUDA is used when present (same code).

Settings (``name: overrides of GanConfig``):

* ``before``: ``sngan`` D, fp32, ``fast_step = False`` (the step before issue 14);
* ``sngan-fast``: channels-last, one G forward per step;
* ``sngan-fast-bf16``: the same under bf16 autocast;
* ``projected-slow``: projected D, ``fast_step = False``;
* ``projected-fast`` / ``projected-fast-bf16``: as ``sngan-fast``, and one
  pass of the generated batch through the frozen network serves the D and
  the G step.

Example::

    .venv/bin/python benchmarks/bench_gan_step.py --steps 6 --out benchmarks/out/bench_gan_step.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

SETTINGS = {
    "before": {"discriminator": "sngan", "fast_step": False, "precision": "fp32"},
    "sngan-fast": {"discriminator": "sngan", "fast_step": True, "precision": "fp32"},
    "sngan-fast-bf16": {"discriminator": "sngan", "fast_step": True, "precision": "bf16"},
    "projected-slow": {"discriminator": "projected", "fast_step": False, "precision": "fp32"},
    "projected-fast": {"discriminator": "projected", "fast_step": True, "precision": "fp32"},
    "projected-fast-bf16": {"discriminator": "projected", "fast_step": True, "precision": "bf16"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=6, help="timed steps per setting (after 2 warm-up steps)")
    p.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated names of SETTINGS")
    p.add_argument("--workspace", default=None, help="workspace whose sample.h5 stamps to use (default: random stamps)")
    p.add_argument("--n-bands", type=int, default=3)
    p.add_argument("--stamp-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default=None)
    p.add_argument("--out", default=None, help="JSON file for the results")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from galearn.config import GanConfig
    from galearn.gan.loop import autocast_dtype, build_networks, resolve_auto_settings, set_threads, train_step
    from galearn.runtime import resolve_device
    from galearn.gan.loss import GanLoss

    set_threads(args.threads)
    device = torch.device(resolve_device(args.device))
    if args.workspace:
        from galearn.store import Workspace, open_sample

        sample = open_sample(Workspace(Path(args.workspace)).sample)
        stamps = sample.read("stretched", np.arange(min(sample.n, 512)))
    else:
        rng = np.random.default_rng(0)
        stamps = np.clip(rng.normal(0.05, 0.1, (256, args.n_bands, args.stamp_size, args.stamp_size)), 0, 1).astype("f4")
    y_all = (np.arange(len(stamps)) % 2).astype(np.int64)
    results = {}
    for name in [s.strip() for s in args.settings.split(",") if s.strip()]:
        cfg, _ = resolve_auto_settings(dataclasses.replace(GanConfig(), **SETTINGS[name]), stamps)
        torch.manual_seed(0)
        G, D, G_ema = build_networks(2, stamps.shape[1], stamps.shape[-1], cfg)
        G, D, G_ema = G.to(device), D.to(device), G_ema.to(device)
        if cfg.fast_step and device.type == "cpu":
            G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
        amp = autocast_dtype(cfg.precision, device)
        opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.adam_beta1, cfg.adam_beta2))
        opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.adam_beta1, cfg.adam_beta2))
        loss = GanLoss(G, D, cfg.diffaugment, autocast_dtype=amp)
        kw = dict(G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D, loss=loss, stamps=stamps, y_all=y_all,
                  cfg=cfg, device=device)
        for step in range(2):
            train_step(step, **kw)
        if device.type == "cuda":
            torch.cuda.synchronize()
        c0, t0 = time.process_time(), time.perf_counter()
        losses = []
        for step in range(2, 2 + args.steps):
            losses.append(train_step(step, **kw))
        if device.type == "cuda":
            torch.cuda.synchronize()
        cpu, wall = (time.process_time() - c0) / args.steps, (time.perf_counter() - t0) / args.steps
        images = cfg.batch_size * cfg.d_steps
        results[name] = {
            "settings": SETTINGS[name], "cpu_s_per_step": round(cpu, 4), "wall_s_per_step": round(wall, 4),
            "steps_per_cpu_s": round(1 / cpu, 4), "steps_per_wall_s": round(1 / wall, 4),
            "images_per_cpu_s": round(images / cpu, 2), "images_per_wall_s": round(images / wall, 2),
            "trainable_parameters_D": sum(p.numel() for p in D.parameters() if p.requires_grad),
            "last_loss_D": losses[-1]["loss_D"],
        }
        print(f"{name:22s} cpu {cpu:6.3f} s/step  wall {wall:6.3f} s/step  {images / cpu:7.1f} img/cpu-s  "
              f"{images / wall:7.1f} img/wall-s", flush=True)
    doc = {"device": str(device), "threads": args.threads, "steps": args.steps, "batch_size": GanConfig().batch_size,
           "channels": GanConfig().channels, "stamps": list(stamps.shape), "load_average": os.getloadavg(),
           "torch": torch.__version__, "results": results}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
