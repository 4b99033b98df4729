"""Where a generated library's morphometry FID comes from: set size, feature groups, and the shape tails.

Reads a workspace after ``galearn gan sample`` (e.g. one that ``bench_gan.py`` left) and, in the 67 morphometry
numbers standardised by the real training stamps (``gan.realism_space = morphometry``), prints:

* the FID between generated and real training stamps, and between two disjoint draws of the training stamps
  (the real-vs-real level), at equal set sizes N, averaged over ``--draws`` draws: a real-vs-real FID is
  small-sample bias alone and falls towards 0 as N grows, so if the ratio RISES with N the generator's excess is
  not an artefact of the evaluation's 120 held-out stamps (Chong & Forsyth 2020, "Effectively Unbiased FID");
* the FID of the whole library against all training stamps with each group of numbers left out, and of each group
  alone (the part of the distance that lies between groups shows as a drop larger than the group's own FID);
* the FID of ``--common`` groups together (default asymmetry, shape, colour: what no G-loss term of the shipped
  setting or of ``gan.g_profile_match`` matches), so runs whose losses target different groups are compared in one
  space (``gan.realism_untargeted`` leaves out each run's own targets), at each N as above;
* each stamp's power spectrum given its light profile (linear least squares on the real training stamps): the
  mean shift and the spread of the held-out real and the generated residuals, in units of the training ones';
* the 10 / 50 / 90 / 99th percentiles of the centroid offset (pixels) and the asymmetry of the middle band, real
  (training + held-out) against generated;
* the FID of the whole library once each generated number is mapped by rank onto the training stamps' own
  distribution of it (every marginal then matches exactly): what is left lies in how the numbers move together,
  which no per-number term in G's loss can hold (docs/gan-experiments.md round 35), for all numbers and for the spectrum and
  profile together.

    .venv/bin/python benchmarks/bench_gan_fid_n.py WS [--sizes 120 240] [--draws 5] [--seed 0] [--common GROUP ...] [--out OUT.json]

Deterministic in ``--seed``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from galearn.evaluate.realism import frechet_distance  # noqa: E402
from galearn.gan.evaluate import standardise  # noqa: E402
from galearn.morphometry import morphometry_features, morphometry_groups, morphometry_names  # noqa: E402
from galearn.store import Workspace, open_sample  # noqa: E402


def _match_marginals(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each column of ``values`` mapped by rank onto the quantiles of the same column of ``reference``."""
    levels = (np.argsort(np.argsort(values, axis=0), axis=0) + 0.5) / len(values)
    return np.stack([np.quantile(reference[:, j], levels[:, j]) for j in range(values.shape[1])], axis=1)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--sizes", type=int, nargs="+", default=[120, 240], help="set sizes N (at most half the training stamps)")
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--common", nargs="+", default=["asymmetry", "shape", "colour"],
                    help="morphometry groups whose FID is also given together (one space for runs with other targets)")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    ws = Workspace(args.workspace)
    for path, step in ((ws.sample, "galearn cutouts / ingest-images"), (ws.gan_split, "galearn gan train"),
                       (ws.library, "galearn gan sample")):
        if not Path(path).exists():
            print(f"bench_gan_fid_n: {path} not found; run {step} on this workspace first", file=sys.stderr)
            sys.exit(2)
    sample, library = open_sample(ws.sample), open_sample(ws.library)
    split = json.loads(ws.gan_split.read_text())
    train, held = np.sort(np.asarray(split["train"])), np.sort(np.asarray(split["heldout"]))
    f_train = morphometry_features(sample.read("stretched", train))
    f_held = morphometry_features(sample.read("stretched", held))
    f_gen = morphometry_features(library.read("stretched", np.arange(library.n)))
    names = morphometry_names(len(sample.bands), list(sample.bands))
    z_train, z_gen, z_held = standardise(f_train, f_train, f_gen, f_held)
    out: dict = {"workspace": str(args.workspace), "n_train": len(train), "n_heldout": len(held), "n_generated": len(f_gen),
                 "fid_all": frechet_distance(z_gen, z_train), "by_size": [], "groups": {}, "tails": {}}
    print(f"{args.workspace}: {len(train)} training, {len(f_gen)} generated stamps")
    print(f"FID, whole library against all training stamps: {out['fid_all']:.2f}")
    groups = morphometry_groups(names)
    unknown = sorted(set(args.common) - set(groups))
    if unknown:
        print(f"bench_gan_fid_n: --common {' '.join(unknown)}: not a morphometry group ({', '.join(groups)})", file=sys.stderr)
        sys.exit(2)
    common = np.any([groups[g] for g in args.common], axis=0)
    out["common"] = {"groups": args.common, "n_numbers": int(common.sum()),
                     "fid_all": frechet_distance(z_gen[:, common], z_train[:, common]), "by_size": []}
    rng = np.random.default_rng(args.seed)
    for n in args.sizes:
        if 2 * n > len(train) or n > len(f_gen):
            print(f"N = {n}: skipped (needs {2 * n} training and {n} generated stamps)")
            continue
        fids = {key: ([], []) for key in ("by_size", "common")}  # generated, real vs real; the same draws in both spaces
        for _ in range(args.draws):
            perm = rng.permutation(len(train))
            gen, real_a, real_b = z_gen[rng.choice(len(z_gen), n, replace=False)], z_train[perm[:n]], z_train[perm[n:2 * n]]
            for key, cols in (("by_size", slice(None)), ("common", common)):
                fids[key][0].append(frechet_distance(gen[:, cols], real_a[:, cols]))
                fids[key][1].append(frechet_distance(real_a[:, cols], real_b[:, cols]))
        rows = {key: {"n": n, "fid_generated": float(np.mean(gen)), "fid_real_vs_real": float(np.mean(real)),
                      "ratio": float(np.mean(gen) / np.mean(real))} for key, (gen, real) in fids.items()}
        out["by_size"].append(rows["by_size"])
        out["common"]["by_size"].append(rows["common"])
        row = rows["by_size"]
        print(f"N = {n}: FID generated {row['fid_generated']:.2f}, real vs real {row['fid_real_vs_real']:.2f}, "
              f"ratio {row['ratio']:.2f} (mean of {args.draws} draws)")
    print(f"{' + '.join(args.common)} ({common.sum()} numbers): FID whole library {out['common']['fid_all']:.2f}; "
          + "; ".join(f"N = {r['n']}: {r['fid_generated']:.2f} / {r['fid_real_vs_real']:.2f} real, ratio {r['ratio']:.2f}"
                      for r in out["common"]["by_size"]))
    for group, mask in groups.items():
        without = frechet_distance(z_gen[:, ~mask], z_train[:, ~mask])
        alone = frechet_distance(z_gen[:, mask], z_train[:, mask])
        out["groups"][group] = {"n_numbers": int(mask.sum()), "fid_without": without, "fid_alone": alone}
        print(f"  without {group:18s} ({mask.sum():2d} numbers): {without:6.2f}; alone: {alone:6.2f}")
    # Each stamp's spectrum given its light profile: least squares on the real training stamps, then the
    # generated and held-out residuals per spectral number, in units of the training residuals' spread.
    profile, spectrum = groups["profile"], groups["power spectrum"]
    design = lambda z: np.c_[np.ones(len(z)), z[:, profile]]  # noqa: E731
    coef, *_ = np.linalg.lstsq(design(z_train), z_train[:, spectrum], rcond=None)
    residual = lambda z: z[:, spectrum] - design(z) @ coef  # noqa: E731
    spread = residual(z_train).std(0)
    for label, z in (("held-out real", z_held), ("generated", z_gen)):
        r = residual(z)
        shift, ratio = r.mean(0) / spread, r.std(0) / spread
        out[f"spectrum_given_profile_{label.split()[0].replace('-', '')}"] = {
            "shift": shift.tolist(), "spread_ratio": ratio.tolist(), "names": [n for n, m in zip(names, spectrum) if m]}
        print(f"  spectrum given profile, {label}: largest |mean shift| {np.abs(shift).max():.2f}, "
              f"spread ratio {ratio.min():.2f}-{ratio.max():.2f} (median {np.median(ratio):.2f}) of the training residuals'")
    f_real = np.concatenate([f_train, f_held])
    asymmetries = [n for n in names if n.startswith("asymmetry_")]
    middle = asymmetries[len(asymmetries) // 2]
    for name in ("offset", middle):
        j = names.index(name)
        q = [10, 50, 90, 99]
        real_q, gen_q = np.percentile(f_real[:, j], q), np.percentile(f_gen[:, j], q)
        out["tails"][name] = {"percentiles": q, "real": real_q.tolist(), "generated": gen_q.tolist()}
        print(f"  {name:14s} 10/50/90/99 %: real " + " ".join(f"{v:.2f}" for v in real_q)
              + " | generated " + " ".join(f"{v:.2f}" for v in gen_q))
    marginals_matched = _match_marginals(z_gen, z_train)
    out["marginals_matched"] = {}
    for label, cols in (("all", np.ones(len(names), bool)), ("power spectrum + profile", spectrum | profile)):
        before, after = frechet_distance(z_gen[:, cols], z_train[:, cols]), frechet_distance(marginals_matched[:, cols], z_train[:, cols])
        out["marginals_matched"][label] = {"fid": before, "fid_marginals_matched": after}
        print(f"  {label} ({cols.sum()} numbers): FID {before:.2f}; with every marginal matched {after:.2f} "
              f"({100 * after / before:.0f} % left: how the numbers move together)")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
