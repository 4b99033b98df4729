"""What the memorised fraction reads for a generator that draws NEW real galaxies, under each threshold.

``memorised_fraction`` counts generated rows nearer a training row than the 1st percentile of real galaxies'
distances to the training set; a generator that does not copy should score about 1 %. This prints, over
``--trials`` simulated splits of a population (a 3-component Gaussian mixture in ``--dim`` numbers with unequal
scales; ``--train`` / ``--heldout`` real rows, ``--generated`` rows drawn from the same population):

* ``before round 36``: the threshold from the held-out rows alone, numpy's default (linear) percentile;
* ``held-out, Weibull``: the held-out rows alone, the Weibull plotting position (unbiased order statistic);
* ``now``: :func:`galearn.evaluate.realism.memorised_fraction` (held-out rows and the training rows' leave-one-out
  distances, Weibull);

each as the mean, median, 5-95 % range and the share of trials over 1 %; and the share of a copying generator's
rows (training rows + 1 % noise, 5 % of the library) that ``now`` flags. Given workspaces that ``bench_gan.py``
left, it also prints their memorised fraction in the morphometry space both ways.

    .venv/bin/python benchmarks/bench_memorised_threshold.py [WS ...] [--trials 300] [--seed 0] [--out OUT.json]

Deterministic in ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from galearn.evaluate.realism import memorised_fraction_from, nearest_training_distances  # noqa: E402


def _population(rng: np.random.Generator, n: int, dim: int) -> np.ndarray:
    centres = np.zeros((3, dim))
    centres[1, 0] = centres[2, 1] = 3.0
    return centres[rng.integers(0, 3, n)] + rng.normal(size=(n, dim)) * np.linspace(0.3, 1.5, dim)


def _summary(values: list[float]) -> dict:
    v = 100.0 * np.asarray(values)
    return {"mean_pct": float(v.mean()), "median_pct": float(np.median(v)), "p5_pct": float(np.percentile(v, 5)),
            "p95_pct": float(np.percentile(v, 95)), "share_over_1pct": float(np.mean(v > 1.0))}


def simulate(trials: int, n_train: int, n_heldout: int, n_generated: int, dim: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    got: dict[str, list[float]] = {"before round 36": [], "held-out, Weibull": [], "now": [], "copies flagged": []}
    for _ in range(trials):
        train, heldout, generated = (_population(rng, n, dim) for n in (n_train, n_heldout, n_generated))
        nearest = nearest_training_distances(generated, train, heldout)
        for name, method in (("before round 36", "linear"), ("held-out, Weibull", "weibull")):
            got[name].append(float(np.mean(nearest.generated < np.percentile(nearest.heldout, 1, method=method))))
        got["now"].append(memorised_fraction_from(nearest)[0])
        n_copies = n_generated // 20
        copies = train[rng.choice(n_train, n_copies)] + 0.01 * rng.normal(size=(n_copies, dim))
        copied = np.concatenate([copies, generated[n_copies:]])
        d_copied = nearest_training_distances(copied, train, heldout)
        _, threshold = memorised_fraction_from(d_copied)
        got["copies flagged"].append(float(np.mean(d_copied.generated[:n_copies] < threshold)))
    return {name: _summary(v) for name, v in got.items()}


def workspace_fractions(path: Path) -> dict:
    from galearn.gan.evaluate import standardise
    from galearn.morphometry import morphometry_features
    from galearn.store import Workspace, open_sample

    ws = Workspace(path)
    sample, library = open_sample(ws.sample), open_sample(ws.library)
    split = json.loads(ws.gan_split.read_text())
    train, heldout = np.sort(split["train"]), np.sort(split["heldout"])
    f_train, f_held, f_gen = (morphometry_features(s.read("stretched", rows)) for s, rows in
                              ((sample, train), (sample, heldout), (library, np.arange(library.n))))
    z_train, z_gen, z_held = standardise(f_train, f_train, f_gen, f_held)
    nearest = nearest_training_distances(z_gen, z_train, z_held)
    old_threshold = float(np.percentile(nearest.heldout, 1))
    fraction, threshold = memorised_fraction_from(nearest)
    return {"generated": len(z_gen), "before_round_36": float(np.mean(nearest.generated < old_threshold)),
            "threshold_before": old_threshold, "now": fraction, "threshold_now": threshold,
            "real_rows_now": int(len(nearest.heldout) + len(nearest.train))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspaces", type=Path, nargs="*")
    ap.add_argument("--trials", type=int, default=300)
    ap.add_argument("--train", type=int, default=480)
    ap.add_argument("--heldout", type=int, default=120)
    ap.add_argument("--generated", type=int, default=600)
    ap.add_argument("--dim", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    result = {"simulation": simulate(args.trials, args.train, args.heldout, args.generated, args.dim, args.seed),
              "settings": {k: getattr(args, k) for k in ("trials", "train", "heldout", "generated", "dim", "seed")}}
    print(f"A generator of new real galaxies, {args.trials} trials ({args.train} training / {args.heldout} held-out "
          f"rows, {args.generated} generated, {args.dim} numbers):")
    for name, s in result["simulation"].items():
        print(f"  {name:18s} mean {s['mean_pct']:5.2f} %  median {s['median_pct']:5.2f} %  5-95 % "
              f"{s['p5_pct']:.2f}-{s['p95_pct']:.2f} %  trials over 1 %: {s['share_over_1pct']:.2f}")
    result["workspaces"] = {}
    for path in args.workspaces:
        w = result["workspaces"][str(path)] = workspace_fractions(path)
        print(f"{path.name}: memorised {100 * w['before_round_36']:.2f} % before round 36 (threshold "
              f"{w['threshold_before']:.2f}), {100 * w['now']:.2f} % now (threshold {w['threshold_now']:.2f}, "
              f"{w['real_rows_now']} real rows)")
    if args.out:
        args.out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
