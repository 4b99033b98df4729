"""How the statmorph morphology ratio of ``gan evaluate`` depends on how many stamps it measures.

``gan evaluate`` measures statmorph on ``gan.eval_morphology_n`` (default 40)
stamps per set -- real held-out H, real training T, generated G -- and
reports ``W(H, G) / W(H, T)``. This measures the three sets of a finished GAN
workspace (one of ``bench_gan_default.py``'s ``ws-NAME``) at a larger size
(all held-out stamps, ``--n`` training and generated ones), prints the ratio
at that size, then the spread of the ratio over ``--draws`` random 40-stamp
subsets of the same measurements (what the default evaluation sees), and
checks the evaluation's noise estimate (``morphology_ratio_interval``: the
ratio +- its bootstrap standard deviation) against the spread of the ratio
over ``--check`` fresh subsets::

      PYTHONPATH=src OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_gan_morph_n.py /tmp/14r6/ws-def-s0
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("workspace", help="GAN workspace with sample.h5, library.h5 and gan/split.json")
    p.add_argument("--n", type=int, default=150, help="training and generated stamps measured")
    p.add_argument("--subset", type=int, default=40, help="stamps per set of the default evaluation")
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--check", type=int, default=25, help="subsets on which the bootstrap sd is checked")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    from galearn.gan.evaluate import morphology_noise_sigma, morphology_ratio, morphology_ratio_interval, physical_stamps
    from galearn.morphology import measure_morphology_parallel, morphology_wasserstein
    from galearn.store import open_sample

    ws = Path(args.workspace)
    rng = np.random.default_rng(args.seed)
    real, lib = open_sample(ws / "sample.h5"), open_sample(ws / "library.h5")
    split = json.loads((ws / "gan" / "split.json").read_text())
    sets = {"heldout": (real, np.sort(np.asarray(split["heldout"]))),
            "train": (real, np.sort(rng.choice(np.asarray(split["train"]), args.n, replace=False))),
            "generated": (lib, np.sort(rng.choice(lib.n, args.n, replace=False)))}
    bkg = real.display_images  # border median subtracted, as gan evaluate measures them
    noise = morphology_noise_sigma(real, rng, subtract_background=bkg)
    tab = {k: measure_morphology_parallel(physical_stamps(s, idx, subtract_background=bkg), real.bands, noise_sigma=noise,
                                          progress=False)
           for k, (s, idx) in sets.items()}

    def subsets() -> tuple:
        """One evaluation-sized draw of each set (drawn in the order heldout, train, generated): (heldout, generated, train)."""
        sub = {k: t[np.sort(rng.choice(len(t), args.subset, replace=False))] for k, t in tab.items()}
        return sub["heldout"], sub["generated"], sub["train"]

    full = morphology_ratio(tab["heldout"], tab["generated"], tab["train"])
    draws = np.array([morphology_ratio(*subsets()) for _ in range(args.draws)])
    per_stat = morphology_wasserstein(tab["heldout"], tab["generated"])[1]
    half_widths = []
    for i in range(args.check):
        lo, hi = morphology_ratio_interval(*subsets(), n_boot=100, random_state=i)
        half_widths.append((hi - lo) / 2)
    out = {"workspace": str(ws), "n": {k: len(t) for k, t in tab.items()}, "ratio": full,
           f"ratio_{args.subset}_median": float(np.median(draws)),
           f"ratio_{args.subset}_16_84": np.percentile(draws, [16, 84]).tolist(),
           f"ratio_{args.subset}_sd": float(draws.std(ddof=1)),
           "bootstrap_sd_mean": float(np.mean(half_widths)) if half_widths else None,
           "per_statistic_generated": per_stat}
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
