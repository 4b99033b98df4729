"""Realism and balancing metrics of the generated library (``galearn gan evaluate``).

Protocol (numbers written to metrics.json key ``gan``):

Sets. ``H``: the real stamps held out from GAN training (``WS/gan/split.json``,
stratified by class, at most ``gan.eval_max_n``). ``T``: real training stamps
with exactly the class counts of ``H``. ``G``: library stamps with exactly the
class counts of ``H``. So every comparison is between sets of the same size
and the same class mix, and the real baseline is "two disjoint real halves of
equal size" (``T`` against ``H``), directly comparable with ``G`` against ``H``.

* ``fid`` / ``kid`` / ``precision`` / ``recall``: ``G`` against ``H`` in the
  feature space of the run's backbone (stretched stamps through
  :func:`galearn.features.extract_features`); ``*_real_baseline``: ``T``
  against ``H``. KID: polynomial kernel, unbiased MMD^2, mean over 100 subsets.
  Precision / recall: k = 3 nearest neighbours (Kynkäänniemi et al. 2019).
  Each is the mean over ``gan.realism_draws`` draws of ``T`` and ``G`` (``H``
  fixed; ``draws``, ``fid_std``, ``fid_real_baseline_std``, and
  ``fid_ratio_draws``: 5 / 50 / 95 % of one draw's ratio); so are
  ``realism_untargeted``, ``backbone_space`` and ``per_class``. Every other
  set below is the first draw's, except the memorised fractions' (all draws).
* ``memorised_fraction``: fraction of the generated stamps of all draws
  (``memorised_n`` of them) whose nearest neighbour among ALL training
  stamps (feature space) is nearer than the 1st percentile (Weibull plotting
  position) of real stamps' distances to the training set: the held-out
  stamps' and each training stamp's to the nearest other one
  (``memorised_threshold_real_n`` real stamps; ~0.01 for a generator that
  does not copy; docs/gan-experiments.md round 36).
* ``memorised_fraction_pixels``: the same test on the stretched pixels, each
  generated / ``H`` stamp against its nearest training stamp in any of 8 rotations
  / flips (RMS difference; ``memorised_threshold_pixels``): no feature
  space can hide a copy there; like the feature-space test it also counts
  stamps merely crowded next to a training stamp (at most
  ``COPY_CHECK_MAX_TRAIN`` training stamps, a seeded draw beyond that;
  ``memorised_pixels_train_n``).
* ``data_copying`` (realism space): Meehan et al. 2020's data-copying test
  (:func:`galearn.evaluate.realism.data_copying_statistic`): ``ct`` about 0
  when the generated stamps of all draws lie, cell by cell, no nearer the
  training stamps than the held-out real ones do; below about -3 for
  copies. Within its cells it tells copies from stamps that only crowd
  where real galaxies are dense, which the memorised fractions count alike.
* ``morphology_wasserstein``: statmorph statistics + adjacent-band colours on
  physical stamps (:mod:`galearn.morphology`) of seeded subsets of
  ``gan.eval_morphology_n`` stamps of ``G`` and ``H``; baseline ``T`` against ``H``.
* ``per_class``: the same per condition class.
* ``realism_diagnosis`` (morphometry space): the features the generated set
  is most shifted in, and recall with each group of features left out
  (:func:`realism_diagnosis`) -- which statistics hold recall down.
* ``typical_distance`` (morphometry space): the median Mahalanobis distance,
  by the real training stamps' covariance, of the held-out real and of the
  generated stamps, and their ratio (:func:`typical_distance`): a per-stamp
  number, steadier than the FID (absent when there are no more training
  stamps than numbers).
* ``realism_untargeted`` (morphometry space, when G's loss matched some of
  its statistics: ``gan.g_power_match``, ``g_stamp_power_match``,
  ``g_colour_power_match``, ``g_profile_match``, ``g_joint_match``, ``g_pixel_match``): FID / KID / precision / recall with those groups left
  out (:func:`untargeted_realism`); the verdict grades both.
* ``sky``: each set's own skies (outer-ring level and sigma per stamp,
  pixels at black) per band, real held-out / real train / generated
  (:func:`sky_comparison`): whether G paints under the measured noise.
* ``orientation``: whether each set's elongated stamps point every way
  within each class (axial mean resultant length, Rayleigh test;
  :func:`orientation_metrics`); the generated set is the stamps of every
  realism draw, the real ones those of the other figures.
* ``balancing``: a class-balanced real test set (``split.json``
  ``balanced_test``, never seen by the GAN); training set = GAN training stamps
  with the minority class cut to 10 % of the majority; logistic regression on
  standardised, PCA-reduced (<= 50) features (as ``linear_balanced_accuracy``):
  real only vs. real with class weights vs. real + generated minority stamps
  up to the majority count; balanced accuracy on the test set, averaged over
  ``gan.balancing_repeats`` seeded cuts, with the paired gains and their
  standard errors. The GAN itself was
  trained on the FULL minority class of the training split, so the generated
  stamps carry information from real minority stamps that the cut classifier
  does not see; the test stamps were never seen by either.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
from astropy.table import vstack

from ..config import GanConfig, GanEvaluateConfig, RunConfig, step_config
from ..errors import BadValueError
from ..imaging import subtract_border_background
from ..morphology import measure_morphology_parallel
from ..compute import current_session
from ..store import (Sample, Workspace, check_made_from, library_sample_checksum, open_sample, read_features,
                     read_manifest, record_compute, resolve_backbone, update_metrics, write_table)
from ..morphometry import (MIN_ELLIPTICITY_FOR_ANGLE, MORPHOMETRY, group_wasserstein, morphometry_features,
                           morphometry_groups, morphometry_names, orientation_isotropy, photometry_statistics)
from .data import capped_counts, gan_condition, read_split, stratified_like
from .spaces import (SELF_SUPERVISED, TARGETED_MORPHOMETRY_GROUPS, check_gan_config, check_realism_space,
                     targeted_morphometry_groups)

__all__ = ["run_evaluate", "realism_metrics", "realism_diagnosis", "typical_distance", "untargeted_realism", "sky_comparison",
           "standardise",
           "balancing_metrics", "stratified_like", "measure_morphology_parallel", "check_realism_space", "realism_verdict"]

log = logging.getLogger(__name__)
COPY_CHECK_MAX_TRAIN = 20000  # training stamps the pixel-space copy check compares with (a seeded draw beyond)
COPY_CHECK_LEFT_OUT = 500  # of them, at most this many give a leave-one-out distance to its threshold (a seeded draw)

FeatureFn = Callable[[np.ndarray], np.ndarray]


def realism_metrics(f_gen: np.ndarray, f_held: np.ndarray, f_base: np.ndarray, *, random_state: int = 0, k: int = 3) -> dict:
    """FID, KID, precision and recall of ``f_gen`` and of the real baseline ``f_base``, both against ``f_held``."""
    from ..evaluate.realism import frechet_distance, kernel_distance, precision_recall

    out: dict = {"n": int(len(f_held))}
    if min(len(f_gen), len(f_held), len(f_base)) < k + 2:
        return out
    out["fid"] = frechet_distance(f_gen, f_held)
    out["fid_real_baseline"] = frechet_distance(f_base, f_held)
    out["kid"], out["kid_std"] = kernel_distance(f_gen, f_held, random_state=random_state)
    out["kid_real_baseline"], _ = kernel_distance(f_base, f_held, random_state=random_state)
    out["precision"], out["recall"] = precision_recall(f_held, f_gen, k=k)
    out["precision_real_baseline"], out["recall_real_baseline"] = precision_recall(f_held, f_base, k=k)
    return out


def mean_over_draws(rows: list[dict]) -> dict:
    """The mean of each number over :func:`realism_metrics`-like dicts of repeated draws of ``T`` and ``G``.

    Other values come from the first draw. ``fid_std`` / ``fid_real_baseline_std``: their spread over the
    draws; ``fid_ratio_draws``: the 5 / 50 / 95 % quantiles of each draw's own ratio (what one draw, as in
    evaluations before issue 14 round 29, could read); ``draws``: how many.
    """
    out = dict(rows[0])
    for key, value in rows[0].items():
        if isinstance(value, float) and all(isinstance(r.get(key), float) for r in rows):
            out[key] = float(np.mean([r[key] for r in rows]))
    for key in ("fid", "fid_real_baseline"):
        if all(isinstance(r.get(key), float) for r in rows):
            out[f"{key}_std"] = float(np.std([r[key] for r in rows]))
    ratios = [r["fid"] / r["fid_real_baseline"] for r in rows if r.get("fid") is not None and r.get("fid_real_baseline")]
    if ratios:
        out["fid_ratio_draws"] = np.quantile(ratios, [0.05, 0.5, 0.95]).tolist()
    out["draws"] = len(rows)
    return out


def realism_diagnosis(f_gen: np.ndarray, f_held: np.ndarray, f_base: np.ndarray, names: list[str], *,
                      k: int = 3, n_top: int = 8, min_gain: float = 0.15) -> dict:
    """Where in a named realism space the generated set ``f_gen`` differs from the held-out real ``f_held``.

    ``f_base``: the real baseline set (real training stamps), ``names``: one per
    column (:func:`galearn.morphometry.morphometry_names`). Returns

    * ``features``: the ``n_top`` columns with the largest generated mean
      shift, in units of the held-out stamps' standard deviation, with the
      generated spread as a fraction of theirs, beside the same for the baseline;
    * ``without_group``: precision and recall (``k``-NN, as ``realism_metrics``)
      with one group of columns (:data:`galearn.morphometry.MORPHOMETRY_GROUPS`)
      left out, beside the real baseline's recall without it;
    * ``limiting_group``: the group whose removal raises the generated recall
      the most beyond what it does to the baseline's, when that excess
      (``recall_gain``) is at least ``min_gain`` (else None).

    A diagnosis, not a score: leaving a group out is not how the library is judged.
    """
    from ..evaluate.realism import precision_recall

    names = [str(n) for n in names]
    if f_gen.shape[1] != len(names):
        raise ValueError(f"{len(names)} names for {f_gen.shape[1]} columns")
    sd = f_held.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    shift = (f_gen.mean(axis=0) - f_held.mean(axis=0)) / sd
    base_shift = (f_base.mean(axis=0) - f_held.mean(axis=0)) / sd
    spread, base_spread = f_gen.std(axis=0) / sd, f_base.std(axis=0) / sd
    top = np.argsort(-np.abs(shift), kind="stable")[:n_top]
    out: dict = {"features": [{"name": names[j], "shift": float(shift[j]), "spread": float(spread[j]),
                               "shift_real_baseline": float(base_shift[j]), "spread_real_baseline": float(base_spread[j])}
                              for j in top]}
    _, recall = precision_recall(f_held, f_gen, k=k)
    without: dict = {}
    for group, mask in morphometry_groups(names).items():
        keep = ~mask
        if not mask.any() or not keep.any():
            continue
        p, r = precision_recall(f_held[:, keep], f_gen[:, keep], k=k)
        _, rb = precision_recall(f_held[:, keep], f_base[:, keep], k=k)
        without[group] = {"n_features": int(mask.sum()), "precision": p, "recall": r, "recall_real_baseline": rb}
    out["without_group"] = without
    # Fewer dimensions alone move a k-NN recall: a group counts by how much more the
    # generated recall rises without it than the real baseline's does.
    _, recall_base = precision_recall(f_held, f_base, k=k)
    excess = {g: (e["recall"] - recall) - (e["recall_real_baseline"] - recall_base) for g, e in without.items()}
    best = max(excess, key=excess.get, default=None)
    gain = excess[best] if best is not None else 0.0
    out["limiting_group"] = best if gain >= min_gain else None
    out["recall_gain"] = float(gain)
    return out


def standardise(reference: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """``arrays`` in units of ``reference``'s per-column scatter, about its mean (a constant column: unscaled)."""
    mu, sd = reference.mean(axis=0), reference.std(axis=0)
    sd = np.where(sd > 0, sd, 1.0)
    return tuple((a - mu) / sd for a in arrays)


def typical_distance(f_gen_draws: list[np.ndarray], f_held: np.ndarray, f_train: np.ndarray) -> dict:
    """How far the TYPICAL stamp lies from the real manifold: median Mahalanobis distances by the real training
    stamps' covariance.

    ``f_train``: all real training stamps (the covariance); ``f_held``: the
    held-out real stamps (out of sample, like the generated ones: the
    baseline); ``f_gen_draws``: the evaluation's draws of generated stamps,
    each matched to the held-out class mix. Returns ``heldout_median``,
    ``generated_median`` (mean over the draws of each draw's median), its
    ``generated_median_std`` over the draws and their ``ratio``. A per-stamp
    statistic, so it is steadier than an FID of ~120 stamps in 67 dimensions
    (docs/gan-experiments.md round 30); its whitening makes a combination the real stamps
    hold tight (e.g. a colour) count as much as one they spread along. Like
    precision it is one-sided: a generator of average stamps reads below 1,
    so read it beside recall.
    """
    f_train = np.asarray(f_train, dtype=np.float64)
    if len(f_train) <= f_train.shape[1]:
        raise ValueError(f"typical_distance: {len(f_train)} training stamps cannot fix a covariance in "
                         f"{f_train.shape[1]} dimensions")
    mean = f_train.mean(axis=0)
    precision = np.linalg.pinv(np.cov(f_train, rowvar=False), hermitian=True)

    def median(f: np.ndarray) -> float:
        d = np.asarray(f, dtype=np.float64) - mean
        return float(np.median(np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", d, precision, d), 0.0))))

    held = median(f_held)
    gen = np.array([median(f) for f in f_gen_draws])
    return {"heldout_median": held, "generated_median": float(gen.mean()),
            "generated_median_std": float(gen.std(ddof=1)) if len(gen) > 1 else 0.0,
            "ratio": float(gen.mean() / held) if held > 0 else float("nan"),
            "covariance": f"{len(f_train)} real training stamps"}


def untargeted_realism(f_gen: np.ndarray, f_held: np.ndarray, f_base: np.ndarray, names: list[str],
                       groups: list[str], *, random_state: int = 0, k: int = 3) -> dict:
    """:func:`realism_metrics` in the morphometry space with ``groups`` (those G's loss matched) left out.

    The statistics a G-loss term matches to the real stamps (the power
    spectrum, the pixel-value distribution) are columns of the morphometry
    space, so the headline FID / precision / recall are partly the generator's
    own targets; these numbers are not, and the realism verdict's
    full-quality grade needs them too.
    """
    masks = morphometry_groups([str(n) for n in names])
    unknown = [g for g in groups if g not in masks]
    if unknown:
        raise ValueError(f"no morphometry group {unknown}; groups are {sorted(masks)}")
    keep = ~np.any([masks[g] for g in groups], axis=0)
    out = {k: v for k, v in realism_metrics(f_gen[:, keep], f_held[:, keep], f_base[:, keep],
                                            random_state=random_state, k=k).items() if k != "n"}
    out["groups_left_out"] = list(groups)
    out["dim"] = int(keep.sum())
    return out


def sky_comparison(sets: dict[str, np.ndarray], stretch: dict | None, bands: list[str]) -> dict:
    """Each set's own skies (:func:`~galearn.gan.sky.sky_per_stamp`) summarised per band: the median and the
    5-95 % range over its stamps of the ring level and sigma (the stretch's linear units; x 255 for 8-bit
    levels) and the mean fraction of pixels at black. A generator that paints structure or a dark sky under
    the measured noise shows as a sigma above the real one, a wider level range, more black pixels; a sky drawn
    independently per band where the real one is grey shows in ``band_correlation`` (the pixel-scale noise's
    correlation between each pair of bands, :func:`~galearn.gan.sky.measure_sky_band_correlation`)."""
    from .sky import measure_sky_band_correlation, sky_per_stamp

    out: dict = {"bands": [str(b) for b in bands],
                 "what": "per stamp: outer-ring sky level and sigma (censored normal, stretch's linear units), "
                         "fraction of pixels at or below 0; over stamps: median and 5 / 95 % quantiles per band"}
    for key, stretched in sets.items():
        if len(stretched) == 0:
            continue
        per = sky_per_stamp(stretched, stretch)
        out[key] = {"level": np.quantile(per["level"], [0.05, 0.5, 0.95], axis=0).T.tolist(),
                    "sigma": np.quantile(per["sigma"], [0.05, 0.5, 0.95], axis=0).T.tolist(),
                    "clipped_fraction": per["clipped"].mean(axis=0).tolist(), "n": int(len(stretched))}
        rho = measure_sky_band_correlation(stretched, stretch)
        out[key]["band_correlation"] = {f"{bands[i]}-{bands[j]}": round(float(rho[i, j]), 4)
                                        for i in range(len(bands)) for j in range(i + 1, len(bands))}
    return out


def physical_stamps(stamps_file: Sample, rows: np.ndarray, *, subtract_background: bool = False) -> np.ndarray:
    """``stamps_file``'s physical stamps ``rows``, with the border median subtracted when asked
    (:func:`~galearn.imaging.subtract_border_background`)."""
    x = stamps_file.read("physical", rows)
    return subtract_border_background(x) if subtract_background else x


def morphology_noise_sigma(sample: Sample, rng: np.random.Generator, n: int = 256, *,
                           subtract_background: bool = False) -> np.ndarray:
    """Per-band sky noise sigma (physical units) given to statmorph: :func:`~galearn.imaging.robust_noise` of ``n`` random real stamps."""
    from ..imaging import robust_noise

    rows = np.sort(rng.permutation(sample.n)[: min(sample.n, n)])
    phys = physical_stamps(sample, rows, subtract_background=subtract_background)
    return np.array([robust_noise(phys[:, b]) for b in range(phys.shape[1])])


def morphology_ratio(heldout, generated, train) -> float:
    """``W(heldout, generated) / W(heldout, train)`` of statmorph tables (:func:`~galearn.morphology.morphology_wasserstein`); NaN when not finite."""
    from ..morphology import morphology_wasserstein

    num, den = morphology_wasserstein(heldout, generated)[0], morphology_wasserstein(heldout, train)[0]
    return num / den if np.isfinite(num) and np.isfinite(den) and den > 0 else float("nan")


def morphology_ratio_interval(heldout, generated, train, *, n_boot: int = 200, random_state: int = 0) -> list | None:
    """``ratio -+ sd``: ``W(heldout, generated) / W(heldout, train)`` minus and plus its bootstrap standard deviation.

    The statmorph sets are small (``gan.eval_morphology_n``): the interval is
    the ratio's sampling noise, quoted beside it so that a single draw is not
    read as a pass or a fail. Each resample redraws all three measured tables
    with replacement. Centred on the ratio itself, not the bootstrap
    percentiles: resampling with replacement pulls the ratio towards 1, so
    percentiles sit low, while the bootstrap standard deviation matched the
    spread of the ratio over fresh 40-stamp draws (0.35 vs 0.35 and 0.43 vs
    0.52 on two mock libraries, docs/gan-experiments.md round 6). None when the ratio or
    fewer than 20 resamples are finite.
    """
    centre = morphology_ratio(heldout, generated, train)
    rng = np.random.default_rng(random_state)
    boot = np.array([morphology_ratio(*(tab[rng.integers(0, len(tab), len(tab))] for tab in (heldout, generated, train)))
                     for _ in range(n_boot)])
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(centre) or len(boot) < 20:
        return None
    sd = float(boot.std(ddof=1))
    return [max(0.0, centre - sd), centre + sd]


def balancing_metrics(f_train: np.ndarray, y_train: np.ndarray, f_test: np.ndarray, y_test: np.ndarray,
                      f_gen: np.ndarray, y_gen: np.ndarray, *, minority_fraction: float = 0.1,
                      n_repeats: int = 10, random_state: int = 0) -> dict:
    """Does adding generated minority stamps help a classifier trained on an imbalanced set?

    The smallest class of ``y_train`` (the first of equal ones) is cut
    (seeded) to ``minority_fraction`` of the largest; a standardised
    logistic regression is trained on that set alone (``real_only``), on it
    with class weights inversely proportional to the class counts
    (``reweighted``: the usual remedy without a generator),
    and on it with generated stamps of the minority class added up to the
    majority count (``with_gan``); each is scored by balanced accuracy on
    ``(f_test, y_test)``. The cut and the generated stamps drawn are repeated
    ``n_repeats`` times with different seeds, and the headline numbers are the
    means (one draw of a few real minority stamps decides a lot); the paired
    differences and their standard errors say whether the gain is more than
    the draw.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.pipeline import make_pipeline

    from ..evaluate.agreement import MAX_COMPONENTS
    from ..maps.reduce import make_reducer, pca_dimension

    classes, counts = np.unique(y_train, return_counts=True)
    if len(classes) < 2 or len(np.unique(y_test)) < 2:
        return {"skipped": "needs at least two classes in the training and test sets"}
    if n_repeats < 1:
        raise BadValueError(f"balancing n_repeats must be >= 1, got {n_repeats}")
    # The smallest class is cut (the first of equal ones); the majority is the largest of the others.
    minority = classes[np.argmin(counts)]
    others_counts = np.where(classes == minority, -1, counts)
    majority = classes[np.argmax(others_counts)]
    n_major = int(counts.max())
    n_keep = max(2, int(np.ceil(minority_fraction * n_major)))
    minority_idx = np.flatnonzero(y_train == minority)
    others = np.flatnonzero(y_train != minority)
    gen_pool = np.flatnonzero(y_gen == minority)

    def fit_score(Xt, yt, class_weight=None) -> float:
        # the classifier of `linear_balanced_accuracy`: standardise, PCA to <= 50 dimensions, logistic regression
        reducer = make_reducer(pca_dimension(Xt.shape[1], len(Xt), MAX_COMPONENTS), random_state)
        clf = make_pipeline(reducer, LogisticRegression(max_iter=2000, class_weight=class_weight, random_state=random_state))
        clf.fit(Xt, yt)
        return float(balanced_accuracy_score(y_test, clf.predict(f_test)))

    scores: dict[str, list[float]] = {"real_only": [], "reweighted": [], "with_gan": []}
    n_add = 0
    for r in range(int(n_repeats)):
        rng = np.random.default_rng([int(random_state), 303, r])
        kept_minority = minority_idx[rng.permutation(len(minority_idx))[: min(n_keep, len(minority_idx))]]
        keep = np.sort(np.concatenate([others, kept_minority]))
        X, y = f_train[keep], y_train[keep]
        add = gen_pool[rng.permutation(len(gen_pool))[: max(0, n_major - len(kept_minority))]]
        n_add = len(add)
        scores["real_only"].append(fit_score(X, y))
        scores["reweighted"].append(fit_score(X, y, class_weight="balanced"))
        scores["with_gan"].append(fit_score(np.concatenate([X, f_gen[add]]), np.concatenate([y, y_gen[add]])))

    arr = {k: np.asarray(v) for k, v in scores.items()}

    def paired(a: np.ndarray, b: np.ndarray) -> dict:
        d = a - b
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else None
        return {"mean": float(d.mean()), "standard_error": se, "fraction_of_repeats_better": float(np.mean(d > 0))}

    return {
        "balanced_accuracy_real_only": float(arr["real_only"].mean()),
        "balanced_accuracy_with_gan": float(arr["with_gan"].mean()),
        "balanced_accuracy_reweighted": float(arr["reweighted"].mean()),
        "std_over_repeats": {k: float(v.std(ddof=1)) if len(v) > 1 else 0.0 for k, v in arr.items()},
        "gain_with_gan_over_real_only": paired(arr["with_gan"], arr["real_only"]),
        "gain_with_gan_over_reweighted": paired(arr["with_gan"], arr["reweighted"]),
        "per_repeat": {k: [round(float(x), 4) for x in v] for k, v in arr.items()},
        "n_repeats": int(n_repeats),
        "minority_class": str(minority),
        "majority_class": str(majority),
        "n_train_majority": n_major,
        "n_train_minority_real": int(min(n_keep, len(minority_idx))),
        "n_train_minority_generated": int(n_add),
        "n_test": int(len(y_test)),
        "n_test_per_class": {str(c): int((y_test == c).sum()) for c in np.unique(y_test)},
        "classifier": "StandardScaler + PCA (<= 50) + LogisticRegression (lbfgs) on backbone features",
        "minority_fraction": minority_fraction,
    }


class _FeatureSource:
    """Features of stamps of one file: from the workspace's feature file when it matches, else computed."""

    def __init__(self, sample: Sample, path, compute: FeatureFn, expect: dict | None = None) -> None:
        self.sample = sample
        self.compute = compute
        self.cached = None
        if path is not None and path.exists():
            feats = read_features(path)
            same_space = all(feats.attrs.get(k) == v for k, v in (expect or {}).items())
            if feats.attrs.get("sample_checksum") == sample.checksum and len(feats.values) == sample.n and same_space:
                self.cached = feats.values
            else:
                log.info("%s is not for %s: computing features", path, sample.path)

    def __call__(self, idx: np.ndarray) -> np.ndarray:
        idx = np.asarray(idx, dtype=np.int64)
        if self.cached is not None:
            return self.cached[idx].astype("f8")
        out = np.zeros((len(idx), 0))
        if len(idx):
            uniq, inv = np.unique(idx, return_inverse=True)
            of_rows = getattr(self.compute, "of_rows", None)
            if of_rows is not None:  # partitions through galearn.compute, the backbone loaded once per worker
                out = np.asarray(of_rows(self.sample, uniq), dtype="f8")[inv]
            else:
                out = np.asarray(self.compute(self.sample.read("stretched", uniq)), dtype="f8")[inv]
        return out


def _backbone_feature_fn(ws: Workspace, bands: list[str], *, name: str | None = None) -> tuple[str, FeatureFn, dict]:
    """The feature space of the run: the active feature file named in the manifest, with its own settings."""
    from ..features.extract import DEFAULT_INPUT_SIZE, check_scales

    entry = read_manifest(ws).get("features") or {}
    # Realism is measured in the CNN's own feature space: with fused features
    # (``--fuse``) that is the plain CNN file kept beside the fused one.
    name = name or entry.get("cnn_backbone") or entry.get("backbone") or resolve_backbone(ws)
    made_with = entry.get("settings") or {}
    settings = {"tta": made_with.get("tta", True), "input_size": DEFAULT_INPUT_SIZE,
                "layers": list(made_with.get("layers") or ()),
                "scales": list(check_scales(made_with.get("scales") or ()))}
    real_path = ws.features(name)
    if real_path.exists():  # the sample's feature file fixes the feature space
        attrs = read_features(real_path).attrs
        attrs.setdefault("scales", [1.0])  # files from before scales existed: the whole stamp
        settings = {key: attrs.get(key, value) for key, value in settings.items()}
    weights = made_with.get("weights")
    device = made_with.get("device")
    batch_size = int(made_with.get("batch_size") or 64)
    seed = int(made_with.get("random_state") or 0)
    state: dict = {}

    def fn(stretched: np.ndarray) -> np.ndarray:
        import torch

        from ..features import extract_features, load_backbone

        if "backbone" not in state:
            torch.manual_seed(seed)
            state["backbone"] = load_backbone(name, weights=weights, workspace=ws, device=device,
                                              layers=tuple(settings["layers"] or ()) or None, random_state=seed)
        return extract_features(stretched, bands, state["backbone"], batch_size=batch_size,
                                tta=settings["tta"], input_size=settings["input_size"],
                                scales=tuple(settings["scales"]), progress=False)

    spec = {"name": name, "weights": weights, "workspace": str(ws.root), "device": device,
            "layers": tuple(settings["layers"] or ()) or None, "random_state": seed}

    def of_rows(stamps_file: Sample, rows: np.ndarray) -> np.ndarray:
        from ..features.extract import features_of_rows

        return features_of_rows(stamps_file.path, rows, spec, tta=settings["tta"], input_size=settings["input_size"],
                                scales=tuple(settings["scales"]), batch_size=batch_size,
                                stage="gan_evaluate_features")

    fn.of_rows = of_rows  # the same features, computed in partitions (galearn.compute) by _FeatureSource
    return name, fn, settings


def run_evaluate(ws: Workspace, cfg: GanEvaluateConfig | GanConfig | RunConfig, *, feature_fn: FeatureFn | None = None, progress: bool | None = None) -> dict:
    """Realism + balancing metrics of ``WS/library.h5``; merged into metrics.json key ``gan``.

    Parameters
    ----------
    ws : Workspace
        Reads ``sample.h5``, ``library.h5``, ``gan/split.json``, ``gan/ckpt-*.pt``
        and the feature files when present; writes ``gan/morphology.ecsv`` and
        ``report/metrics.json``.
    cfg : GanEvaluateConfig (or GanConfig / RunConfig, of which only that part is read)
        ``eval_morphology_n``, ``eval_max_n``, ``balancing_repeats``, ``realism_draws``, ``random_state``.
    feature_fn : callable, optional
        ``stretched (N, C, H, W) -> features (N, D)``; default: the feature space
        of the active feature file (``WS/manifest.json`` ``features``: backbone,
        weights, device; TTA, input size, layers and scales from the file).
        Feature files in the workspace are used only with the default.

    Returns
    -------
    dict
        The ``gan`` metrics (see the module docstring).
    """
    from ..morphology import morphology_wasserstein, statistic_histograms
    from ..evaluate.realism import (NearestTraining, data_copying_statistic, memorised_fraction,
                                    memorised_fraction_from, memorised_fraction_pixels, nearest_training_distances)

    t0 = time.perf_counter()
    gcfg = step_config(cfg, GanEvaluateConfig)
    seed = gcfg.random_state
    sample = open_sample(ws.require(ws.sample, "cutouts"))
    library = open_sample(ws.require(ws.library, "gan sample"))
    check_made_from(library.path, library_sample_checksum(library), sample,
                    f"galearn gan train --workspace {ws.root}` and `galearn gan sample --workspace {ws.root}")
    split = read_split(ws)
    if split["sample_checksum"] != sample.checksum:
        raise BadValueError(f"{sample.path} changed since `galearn gan train` made {ws.gan_split}: train again")
    condition = split["condition"]
    _, labels = gan_condition(sample, condition, split["redshift_edges"])
    if condition not in library.catalog.colnames:
        raise BadValueError(f"{library.path} has no column {condition!r}: run `galearn gan sample` again")
    lib_labels = np.asarray(library.catalog[condition]).astype(str)
    classes = split["classes"]
    rng = np.random.default_rng([int(seed), 909])

    if feature_fn is None:
        backbone, fn, feat_settings = _backbone_feature_fn(ws, sample.bands)
        real_feats = _FeatureSource(sample, ws.features(backbone), fn)
        lib_feats = _FeatureSource(library, ws.features(backbone, library=True), fn, expect=feat_settings)
    else:
        backbone, feat_settings = "custom", {}
        real_feats = _FeatureSource(sample, None, feature_fn)
        lib_feats = _FeatureSource(library, None, feature_fn)
    trained = _trained_with(ws)
    space = check_realism_space(getattr(gcfg, "realism_space", MORPHOMETRY), trained, backbone)
    if space == MORPHOMETRY:
        def space_fn(stretched: np.ndarray) -> np.ndarray:
            return morphometry_features(stretched, sample.bands)
        real_space, lib_space, space_settings = _FeatureSource(sample, None, space_fn), _FeatureSource(library, None, space_fn), {}
    elif space == SELF_SUPERVISED:  # learnt below, once the baseline's rows are drawn
        real_space = lib_space = None
    elif space == backbone:
        real_space, lib_space, space_settings = real_feats, lib_feats, feat_settings
    else:
        _, space_fn, space_settings = _backbone_feature_fn(ws, sample.bands, name=space)
        real_space = _FeatureSource(sample, ws.features(space), space_fn)
        lib_space = _FeatureSource(library, ws.features(space, library=True), space_fn, expect=space_settings)

    # -- the three equal-sized sets H (held out), T (train), G (generated)
    heldout, train = split["heldout"], split["train"]
    held_counts = capped_counts({c: int((labels[heldout] == c).sum()) for c in classes}, gcfg.eval_max_n)
    lib_pool = np.arange(library.n)
    counts = {c: min(n, int((labels[train] == c).sum()), int((lib_labels == c).sum())) for c, n in held_counts.items()}
    if sum(counts.values()) < 5:
        raise BadValueError(f"too few stamps to evaluate: held-out/train/library class counts {counts}")
    idx_H = stratified_like(labels, heldout, counts, rng)
    idx_T = stratified_like(labels, train, counts, rng)
    idx_G = stratified_like(lib_labels, lib_pool, counts, rng)
    # Further draws of T and G for the realism numbers (H is fixed): one draw of 120 stamps in a 67-number space
    # moves the FID ratio by 2x (docs/gan-experiments.md round 29). They have a generator of their own, so draw 0 and every
    # other set are those of a one-draw evaluation.
    rng_draws = np.random.default_rng([int(seed), 910])
    draws = [(idx_T, idx_G)] + [(stratified_like(labels, train, counts, rng_draws),
                                 stratified_like(lib_labels, lib_pool, counts, rng_draws))
                                for _ in range(gcfg.realism_draws - 1)]
    idx_G_all = np.unique(np.concatenate([g for _, g in draws]))
    space_draws = draws
    if space == SELF_SUPERVISED:
        # SimCLR learns to tell its own training stamps apart, which can set them off from the held-out ones (raw
        # features: FID 0.40 against 0.27 for unseen rows, round 52; encoders on all training rows: a baseline of
        # those rows 27-29 % farther at three seeds of four, round 53; docs/gan-experiments.md). So the encoders
        # learn from half the training rows and the baseline's draws come from the other half, unseen like H and G.
        from .realism_encoder import realism_encoder_features

        n_train = {c: int((labels[train] == c).sum()) for c in counts}
        unseen = stratified_like(labels, train, {c: min(n_train[c], max(n, -(-n_train[c] // 2))) for c, n in counts.items()},
                                 np.random.default_rng([int(seed), 914]))
        space_fn, space_settings = realism_encoder_features(ws, sample, np.setdiff1d(train, unseen), random_state=seed,
                                                            progress=progress is not False)
        space_settings["baseline_pool_n"] = int(len(unseen))  # the training rows the encoder never learns from
        real_space, lib_space = _FeatureSource(sample, None, space_fn), _FeatureSource(library, None, space_fn)
        rng_unseen = np.random.default_rng([int(seed), 915])
        space_draws = [(stratified_like(labels, unseen, counts, rng_unseen), g) for _, g in draws]

    # Balancing needs generated minority stamps, up to the majority training count.
    train_counts = {c: int((labels[train] == c).sum()) for c in classes}
    minority = min(train_counts, key=train_counts.get)
    gen_minority = lib_pool[lib_labels == minority][: max(train_counts.values())]
    lib_needed = np.union1d(idx_G_all, gen_minority)
    real_needed = np.union1d(np.union1d(idx_H, train), split["balanced_test"])

    f_real_all = real_feats(real_needed)
    f_lib_all = lib_feats(lib_needed)
    pos_real = {int(i): k for k, i in enumerate(real_needed)}
    pos_lib = {int(i): k for k, i in enumerate(lib_needed)}

    def fr(idx: np.ndarray) -> np.ndarray:
        return f_real_all[[pos_real[int(i)] for i in idx]]

    def fl(idx: np.ndarray) -> np.ndarray:
        return f_lib_all[[pos_lib[int(i)] for i in idx]]

    f_H, f_train = fr(idx_H), fr(train)
    metrics: dict = {"condition": condition, "classes": classes, "backbone": backbone, "feature_settings": feat_settings}
    if split["redshift_edges"]:
        metrics["redshift_edges"] = list(split["redshift_edges"])
    ckpt_steps = np.unique(np.asarray(library.catalog["checkpoint_step"])) if "checkpoint_step" in library.catalog.colnames else []
    metrics["steps"] = int(ckpt_steps[-1]) if len(ckpt_steps) else None
    metrics["discriminator"] = trained.get("discriminator", "sngan")
    metrics["d_feature_network"] = trained.get("d_backbone") if metrics["discriminator"] == "projected" else None
    metrics["sky_noise"] = trained.get("sky_noise")  # the sky model trained with (gan.sky_noise = auto resolved)
    metrics["diffaugment"] = trained.get("diffaugment")  # D's augmentation trained with (gan.diffaugment = auto resolved)
    metrics["trained_on"] = trained.get("trained_on")  # torch build and processor (runtime.machine_description)

    # -- realism in a space the discriminator did not look through (gan.realism_space)
    if real_space is real_feats:
        s_real, s_lib, spos_real, spos_lib = f_real_all, f_lib_all, pos_real, pos_lib
    else:
        real_space_idx = np.union1d(idx_H, train)
        s_real, s_lib = real_space(real_space_idx), lib_space(idx_G_all)
        spos_real = {int(i): k for k, i in enumerate(real_space_idx)}
        spos_lib = {int(i): k for k, i in enumerate(idx_G_all)}
    if space == MORPHOMETRY:  # standardise with the real training stamps' statistics
        s_real, s_lib = standardise(s_real[[spos_real[int(i)] for i in train]], s_real, s_lib)

    def sr(idx: np.ndarray) -> np.ndarray:
        return s_real[[spos_real[int(i)] for i in idx]]

    def sl(idx: np.ndarray) -> np.ndarray:
        return s_lib[[spos_lib[int(i)] for i in idx]]

    metrics["realism_space"] = space
    metrics["realism_space_settings"] = (
        {"features": "morphometry_features (galearn.morphometry), standardised by the real training stamps",
         "dim": int(s_real.shape[1])} if space == MORPHOMETRY else space_settings)
    s_H, s_T, s_G, s_train = sr(idx_H), sr(idx_T), sl(idx_G), sr(train)
    overall = mean_over_draws([realism_metrics(sl(g), s_H, sr(t), random_state=seed) for t, g in space_draws])
    metrics.update({k: v for k, v in overall.items() if k != "n"})
    metrics["n_eval"] = int(len(idx_H))
    # Copies are counted among every generated stamp of the draws (~10x one draw's: a stamp is 0.1 %, not 0.8 %).
    s_G_all = sl(idx_G_all)
    nearest = nearest_training_distances(s_G_all, s_train, s_H)  # searched once for both tests
    metrics["memorised_fraction"], metrics["memorised_threshold"] = memorised_fraction_from(nearest)
    metrics["memorised_n"] = int(len(idx_G_all))
    metrics["memorised_threshold_real_n"] = int(len(nearest.heldout) + len(nearest.train))  # held-out + training rows
    # Near a training stamp is not copied: a stamp in the densest part of the real distribution is near one too.
    metrics["data_copying"] = data_copying_statistic(s_G_all, s_train, s_H, random_state=seed, nearest=nearest)
    # The same test in pixel space (any of 8 rotations / flips), where no feature space can hide a copy; it flags
    # stamps crowded next to a training stamp too, copies or not (docs/gan-experiments.md round 21).
    copy_train = np.sort(train if len(train) <= COPY_CHECK_MAX_TRAIN
                         else np.random.default_rng([int(seed), 911]).choice(train, COPY_CHECK_MAX_TRAIN, replace=False))

    train_chunks = (sample.read("stretched", copy_train[i:i + 256]) for i in range(0, len(copy_train), 256))
    stretched_G_all, stretched_H = library.read("stretched", idx_G_all), sample.read("stretched", np.sort(idx_H))
    stretched_G = stretched_G_all[np.searchsorted(idx_G_all, np.sort(idx_G))]  # the first draw's, from the same read
    # the real distances of the threshold: the held-out stamps' and (at most COPY_CHECK_LEFT_OUT) training stamps'
    # own, each to its nearest other training stamp
    left_out = (np.arange(len(copy_train)) if len(copy_train) <= COPY_CHECK_LEFT_OUT else
                np.sort(np.random.default_rng([int(seed), 913]).choice(len(copy_train), COPY_CHECK_LEFT_OUT, replace=False)))
    metrics["memorised_fraction_pixels"], metrics["memorised_threshold_pixels"] = memorised_fraction_pixels(
        stretched_G_all, stretched_H, train_chunks,
        train_left_out=(sample.read("stretched", copy_train[left_out]), left_out))
    metrics["memorised_pixels_train_n"] = int(len(copy_train))
    metrics["memorised_pixels_threshold_real_n"] = int(len(stretched_H) + len(left_out))
    metrics["sky"] = sky_comparison({"real_heldout": stretched_H, "real_train": sample.read("stretched", np.sort(idx_T)),
                                     "generated": stretched_G}, sample.stretch, sample.bands)
    # The same numbers in the backbone's space, for comparison (a projected D may game it: Kynkäänniemi et al. 2023).
    if space != backbone:
        bspace = {k: v for k, v in mean_over_draws([realism_metrics(fl(g), f_H, fr(t), random_state=seed)
                                                     for t, g in draws]).items() if k != "n"}
        bspace["memorised_fraction"], _ = memorised_fraction(fl(idx_G_all), f_train, f_H)
        bspace["name"] = backbone
        bspace["discriminator_looked_through_it"] = bool(metrics["d_feature_network"] == backbone)
        metrics["backbone_space"] = bspace

    if space == MORPHOMETRY:
        names = morphometry_names(len(sample.bands), sample.bands)
        metrics["realism_diagnosis"] = realism_diagnosis(s_G, s_H, s_T, names)
        if len(s_train) > s_train.shape[1]:  # else too few training stamps to fix the covariance: not reported
            metrics["typical_distance"] = typical_distance([sl(g) for _, g in draws], s_H, s_train)
        targeted = targeted_morphometry_groups(trained)
        if targeted:
            metrics["realism_untargeted"] = mean_over_draws([untargeted_realism(sl(g), s_H, sr(t), names, targeted,
                                                                                random_state=seed) for t, g in draws])

    per_class: dict = {}
    for c in classes:
        in_h, in_g = labels[idx_H] == c, lib_labels[idx_G_all] == c
        entry = mean_over_draws([realism_metrics(sl(gd[lib_labels[gd] == c]), sr(idx_H[in_h]), sr(td[labels[td] == c]),
                                                 random_state=seed) for td, gd in space_draws])
        if in_g.any() and in_h.any():  # the class's rows of the nearest-training distances searched above
            in_t = labels[train[nearest.train_index]] == c
            entry["memorised_fraction"], _ = memorised_fraction_from(NearestTraining(
                nearest.generated[in_g], nearest.heldout[in_h], nearest.train[in_t], nearest.train_index[in_t]))
        per_class[c] = entry

    # -- Holzschuh et al. 2022: power spectrum, per-band flux and colour distributions (physical stamps, all eval stamps)
    # Display images: statmorph flags a stamp whose sky sits on a pedestal "bad" (sky mean above its sigma).
    bkg = sample.display_images
    metrics["physical_background"] = "border median subtracted per stamp (ingested images)" if bkg else "as stored"
    eval_rows = {"real_heldout": idx_H, "real_train": idx_T, "generated": idx_G}
    eval_phys = {key: physical_stamps(library if key == "generated" else sample, rows, subtract_background=bkg)
                 for key, rows in eval_rows.items()}
    phot = {key: photometry_statistics(x, sample.bands) for key, x in eval_phys.items()}
    cls_of = {key: (lib_labels if key == "generated" else labels)[rows] for key, rows in eval_rows.items()}
    for group, prefix in PHOTOMETRY_GROUPS.items():
        metrics[f"{group}_wasserstein"], per_g = group_wasserstein(phot["real_heldout"], phot["generated"], prefix)
        metrics[f"{group}_wasserstein_real_baseline"], per_b = group_wasserstein(phot["real_heldout"], phot["real_train"], prefix)
        metrics.setdefault("photometry_per_statistic", {}).update(
            {k: {"generated": per_g.get(k), "real_baseline": per_b.get(k)} for k in sorted(set(per_g) | set(per_b))})
        for c in classes:
            sel = {k: t[cls_of[k] == c] for k, t in phot.items()}
            per_class[c][f"{group}_wasserstein"], _ = group_wasserstein(sel["real_heldout"], sel["generated"], prefix)
            per_class[c][f"{group}_wasserstein_real_baseline"], _ = group_wasserstein(sel["real_heldout"], sel["real_train"], prefix)
    # Orientations of the generated stamps of every realism draw (up to realism_draws x the held-out size), not only
    # the first draw's: an isotropic library of 600 read resultants of 0.20-0.27 on one draw's 120 (docs/gan-experiments.md round 40).
    phot_angles, cls_angles = dict(phot), dict(cls_of)
    if len(idx_G_all) > len(idx_G):
        phot_angles["generated"] = photometry_statistics(physical_stamps(library, idx_G_all, subtract_background=bkg), sample.bands)
        cls_angles["generated"] = lib_labels[idx_G_all]
    metrics["orientation"] = orientation_metrics(phot_angles, cls_angles, classes)
    for c in classes:
        per_class[c]["orientation_resultant"] = {k: v["per_class"][c]["resultant"] for k, v in metrics["orientation"]["sets"].items()}
    metrics["power_spectrum_mean"] = {k: np.mean([np.asarray(t[n]) for n in t.colnames if n.startswith("power_")], axis=1).tolist()
                                      for k, t in (("real", phot["real_heldout"]), ("real_train", phot["real_train"]),
                                                   ("generated", phot["generated"]))}

    # -- morphology on physical stamps (seeded subsets of the same sets)
    n_morph = int(gcfg.eval_morphology_n)
    morph_sets = {}
    if n_morph > 0:
        frac = min(1.0, n_morph / max(1, len(idx_H)))
        mcounts = {c: max(1, int(round(n * frac))) for c, n in counts.items() if n > 0}
        m_idx = {
            "real_heldout": stratified_like(labels, idx_H, mcounts, rng),
            "real_train": stratified_like(labels, idx_T, mcounts, rng),
            "generated": stratified_like(lib_labels, idx_G, mcounts, rng),
        }
        noise = morphology_noise_sigma(sample, rng, subtract_background=bkg)
        # All three sets in one parallel pass (better load balance than one pass per set).
        # The statmorph subsets are rows of the (sorted) evaluation sets read above.
        stacked = np.concatenate([eval_phys[key][np.searchsorted(eval_rows[key], idx)] for key, idx in m_idx.items()])
        del eval_phys
        current_session().stages.pop("morphology", None)
        measured = measure_morphology_parallel(stacked, sample.bands, noise_sigma=noise, progress=progress)
        if "morphology" in current_session().stages:  # ran in partitions on a cluster
            current_session().stages["gan_evaluate_statmorph"] = current_session().stages.pop("morphology")
        offset = 0
        for key, idx in m_idx.items():
            lab = lib_labels if key == "generated" else labels
            table = measured[offset: offset + len(idx)]
            table.meta = dict(measured.meta)
            offset += len(idx)
            table.add_column(np.asarray(lab[idx], dtype=str), name="class", index=0)
            table.add_column(np.full(len(idx), key), name="set", index=0)
            table.add_column(np.asarray(idx, dtype=np.int64), name="index", index=1)
            morph_sets[key] = table
        m_gen, per_stat_gen = morphology_wasserstein(morph_sets["real_heldout"], morph_sets["generated"])
        m_base, per_stat_base = morphology_wasserstein(morph_sets["real_heldout"], morph_sets["real_train"])
        metrics["morphology_wasserstein"] = m_gen
        metrics["morphology_wasserstein_real_baseline"] = m_base
        metrics["morphology_wasserstein_ratio_interval"] = morphology_ratio_interval(
            morph_sets["real_heldout"], morph_sets["generated"], morph_sets["real_train"], random_state=seed)
        metrics["morphology_per_statistic"] = {
            s: {"generated": per_stat_gen.get(s), "real_baseline": per_stat_base.get(s)}
            for s in sorted(set(per_stat_gen) | set(per_stat_base))
        }
        metrics["morphology_n"] = {k: int(len(t)) for k, t in morph_sets.items()}
        metrics["morphology_failed_fraction"] = {k: float(np.mean(~np.asarray(t["ok"]))) for k, t in morph_sets.items()}
        metrics["morphology_stats"] = statistic_histograms(
            {"real": morph_sets["real_heldout"], "real_train": morph_sets["real_train"], "generated": morph_sets["generated"]},
            reference="real",
        )
        for c in classes:
            sel = {k: t[np.asarray(t["class"]) == c] for k, t in morph_sets.items()}
            per_class[c]["morphology_wasserstein"], _ = morphology_wasserstein(sel["real_heldout"], sel["generated"])
            per_class[c]["morphology_wasserstein_real_baseline"], _ = morphology_wasserstein(sel["real_heldout"], sel["real_train"])
        all_rows = vstack([morph_sets[k] for k in ("real_heldout", "real_train", "generated")], metadata_conflicts="silent")
        all_rows.meta["description"] = ("statmorph statistics + colours per stamp; set: real_heldout / real_train / "
                                        "generated; index: row in sample.h5 (real) or library.h5 (generated)")
        write_table(ws.gan_morphology, all_rows)
    metrics["per_class"] = per_class
    for key, entry in [("", metrics), *[(c, per_class[c]) for c in classes]]:
        entry["holzschuh_wasserstein"], entry["holzschuh_wasserstein_real_baseline"] = _holzschuh(entry)

    # -- balancing
    test = split["balanced_test"]
    y_train, y_test = labels[train], labels[test]
    metrics["balancing"] = balancing_metrics(f_train, y_train, fr(test), y_test, fl(gen_minority),
                                             lib_labels[gen_minority], random_state=seed,
                                             n_repeats=int(gcfg.balancing_repeats))
    metrics["far_from_real"], metrics["verdict"] = realism_verdict(metrics)
    metrics["seconds"] = round(time.perf_counter() - t0, 2)
    metrics = _json_safe(metrics)
    update_metrics(ws.metrics, {"gan": metrics}, replace=("gan",))
    record_compute(ws, current_session().provenance("gan_evaluate_features", "gan_evaluate_statmorph"))
    return metrics


PHOTOMETRY_GROUPS = {"power_spectrum": "power_", "flux": "flux_", "colour": "colour_"}


#: Rayleigh p-value below which a set's orientations are called anisotropic.
ORIENTATION_ALPHA = 1e-3


def orientation_metrics(phot: dict, cls_of: dict, classes: list[str], *,
                        min_ellipticity: float = MIN_ELLIPTICITY_FOR_ANGLE) -> dict:
    """Are the position angles of each evaluation set's elongated stamps isotropic, within each condition class?

    Galaxies on the sky point every way; D's flips and 90-degree turns cannot
    ask G for that, and a G whose discs all lean one way passes the morphology
    and morphometry figures (nearly rotation-invariant). Per set (``phot``:
    :func:`~galearn.morphometry.photometry_statistics` tables with
    ``ellipticity`` and ``position_angle``; ``cls_of``: their class labels):
    per class :func:`~galearn.morphometry.orientation_isotropy`, then
    ``resultant`` (n-weighted mean over classes of the axial mean resultant
    length; 0 isotropic, 1 all parallel), ``isotropic_expectation`` (about
    what an isotropic set of those sizes gives), ``rayleigh_p`` (the classes'
    Rayleigh p-values combined, Fisher's method) and ``n``; ``histogram``: the
    angles of all classes in 15-degree bins (the report's morphology figure).
    """
    from scipy.stats import combine_pvalues

    edges = np.linspace(0.0, 180.0, 13)
    sets, hist = {}, {"edges": edges.tolist()}
    for key, t in phot.items():
        ell, angle = np.asarray(t["ellipticity"]), np.asarray(t["position_angle"])
        per = {c: orientation_isotropy(angle[cls_of[key] == c], ell[cls_of[key] == c], min_ellipticity=min_ellipticity)
               for c in classes}
        elongated = angle[ell >= min_ellipticity]  # the report names the held-out set "real", as morphology_stats does
        hist["real" if key == "real_heldout" else key] = {"counts": np.histogram(elongated, edges)[0].tolist(),
                                                          "n": int(len(elongated))}
        used = [v for v in per.values() if v["resultant"] is not None]
        n = sum(v["n"] for v in used)
        sets[key] = {
            "resultant": float(sum(v["n"] * v["resultant"] for v in used) / n) if n else None,
            "isotropic_expectation": float(sum(np.sqrt(np.pi * v["n"] / 4.0) for v in used) / n) if n else None,
            "rayleigh_p": float(combine_pvalues([max(v["rayleigh_p"], 1e-300) for v in used], method="fisher").pvalue)
            if used else None,
            "n": int(n), "per_class": per,
        }
    return {"min_ellipticity": float(min_ellipticity), "alpha": ORIENTATION_ALPHA,
            "what": "axial mean resultant length of the moment position angles of stamps with ellipticity >= "
                    "min_ellipticity, per condition class (0 = every direction, 1 = all parallel)",
            "sets": sets, "histogram": {f"position angle (deg; moments, e >= {min_ellipticity:g})": hist}}


def _orientation_statement(m: dict) -> str:
    """'' unless the generated stamps' orientations are anisotropic where the held-out real ones are not."""
    sets = (m.get("orientation") or {}).get("sets") or {}
    gen, real = sets.get("generated") or {}, sets.get("real_heldout") or {}
    if gen.get("rayleigh_p") is None or real.get("rayleigh_p") is None:
        return ""
    if gen["rayleigh_p"] >= ORIENTATION_ALPHA or real["rayleigh_p"] < ORIENTATION_ALPHA:
        return ""
    return (f"generated galaxies lean one way: orientation resultant {gen['resultant']:.2f} "
            f"(real {real['resultant']:.2f}, isotropic about {real['isotropic_expectation']:.2f})")


#: The generated skies are called unlike the real ones when their median per-stamp sigma exceeds the held-out
#: real one by this factor in some band, or their black fraction exceeds twice the real one plus 0.05.
SKY_SIGMA_RATIO = 1.5
#: The verdict says the generated sky noise is coloured when its mean band correlation is this far below the real
#: one's, and the real one's is a shared (grey) noise (``SKY_BAND_CORRELATION_MIN``, not faint sources' light).
SKY_BAND_CORRELATION_GAP = 0.2


def _sky_statement(m: dict) -> str:
    """'' unless the generated stamps' own skies are noisier or blacker than the held-out real ones (``sky``)."""
    from .sky import SKY_BAND_CORRELATION_MIN

    sky = m.get("sky") or {}
    gen, real = sky.get("generated"), sky.get("real_heldout")
    if not gen or not real:
        return ""
    ratio = max(g[1] / r[1] for g, r in zip(gen["sigma"], real["sigma"]) if r[1] > 0) if any(
        r[1] > 0 for r in real["sigma"]) else 0.0
    black_g, black_r = float(np.mean(gen["clipped_fraction"])), float(np.mean(real["clipped_fraction"]))
    rho_g, rho_r = (float(np.mean(list(s["band_correlation"].values()))) if s.get("band_correlation") else 0.0
                    for s in (gen, real))
    grey = rho_r >= SKY_BAND_CORRELATION_MIN and rho_r - rho_g > SKY_BAND_CORRELATION_GAP
    if ratio <= SKY_SIGMA_RATIO and black_g <= 2.0 * black_r + 0.05 and not grey:
        return ""
    return (f"its sky is unlike the real one: per-stamp sky sigma up to {ratio:.1f}x the real, "
            f"{100 * black_g:.0f} % of pixels black (real {100 * black_r:.0f} %)"
            + (f", its pixel noise correlated {rho_g:.2f} between bands (real {rho_r:.2f})" if grey else ""))


def _holzschuh(entry: dict) -> tuple[float | None, float | None]:
    """Mean of the statmorph, power-spectrum, flux and colour distances (those measured), generated and baseline."""
    keys = ["morphology", *PHOTOMETRY_GROUPS]
    gen = [entry.get(f"{k}_wasserstein") for k in keys]
    base = [entry.get(f"{k}_wasserstein_real_baseline") for k in keys]
    pairs = [(g, b) for g, b in zip(gen, base) if g is not None and b is not None and np.isfinite(b)]
    if not pairs or any(not np.isfinite(g) for g, _ in pairs):
        return None, (float(np.mean([b for _, b in pairs])) if pairs else None)
    return float(np.mean([g for g, _ in pairs])), float(np.mean([b for _, b in pairs]))


def _trained_with(ws: Workspace) -> dict:
    """The GAN run's discriminator, sky-model, augmentation and statistic-matching settings and the machine it was trained on (``WS/gan/config.json``); {} when unknown."""
    import json

    path = ws.gan_config
    if not path.exists():
        return {}
    info = json.loads(path.read_text(encoding="utf-8"))
    cfg = info.get("config", {})
    out = {k: cfg.get(k) for k in ("discriminator", "d_backbone", "sky_noise", "diffaugment", *TARGETED_MORPHOMETRY_GROUPS)
           if k in cfg}
    if "machine" in info:  # torch build and processor: numbers compare bit for bit only on the same kind
        out["trained_on"] = info["machine"]
    return out


def _few_measured(m: dict) -> str:
    """A warning when statmorph measured fewer than half of a set's stamps (its flag >= 2 on the rest), else ''."""
    sizes, failed = m.get("morphology_n") or {}, m.get("morphology_failed_fraction") or {}
    short = []
    for key, name in (("real_heldout", "held-out real"), ("generated", "generated")):
        n, f = sizes.get(key), failed.get(key)
        if n and f is not None and f > 0.5:
            short.append(f"{int(round(n * (1.0 - f)))} of {n} {name}")
    return f"statmorph measured only {' and '.join(short)} stamps: the morphology figure is unreliable" if short else ""


def realism_verdict(m: dict) -> tuple[bool, str]:
    """A plain statement of how far the library is from real (for the report), and whether it is far.

    Three grades, from the two sets of aims of issue 14:

    * far from real -- short of the quick default run's aims: "under-trained:
      N steps" when morphology (statmorph) Wasserstein is above 2x its real
      baseline, precision below 0.5 or recall below 0.3 (realism space);
      "memorising at N steps" when the memorised fraction is above 0.01
      (realism space; the pixel-space one and the data-copying test are
      shown beside it, not graded), which more training does not cure;
    * precision, recall and FID are graded in the realism space and, when G's
      loss matched some of its statistics, also without them
      (``realism_untargeted``): an aim counts when met in both;
    * "rough at N steps": those aims met, the full-quality ones not
      (morphology <= 1.3x, FID <= 1.5x its baseline, precision >= 0.7,
      recall >= 0.6): usable for a look, not a science-grade library;
    * "close to real at N steps": the full-quality aims met too (never when
      statmorph measured fewer than half of the held-out real or generated
      stamps, nor when the generated orientations are anisotropic and the
      held-out real ones are not, nor when the generated skies are noisier
      or blacker than the real ones, ``sky``: the verdict then says so).
    """
    parts, far, close, memorising = [], False, True, False
    mw, mb = m.get("morphology_wasserstein"), m.get("morphology_wasserstein_real_baseline")
    if mw is not None and mb and np.isfinite(mw) and np.isfinite(mb):
        ratio = mw / mb
        far |= ratio > 2.0
        close &= ratio <= 1.3
        ci = m.get("morphology_wasserstein_ratio_interval")
        n = (m.get("morphology_n") or {}).get("generated")
        noise = f" (68 % {ci[0]:.1f}-{ci[1]:.1f}x" + (f", statmorph on {n} stamps per set)" if n else ")") if ci else ""
        parts.append(f"morphology {ratio:.1f}x the real baseline{noise}")
        few = _few_measured(m)
        if few:
            close = False
            parts.append(few)
    elif mb:
        far, close = True, False
        parts.append("morphology not measurable on the generated stamps")
    p, r = m.get("precision"), m.get("recall")
    if p is not None and r is not None:
        far |= p < 0.5 or r < 0.3
        close &= p >= 0.7 and r >= 0.6
        parts.append(f"precision {p:.2f} (real {m.get('precision_real_baseline') or float('nan'):.2f}), "
                     f"recall {r:.2f} (real {m.get('recall_real_baseline') or float('nan'):.2f}) in {m.get('realism_space')} space")
    fid, fb = m.get("fid"), m.get("fid_real_baseline")
    if fid is not None and fb:
        close &= fid / fb <= 1.5
        parts.append(f"FID {fid / fb:.1f}x the real baseline")
    u = m.get("realism_untargeted") or {}
    up, ur, ufid, ufb = u.get("precision"), u.get("recall"), u.get("fid"), u.get("fid_real_baseline")
    if up is not None and ur is not None and ufid is not None and ufb:
        # Graded as the headline: aims met only in the statistics G was trained to match are not met.
        far |= up < 0.5 or ur < 0.3
        close &= up >= 0.7 and ur >= 0.6 and ufid / ufb <= 1.5
        parts.append(f"without the statistics G's loss matched ({', '.join(u.get('groups_left_out') or [])}): "
                     f"FID {ufid / ufb:.1f}x, precision {up:.2f}, recall {ur:.2f}")
    mem, copies = m.get("memorised_fraction"), m.get("memorised_fraction_pixels")
    if mem is not None:
        memorising = mem > 0.01
        # The pixel test is shown, not graded: a quieter generated sky alone brings stamps nearer in RMS.
        near = f" ({100 * copies:.1f} % nearer in pixels)" if copies is not None else ""
        ct = (m.get("data_copying") or {}).get("ct")
        copying = ""
        if ct is not None and np.isfinite(ct):
            reading = ("copies: nearer the training stamps than new real galaxies are" if ct < -3 else
                       "no copies; farther from the training stamps than new real galaxies are" if ct > 3 else
                       "no copies")
            copying = f", data-copying test C_T {ct:+.1f} ({reading})"
        parts.append(f"memorised {100 * mem:.1f} %{near}{copying}")
    for statement in (_orientation_statement(m), _sky_statement(m)):
        if statement:
            close = False
            parts.append(statement)
    steps = m.get("steps")
    at = f" at {steps} steps" if steps is not None else ""
    if far:
        head = (f"under-trained: {steps} steps" if steps is not None else "far from real") + (
            " and memorising" if memorising else "")
    elif memorising:
        head = "memorising" + at
    elif close and parts:
        head = "close to real" + at
    else:
        head = "rough" + at + " (quick-run aims met, full-quality aims not: train longer for a science library)"
    return far or memorising, head + ("; " + "; ".join(parts) if parts else "")


def _json_safe(obj):
    """NaN / inf -> None (JSON has no NaN); numpy scalars -> Python."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj
