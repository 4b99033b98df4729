"""Where a library's morphometry FID lies: its Frechet distance to the real stamps split by number and by group.

Usage::

    python benchmarks/bench_gan_fid_split.py WS [WS ...] [--n 600] [--seed 0]

``WS`` is a workspace with ``sample.h5``, a generated ``library.h5`` and the GAN's train / held-out split
(``WS/gan/split.json``), as ``benchmarks/bench_gan.py --workspace`` leaves it. Every stamp is turned into the 67
morphometry numbers (:func:`galearn.morphometry.morphometry_features`, stretched stamps) and standardised by the
training stamps, as ``gan evaluate`` does. Prints, per workspace:

* the Frechet distance of ``--n`` library stamps (a seeded draw) against all the real stamps, split into its mean
  part and its covariance part, and the covariance part per number: the optimal (Gaussian) transport map
  ``T`` from the real to the library Gaussian moves a real point by ``x - T x``, and the expected square of each
  coordinate of that move sums to the covariance part (Dowson & Landau 1982). Beside it the same for the real
  stamps split in two random halves, the size of the estimate's own noise;
* that covariance part per morphometry group, and for the power spectrum per band and per radial bin, with the
  part of it the marginal spreads alone explain (``sum (sd_real - sd_library)^2``);
* the library's standard deviation over the real one per power-spectrum bin (the spread of the stamps' own
  pixel-scale power) and its 5 % / 95 % quantiles against the real ones;
* the held-out FID with the whole draw: FID(library, held-out) over FID(training stamps, held-out), over all
  numbers and over those G's loss does not match (``realism_untargeted``'s groups, from the run's settings).

Less noisy than the evaluation's 120-stamp draws for comparing settings at one seed; the held-out set differs
between seeds, so compare the held-out ratios only at a seed. Used for docs/gan-experiments.md round 50.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.linalg import sqrtm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from galearn.evaluate.realism import frechet_distance  # noqa: E402
from galearn.gan.data import read_split  # noqa: E402
from galearn.gan.evaluate import standardise  # noqa: E402
from galearn.gan.spaces import targeted_morphometry_groups  # noqa: E402
from galearn.morphometry import morphometry_features, morphometry_groups, morphometry_names  # noqa: E402
from galearn.store import Workspace, open_sample  # noqa: E402


def transport_split(real: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per number, the covariance part and the mean part of the Frechet distance between Gaussians fitted to
    ``real`` and ``other`` ``(n, d)``; each sums to its part of :func:`frechet_distance`."""
    eye = 1e-6 * np.eye(real.shape[1])
    s_real, s_other = np.cov(real.T) + eye, np.cov(other.T) + eye
    root = np.real(sqrtm(s_real))
    inv = np.linalg.inv(root)
    move = np.eye(len(s_real)) - inv @ np.real(sqrtm(root @ s_other @ root)) @ inv
    return np.diag(move @ s_real @ move.T), (real.mean(0) - other.mean(0)) ** 2


def groups_of(names: list[str]) -> dict[str, np.ndarray]:
    """:func:`~galearn.morphometry.morphometry_groups`, with the power spectrum also per band and per radial bin."""
    out = dict(morphometry_groups(names))
    power = [n.split("_") for n in names if n.startswith("power_")]
    for label, part in (("band", 1), ("bin", 2)):
        for key in dict.fromkeys(p[part] for p in power):
            out[f"power {label} {key}"] = np.array([n.startswith("power_") and n.split("_")[part] == key for n in names])
    return out


def report(path: str, n: int, seed: int) -> None:
    ws = Workspace(path)
    sample, library = open_sample(ws.sample), open_sample(ws.library)
    split = read_split(ws)
    names = morphometry_names(len(sample.bands), sample.bands)
    train = morphometry_features(sample.read("stretched", np.sort(split["train"])), sample.bands)

    def numbers(s, idx):
        return standardise(train, morphometry_features(s.read("stretched", np.sort(idx)), s.bands))[0]

    real = numbers(sample, np.arange(sample.n))
    rng = np.random.default_rng(seed)
    lib = numbers(library, rng.choice(library.n, size=min(n, library.n), replace=False))
    half = rng.permutation(len(real))
    cov_g, mean_g = transport_split(real, lib)
    cov_n, mean_n = transport_split(real[half[: len(half) // 2]], real[half[len(half) // 2:]])
    print(f"== {path}: {len(lib)} library stamps against {len(real)} real")
    print(f"Frechet distance {cov_g.sum() + mean_g.sum():.2f} = mean {mean_g.sum():.2f} + covariance {cov_g.sum():.2f}"
          f" | real halves: mean {mean_n.sum():.2f} + covariance {cov_n.sum():.2f}")
    print(f"{'group':18s} {'covariance':>10s} {'(halves)':>9s} {'spreads':>8s} {'mean':>6s}")
    for group, cols in groups_of(names).items():
        spreads = float(np.sum((real[:, cols].std(0) - lib[:, cols].std(0)) ** 2))
        print(f"{group:18s} {cov_g[cols].sum():10.2f} {cov_n[cols].sum():9.2f} {spreads:8.2f} {mean_g[cols].sum():6.2f}")
    for j, name in enumerate(names):
        if name.startswith("power_"):
            qr, ql = np.percentile(real[:, j], [5, 95]), np.percentile(lib[:, j], [5, 95])
            print(f"  {name:12s} sd library / real {lib[:, j].std() / real[:, j].std():.2f}; 5 / 95 %: real "
                  f"{qr[0]:+.2f} / {qr[1]:+.2f}, library {ql[0]:+.2f} / {ql[1]:+.2f}")
    held, tr = numbers(sample, split["heldout"]), standardise(train, train)[0]
    masks = morphometry_groups(names)
    trained = json.loads((ws.gan / "config.json").read_text())["config"]
    free = ~np.any([masks[g] for g in targeted_morphometry_groups(trained)] or [np.zeros(len(names), bool)], axis=0)
    for label, cols in (("all numbers", slice(None)), (f"untargeted ({free.sum()})", free)):
        f_lib, f_tr = frechet_distance(lib[:, cols], held[:, cols]), frechet_distance(tr[:, cols], held[:, cols])
        print(f"held-out FID, {label}: library {f_lib:.3f} / training stamps {f_tr:.3f} = {f_lib / f_tr:.2f}x")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workspaces", nargs="+")
    parser.add_argument("--n", type=int, default=600, help="library stamps drawn (default 600)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for path in args.workspaces:
        report(path, args.n, args.seed)


if __name__ == "__main__":
    main()
