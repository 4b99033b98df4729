"""Benchmark of `galearn anomalies` / `galearn learn`: rare-galaxy recall and learning curves.

1. Anomaly ranking on mock fields with the rare kinds (``truth_rare``), one
   per seed: recall of the rare galaxies in the top 50 / 100 of the ranking
   against a random ranking, for isolation forest and LOF in the reduced
   feature space, before and after 1, 2 and 3 rounds of simulated feedback (a
   person who looks at the next 20 galaxies of the current ranking and marks
   each interesting (``truth_rare != none``) or boring; the ranking is then
   re-ranked with :func:`galearn.explore.rerank_anomalies`). Recall at N
   counts the rare galaxies among the first N galaxies *viewed*: those already
   judged, then the re-ranked rest.
2. Learning curves: balanced accuracy of the `learn` classifier (logistic
   regression and Gaussian process) on the galaxies not labelled, after 10,
   20, 50 and 100 labels, on mock early-type / disk (``truth_morph``) and on
   the 600 real Galaxy Zoo dev images (``morph``: elliptical / spiral), 3
   seeds each. Ways of choosing the labels (batches of 10): ``random``;
   ``uncertainty`` (10 random, then the most uncertain); ``kmeans+uncertainty``
   (the first 10 are what ``galearn learn`` proposes without labels,
   :func:`galearn.explore.propose_representative`, then the most uncertain);
   ``kmeans+diverse2`` / ``3`` (the same start, then :func:`propose_uncertain`
   with ``diversity = 2`` / ``3``: k-means centres of the 2x / 3x most
   uncertain); ``cli-default`` (what ``galearn learn`` does with its defaults:
   20 representative galaxies, then batches of 20 with ``diversity = 2``). The simulated
   person labels exactly the galaxies proposed; galaxies without a truth label
   (the mock's mergers) are never proposed to it.

Features: efficientnet-lite0 with galearn's default settings (input size,
scales, flip/rotation averaging ``tta = 4``): what ``galearn run`` gives
``galearn learn``. ``--tta 1`` measures the cheaper features of the first
round (docs/explore.md).
Mock sample: every galaxy with ``CLASS_STAR < 0.9`` (no redshift cut, so the
sample keeps ~1100 of 1200 galaxies and ~45 rare ones).

    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/bench_explore.py [--tta 1]

writes ``benchmarks/out/bench_explore.json`` and prints a summary. Work
folders (``--workdir``) are reused: finished simulations / features are not
redone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from galearn.config import CutoutConfig, FeatureConfig, IngestConfig, SimulateConfig
from galearn.explore import (anomaly_scores, fit_classifier, propose_representative, propose_uncertain,
                             rerank_anomalies)
from galearn.explore.anomalies import ranks_of, recall_at, reduce_for_scoring
from galearn.explore.learn import RERANK_SCALE, local_scale
from galearn.store import Workspace, open_sample, read_features

BUDGETS = (10, 20, 50, 100)
FEATURES = FeatureConfig(backbone="efficientnet-lite0")
#: How the labels are chosen: (first batch, later batches, diversity of the later batches, batch size).
#: ``cli-default``: what `galearn learn` does with its defaults (--n-propose 20, --diversity 2): a first batch of
#: 20 representative galaxies, then batches of 20 (shortened to land on the budgets); 10 labels are not measured.
STRATEGIES = {"random": ("random", "random", 1, 10), "uncertainty": ("random", "uncertain", 1, 10),
              "kmeans+uncertainty": ("kmeans", "uncertain", 1, 10), "kmeans+diverse2": ("kmeans", "uncertain", 2, 10),
              "kmeans+diverse3": ("kmeans", "uncertain", 3, 10), "cli-default": ("kmeans", "uncertain", 2, 20)}


def mock_workspace(root: Path, seed: int, n_galaxies: int) -> Workspace:
    from galearn.mock import simulate_field
    from galearn.survey import make_sample_from_mosaics

    ws = Workspace(root / f"mock-{seed}")
    mock = ws.root / "mock"
    if not (mock / "catalog.fits").exists():
        t = time.perf_counter()
        simulate_field(mock, SimulateConfig(n_galaxies=n_galaxies, random_state=seed), progress=False)
        print(f"seed {seed}: simulated in {time.perf_counter() - t:.0f} s", flush=True)
    if not ws.sample.exists():
        images = {b: mock / f"{b}.fits" for b in ("F435W", "F850LP", "F160W")}
        make_sample_from_mosaics(mock / "catalog.fits", images, ws, CutoutConfig(select="CLASS_STAR < 0.9"))
    return ensure_features(ws, f"seed {seed}")


def ensure_features(ws: Workspace, label: str) -> Workspace:
    """Compute the benchmark's features once (timed), then check that reused ones have its TTA setting."""
    from galearn.features import run_features

    if not ws.features(FEATURES.backbone).exists():
        t = time.perf_counter()
        run_features(ws, FEATURES)
        print(f"{label}: features in {time.perf_counter() - t:.0f} s", flush=True)
    check_tta(ws)
    return ws


def real_workspace(root: Path, data: Path) -> Workspace:
    from galearn.survey import make_sample_from_images

    ws = Workspace(root / "galaxy-zoo-dev")
    if not ws.sample.exists():
        make_sample_from_images(data / "images", data / "labels.csv", ws, IngestConfig())
    return ensure_features(ws, "real")


def check_tta(ws: Workspace) -> None:
    """Stop when a reused work folder holds features of another flip/rotation averaging."""
    tta = read_features(ws.features(FEATURES.backbone)).attrs.get("tta")
    if tta != FEATURES.tta:
        raise SystemExit(f"{ws.features(FEATURES.backbone)} has tta = {tta}, this run asks for {FEATURES.tta}: "
                         "use another --workdir")


def feedback_recall(Z: np.ndarray, scores: np.ndarray, target: np.ndarray, *, rounds: int = 3, batch: int = 20,
                    tops=(50, 100), scale: float | None = None) -> list[dict]:
    """Recall at each top-N after 0..rounds rounds of simulated judgements of the next ``batch`` galaxies."""
    viewed: list[int] = []
    current = scores.astype(float).copy()
    out = []
    for r in range(rounds + 1):
        free = np.setdiff1d(np.arange(len(scores)), viewed)
        order_free = free[np.lexsort((free, -current[free]))]
        seq = np.concatenate([np.asarray(viewed, dtype=np.int64), order_free])
        out.append({f"recall_top{t}": recall_at(seq, target, t) for t in tops}
                   | {"n_found_in_viewed": int(target[viewed].sum()) if viewed else 0})
        if r == rounds:
            break
        viewed.extend(order_free[:batch].tolist())
        current = rerank_anomalies(Z, scores, np.asarray(viewed), target[viewed], scale=scale)
    return out


def learning_curve(Z: np.ndarray, y: np.ndarray, *, strategy: str, model: str, seed: int) -> dict:
    from sklearn.metrics import balanced_accuracy_score

    first, later, diversity, batch = STRATEGIES[strategy]
    rng = np.random.default_rng(seed)
    pool = np.flatnonzero(y != "")
    outside = np.ones(len(y), bool)
    outside[pool] = False
    if first == "random":
        labelled = list(rng.choice(pool, BUDGETS[0], replace=False))
    else:
        labelled = [int(v) for v in propose_representative(Z, batch, exclude=outside, random_state=seed)]
    while len(set(y[labelled])) < 2:  # one class only: `galearn learn` refuses; the person labels more at random
        labelled.append(int(rng.choice(np.setdiff1d(pool, labelled))))
    curve = {}
    last = 0  # labels at the previous measurement
    while True:
        n = len(labelled)
        clf = fit_classifier(Z, np.asarray(labelled), y[labelled], model=model, random_state=seed)
        due = [b for b in BUDGETS if last < b <= n]
        last = n
        if due:  # (a start with one class only gets more labels: measured at the first n >= the budget)
            test = np.setdiff1d(pool, labelled)
            curve[str(max(due))] = float(balanced_accuracy_score(y[test], clf.predict(Z[test])))
        if n >= BUDGETS[-1]:
            break
        step = min(batch, min(b for b in BUDGETS if b > n) - n)
        if later == "random":
            new = rng.choice(np.setdiff1d(pool, labelled), step, replace=False)
        else:
            mask = outside.copy()
            mask[labelled] = True
            new = propose_uncertain(clf.predict_proba(Z), mask, step, Z=Z, diversity=diversity, random_state=seed)
        labelled.extend(int(v) for v in new)
    return curve


def curves_for(Z, y, seeds) -> dict:
    res = {}
    runs_of = [("logistic", s) for s in STRATEGIES] + [("gp", "random"), ("gp", "kmeans+diverse2")]
    for model, strategy in runs_of:
        runs = [learning_curve(Z, y, strategy=strategy, model=model, seed=s) for s in seeds]
        res[f"{model}/{strategy}"] = {
            b: {"mean": float(np.mean([r[b] for r in runs])), "std": float(np.std([r[b] for r in runs])),
                "runs": [r[b] for r in runs]} for b in map(str, BUDGETS) if all(b in r for r in runs)}
    return res


def main() -> None:
    global FEATURES
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--n-galaxies", type=int, default=1200)
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/galearn-bench-explore"))
    ap.add_argument("--real", type=Path, default=Path("../shared/data/galaxy-zoo-dev"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/bench_explore.json"))
    ap.add_argument("--tta", type=int, default=FEATURES.tta, help="Flip/rotation averaging of the features.")
    args = ap.parse_args()
    FEATURES = dataclasses.replace(FEATURES, tta=args.tta)
    args.workdir.mkdir(parents=True, exist_ok=True)
    result = {"features": dataclasses.asdict(FEATURES), "n_galaxies": args.n_galaxies, "seeds": args.seeds,
              "anomalies": {}, "learning_curves": {}}
    t_all = time.perf_counter()

    # ------------------------------------------------------------------ anomalies on the mock
    per_seed = {}
    mock_curves = []
    for seed in args.seeds:
        ws = mock_workspace(args.workdir, seed, args.n_galaxies)
        sample = open_sample(ws.sample)
        X = read_features(ws.features(FEATURES.backbone)).values
        cat = sample.catalog
        rare = np.asarray(cat["truth_rare"]).astype(str)
        target = rare != "none"
        Z, _ = reduce_for_scoring(X, n_components=50, random_state=0)
        h = local_scale(Z)
        entry = {"n": int(len(X)), "n_rare": int(target.sum()),
                 "rare_kinds": {k: int(np.count_nonzero(rare == k)) for k in np.unique(rare) if k != "none"},
                 "random_recall_top50": 50 / len(X), "random_recall_top100": 100 / len(X)}
        for method in ("iforest", "lof"):
            for nc in (50, 10):
                t = time.perf_counter()
                s = anomaly_scores(X, method=method, n_components=nc, random_state=seed)
                secs = time.perf_counter() - t
                order = np.argsort(ranks_of(s))
                top100 = order[:100]
                entry[f"{method}-{nc}"] = {
                    "seconds": secs,
                    "feedback": feedback_recall(Z, s, target, scale=RERANK_SCALE * h),
                    "feedback_scale1": feedback_recall(Z, s, target, scale=h),
                    "found_top100_by_kind": {k: int(np.count_nonzero(rare[top100] == k)) for k in entry["rare_kinds"]},
                    "top100_truth_class": {k: int(v) for k, v in zip(*np.unique(
                        np.asarray(cat["truth_class"]).astype(str)[top100[rare[top100] == "none"]],
                        return_counts=True))},
                }
        per_seed[str(seed)] = entry
        y = np.asarray(cat["truth_morph"]).astype(str)
        mock_curves.append((Z, y, seed))
        print(f"seed {seed}: {entry['n']} stamps, {entry['n_rare']} rare; iforest-50 "
              f"{[round(f['recall_top100'], 3) for f in entry['iforest-50']['feedback']]} "
              f"lof-50 {[round(f['recall_top100'], 3) for f in entry['lof-50']['feedback']]} "
              f"(random {entry['random_recall_top100']:.3f})", flush=True)
    summary = {}
    for key in ("iforest-50", "iforest-10", "lof-50", "lof-10"):
        rows = []
        for r in range(4):
            for top in (50, 100):
                vals = [per_seed[s][key]["feedback"][r][f"recall_top{top}"] for s in per_seed]
                rand = [per_seed[s][f"random_recall_top{top}"] for s in per_seed]
                rows.append({"round": r, "top": top, "recall_mean": float(np.mean(vals)),
                             "recall_std": float(np.std(vals)), "random_mean": float(np.mean(rand)),
                             "ratio_to_random": float(np.mean(vals) / np.mean(rand))})
        summary[key] = rows
    result["anomalies"] = {"per_seed": per_seed, "summary": summary}

    # ------------------------------------------------------------------ learning curves
    mock_res = {}
    for Z, y, seed in mock_curves:
        mock_res[str(seed)] = curves_for(Z, y, [seed])
    merged = {}
    for key in next(iter(mock_res.values())):
        merged[key] = {}
        for b in map(str, BUDGETS):
            if all(b in mock_res[s][key] for s in mock_res):
                runs = [mock_res[s][key][b]["runs"][0] for s in mock_res]
                merged[key][b] = {"mean": float(np.mean(runs)), "std": float(np.std(runs)), "runs": runs}
    result["learning_curves"]["mock_truth_morph"] = merged
    if args.real.exists():
        ws = real_workspace(args.workdir, args.real)
        X = read_features(ws.features(FEATURES.backbone)).values
        y = np.asarray(open_sample(ws.sample).catalog["morph"]).astype(str)
        Z, _ = reduce_for_scoring(X, n_components=50, random_state=0)
        result["learning_curves"]["real_morph"] = curves_for(Z, y, args.seeds)
    result["seconds_total"] = time.perf_counter() - t_all

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\nanomaly recall (mean over seeds; ratio to random), rounds of feedback 0..3:")
    for key, rows in summary.items():
        for top in (50, 100):
            vals = [f"{r['recall_mean']:.3f} ({r['ratio_to_random']:.1f}x)" for r in rows if r["top"] == top]
            print(f"  {key:11s} top {top:3d}: " + "  ".join(vals))
    for task, res in result["learning_curves"].items():
        print(f"learning curve {task} (balanced accuracy, mean over seeds):")
        for key, curve in res.items():
            print(f"  {key:22s} " + "  ".join(f"{b}: {curve[b]['mean']:.3f}" for b in map(str, BUDGETS) if b in curve))
    print(f"wrote {args.out} ({result['seconds_total']:.0f} s)")


if __name__ == "__main__":
    main()
