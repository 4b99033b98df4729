"""A classification of every galaxy from a person's few labels (``galearn learn``).

- :func:`read_labels`: a ``labels.csv`` (columns ``id``, ``label``), checked
  line by line against the sample's ids;
- :func:`fit_classifier`: a seeded classifier in the reduced feature space
  (standardised features, at most 50 principal components): logistic
  regression with balanced class weights (default) or a Gaussian-process
  classifier;
- :func:`propose_representative`: the first galaxies to label, before any
  label (a label-free cold start): the galaxy nearest each of ``n`` k-means
  centres in the reduced space, biggest cluster first;
- :func:`propose_uncertain`: the next galaxies to label, by uncertainty
  sampling (smallest margin between the two most probable classes), optionally
  spread out: the ``n`` k-means centres of the ``diversity x n`` most uncertain;
- :func:`rerank_anomalies`: the anomaly ranking re-weighted by what the
  person marked interesting or boring, after Astronomaly (Lochner & Bassett
  2021): galaxies near ones marked boring move down, near ones marked
  interesting move up, far from every label they keep their score.
"""

from __future__ import annotations

import csv
import re
import time
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import BadValueError, EmptySelectionError, MissingInputError
from ..runtime import as_seed, blas_threads
from ..store import Workspace, read_table, update_metrics, write_table
from .anomalies import ranks_of, reduce_for_scoring

__all__ = ["MODELS", "read_labels", "fit_classifier", "uncertainty", "propose_representative", "propose_uncertain",
           "rerank_anomalies", "local_scale", "run_learn"]

MODELS = ("logistic", "gp")


# ----------------------------------------------------------------------------- labels


def read_labels(path, ids) -> tuple[np.ndarray, np.ndarray]:
    """Rows (into ``ids``) and labels of a ``labels.csv``.

    The file is CSV with a header naming an ``id`` and a ``label`` column (any
    case; other columns are ignored). The same id twice with the same label is
    accepted once.

    Parameters
    ----------
    path : path-like
    ids : array-like of str
        The sample's galaxy ids, in feature order.

    Returns
    -------
    rows : numpy.ndarray of int64
    labels : numpy.ndarray of str

    Raises
    ------
    MissingInputError
        The file does not exist.
    BadValueError
        No ``id`` / ``label`` column; a line with an empty id or label, an id
        not in the sample, or an id labelled twice differently (the message
        names the line); only one class.
    EmptySelectionError
        No label rows.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"--labels {path}: no such file")
    ids = np.asarray(ids).astype(str)
    lookup = {v: i for i, v in enumerate(ids)}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadValueError(f"{path}: not a UTF-8 text (CSV) file ({exc.reason})") from None
    reader = csv.reader(text.splitlines())
    header = next(reader, None)
    if not header:
        raise EmptySelectionError(f"{path}: empty file; expected a header `id,label` and one row per galaxy")
    names = [h.strip().lower() for h in header]
    if "id" not in names or "label" not in names:
        raise BadValueError(f"{path} line 1: the header must name an `id` and a `label` column, got {header}")
    ci, cl = names.index("id"), names.index("label")
    rows: list[int] = []
    labels: list[str] = []
    seen: dict[str, tuple[str, int]] = {}
    for lineno, rec in enumerate(reader, start=2):
        if not rec or all(not v.strip() for v in rec):
            continue  # blank line
        if len(rec) <= max(ci, cl):
            raise BadValueError(f"{path} line {lineno}: expected {len(header)} fields, got {len(rec)}: {rec}")
        gid, label = rec[ci].strip(), rec[cl].strip()
        if not gid:
            raise BadValueError(f"{path} line {lineno}: empty id")
        if not label:
            raise BadValueError(f"{path} line {lineno}: empty label for id {gid!r}")
        if gid not in lookup:
            examples = ", ".join(ids[:3])
            raise BadValueError(f"{path} line {lineno}: id {gid!r} is not in the sample (ids look like {examples}, ...)")
        if gid in seen:
            before, where = seen[gid]
            if before != label:
                raise BadValueError(f"{path} line {lineno}: id {gid!r} is labelled {label!r}, "
                                    f"but {before!r} on line {where}")
            continue
        seen[gid] = (label, lineno)
        rows.append(lookup[gid])
        labels.append(label)
    if not rows:
        raise EmptySelectionError(f"{path}: no label rows after the header")
    labels_arr = np.asarray(labels, dtype=str)
    classes = np.unique(labels_arr)
    if len(classes) < 2:
        raise BadValueError(f"{path} lines 2-{lineno}: every label is {str(classes[0])!r}; at least two classes are "
                            "needed to train a classifier (label some galaxies of another kind)")
    return np.asarray(rows, dtype=np.int64), labels_arr


# ----------------------------------------------------------------------------- classifier


#: Inverse L2 strength of the logistic regression: of 0.01, 0.1 and 1 (with 10, 20 or 50 components) the best
#: learning curve on mock early-type / disk features (benchmarks/bench_explore.py, docs/explore.md).
DEFAULT_C = 0.01
#: Kernel width of the re-ranking in units of :func:`local_scale`: of 1, 2, 3 and 5 the best on the mock (idem).
RERANK_SCALE = 3.0


def fit_classifier(Z: np.ndarray, rows: np.ndarray, labels: np.ndarray, *, model: str = "logistic",
                   C: float = DEFAULT_C, random_state=0):
    """Fit a classifier on the labelled rows of ``Z``; return it (scikit-learn estimator).

    Parameters
    ----------
    Z : numpy.ndarray, shape (N, K)
        Reduced features of every galaxy.
    rows, labels : array-like
        Labelled rows and their labels (at least two classes).
    model : {"logistic", "gp"}
        ``logistic``: L2 logistic regression (inverse strength ``C``) with
        balanced class weights on the reduced features (not re-scaled); ``gp``:
        Gaussian-process classifier with an RBF kernel (length scale fitted).
    random_state : int or None
        Seed of the solver.
    """
    if model not in MODELS:
        raise BadValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    X, y = Z[np.asarray(rows)], np.asarray(labels).astype(str)
    if len(np.unique(y)) < 2:
        raise BadValueError(f"at least two classes are needed, got only {np.unique(y).tolist()}")
    seed = as_seed(random_state)
    if model == "logistic":
        from sklearn.linear_model import LogisticRegression

        # No re-scaling of the components: whitening them would weigh noise components like the leading ones.
        clf = LogisticRegression(C=float(C), class_weight="balanced", max_iter=5000, random_state=seed)
    else:
        from sklearn.gaussian_process import GaussianProcessClassifier
        from sklearn.gaussian_process.kernels import RBF, ConstantKernel

        kernel = ConstantKernel(1.0) * RBF(length_scale=float(np.sqrt(Z.shape[1])))
        clf = GaussianProcessClassifier(kernel=kernel, random_state=seed)
    with blas_threads(1):
        clf.fit(X, y)
    return clf


def uncertainty(proba: np.ndarray) -> np.ndarray:
    """1 minus the margin between the two most probable classes (0: sure, 1: a tie)."""
    p = np.sort(np.asarray(proba, dtype=np.float64), axis=1)
    return 1.0 - (p[:, -1] - p[:, -2])


#: Uncertainty batches are the k-means centres of the DIVERSITY x n most uncertain galaxies (1: the n most uncertain).
#: Of 1, 2 and 3 (after the cold start), 2 gave the best mean balanced accuracy over 10-100 labels on mock
#: early-type / disk and real elliptical / spiral (benchmarks/bench_explore.py, docs/explore.md).
DIVERSITY = 2
#: The label-free first batch: the centres of the n biggest of COLD_START_OVER x n k-means clusters (2: the
#: smallest half, isolated galaxies and groups of artefacts, never take a proposal; docs/explore.md).
COLD_START_OVER = 2
#: Rows k-means is fitted on for the proposals (a seeded subsample beyond; every candidate is then assigned).
_KMEANS_MAX_FIT = 20000


def _nearest_to_centres(Z: np.ndarray, cand: np.ndarray, n: int, seed: int, *, over: int = 1) -> np.ndarray:
    """The candidate nearest the centre of each of the ``n`` biggest of ``over x n`` k-means clusters of ``Z[cand]``.

    Rows, biggest cluster first. ``over > 1`` leaves out the smallest
    clusters: isolated galaxies and small groups of artefacts, which would
    otherwise each take a proposal.
    """
    from sklearn.cluster import KMeans

    n = min(int(n), len(cand))
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    k = min(int(over) * n, len(cand))
    rng = np.random.default_rng(seed)
    fit = np.sort(rng.choice(len(cand), _KMEANS_MAX_FIT, replace=False)) if len(cand) > _KMEANS_MAX_FIT \
        else np.arange(len(cand))
    with blas_threads(1):
        km = KMeans(n_clusters=k, n_init=3, random_state=seed).fit(Z[cand[fit]])
        lab = km.predict(Z[cand])
    d2 = np.sum((Z[cand] - km.cluster_centers_[lab]) ** 2, axis=1)
    sizes = np.bincount(lab, minlength=k)
    picked = []
    for c in np.lexsort((np.arange(k), -sizes)):  # biggest cluster first; ties by cluster index
        members = np.flatnonzero(lab == c)
        if len(members):
            picked.append(int(cand[members[np.lexsort((cand[members], d2[members]))[0]]]))
        if len(picked) == n:
            break
    return np.asarray(picked, dtype=np.int64)


def propose_representative(Z: np.ndarray, n: int = 20, *, exclude=None, random_state=0) -> np.ndarray:
    """Rows of ``n`` galaxies that together represent the sample: the label-free first batch.

    k-means with ``COLD_START_OVER x n`` clusters in ``Z`` (seeded; fitted on
    at most 20 000 rows); of each of the ``n`` biggest clusters the galaxy
    nearest its centre, biggest cluster first. A person who labels these
    starts from galaxies that cover the map's main groups, not from a random
    draw, and not from isolated oddities (docs/explore.md, measured).

    Parameters
    ----------
    Z : numpy.ndarray, shape (N, K)
        Reduced features.
    n : int
        Galaxies to propose.
    exclude : array-like of bool, shape (N,), optional
        Galaxies not to propose (e.g. already labelled).
    random_state : int or None
        Seed of k-means.
    """
    Z = np.asarray(Z, dtype=np.float64)
    mask = np.zeros(len(Z), dtype=bool) if exclude is None else np.asarray(exclude, dtype=bool)
    return _nearest_to_centres(Z, np.flatnonzero(~mask), n, as_seed(random_state), over=COLD_START_OVER)


def propose_uncertain(proba: np.ndarray, labelled: np.ndarray, n: int = 20, *, Z: np.ndarray | None = None,
                      diversity: int = 1, random_state=0) -> np.ndarray:
    """Rows of ``n`` uncertain unlabelled galaxies to label next (most uncertain first).

    ``diversity = 1`` (or no ``Z``): the ``n`` most uncertain (ties by row).
    ``diversity = m > 1``: the ``m x n`` most uncertain are split into ``n``
    k-means clusters in ``Z`` and the galaxy nearest each centre is proposed,
    so that one batch does not spend labels on ``n`` near-copies of the same
    doubtful galaxy.
    """
    if int(diversity) < 1:
        raise BadValueError(f"--diversity must be >= 1, got {diversity}")
    u = uncertainty(proba)
    cand = np.flatnonzero(~np.asarray(labelled, dtype=bool))
    order = cand[np.lexsort((cand, -u[cand]))]
    if Z is None or int(diversity) == 1 or int(n) <= 1:
        return order[: int(n)]
    picked = _nearest_to_centres(np.asarray(Z, dtype=np.float64), order[: int(diversity) * int(n)], int(n),
                                 as_seed(random_state))
    return picked[np.lexsort((picked, -u[picked]))]


# ----------------------------------------------------------------------------- anomaly re-ranking


def local_scale(Z: np.ndarray, *, k: int = 10, max_rows: int = 5000, random_state=0) -> float:
    """Median distance of a galaxy to its ``k``-th nearest neighbour (units of ``Z``), on a seeded subsample."""
    from sklearn.neighbors import NearestNeighbors

    rng = np.random.default_rng(as_seed(random_state))
    sub = Z[np.sort(rng.choice(len(Z), size=max_rows, replace=False))] if len(Z) > max_rows else Z
    k = max(1, min(int(k), len(sub) - 1))
    d, _ = NearestNeighbors(n_neighbors=k + 1).fit(sub).kneighbors(sub)
    return float(np.median(d[:, -1])) or 1.0


def rerank_anomalies(Z: np.ndarray, scores: np.ndarray, rows: np.ndarray, interesting: np.ndarray, *,
                     scale: float | None = None, prior_weight: float = 0.1, chunk_size: int = 20000) -> np.ndarray:
    """Anomaly scores re-weighted by a person's judgements (higher = look at it sooner).

    Every galaxy's anomaly score is first turned into its percentile
    ``s`` in (0, 1]. Its *relevance* ``r`` is a kernel average of the
    judgements (1 interesting, 0 boring) of the labelled galaxies, with
    weights ``exp(-d^2 / (2 h^2))`` (``d``: distance in ``Z``; ``h``:
    ``scale``, by default ``RERANK_SCALE`` times :func:`local_scale`), shrunk towards 1/2 by
    ``prior_weight``: ``r = (sum w y + prior_weight / 2) / (sum w + prior_weight)``.
    The new score is ``2 r s``: unchanged far from every label, up to twice as
    high next to what was marked interesting, down to 0 next to what was
    marked boring. Labelled galaxies get ``-inf`` (already seen).

    Parameters
    ----------
    Z : numpy.ndarray, shape (N, K)
    scores : numpy.ndarray, shape (N,)
        Anomaly scores (higher = more unusual).
    rows : array-like of int
        Labelled rows.
    interesting : array-like of bool
        Per labelled row: True = interesting, False = boring.

    Returns
    -------
    numpy.ndarray, shape (N,)
    """
    Z = np.asarray(Z, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.asarray(rows, dtype=np.int64)
    y = np.asarray(interesting, dtype=np.float64)
    if len(Z) != len(scores):
        raise BadValueError(f"{len(scores)} scores for {len(Z)} galaxies")
    if len(rows) != len(y):
        raise BadValueError(f"{len(y)} judgements for {len(rows)} labelled rows")
    n = len(Z)
    s = (n + 1 - ranks_of(scores)) / n  # percentile: 1 for the most unusual
    if len(rows) == 0:
        return s
    h = float(scale) if scale else RERANK_SCALE * local_scale(Z)
    L = Z[rows]
    out = np.empty(n)
    l2 = np.sum(L**2, axis=1)
    for start in range(0, n, int(chunk_size)):
        block = Z[start:start + chunk_size]
        d2 = np.maximum(np.sum(block**2, axis=1)[:, None] + l2[None, :] - 2.0 * block @ L.T, 0.0)
        w = np.exp(-0.5 * d2 / h**2)
        r = (w @ y + 0.5 * prior_weight) / (w.sum(axis=1) + prior_weight)
        out[start:start + chunk_size] = 2.0 * r * s[start:start + chunk_size]
    out[rows] = -np.inf
    return out


# ----------------------------------------------------------------------------- stage


def _column_name(label: str) -> str:
    return "p_" + (re.sub(r"[^0-9A-Za-z_]+", "_", label).strip("_") or "class")


def run_learn(ws: Workspace, labels_path=None, *, backbone: str | None = None, model: str = "logistic",
              n_propose: int = 20, diversity: int = DIVERSITY, interesting: str = "interesting",
              boring: str = "boring", random_state=0) -> dict:
    """``galearn learn``: classifier from ``labels_path``, predictions for every galaxy, proposals.

    Without ``labels_path`` (no labels yet): the label-free cold start,
    ``WS/predictions.ecsv`` with ``id``, ``label`` (empty) and ``proposal``
    (1 = label this one first, ...; the ``n_propose`` galaxies of
    :func:`propose_representative`).

    With labels: ``WS/predictions.ecsv`` with ``id``, ``label`` (the person's, or
    empty), ``prediction``, ``probability`` (of the prediction),
    ``uncertainty`` (see :func:`uncertainty`), ``p_<class>`` per class and
    ``proposal`` (1 = label this one next, ..., 0 = not proposed; see
    :func:`propose_uncertain` with ``diversity``). When the
    labels use ``interesting`` / ``boring`` and ``WS/anomalies.ecsv`` exists,
    also ``anomaly_score``, ``rerank_score`` and ``rerank`` (rank among the
    unlabelled galaxies after :func:`rerank_anomalies`; 0 for labelled ones).
    metrics.json gets the key ``learn``.

    Returns
    -------
    dict
        The ``learn`` metrics entry.
    """
    from ..store import load_features, require_sample, resolve_backbone

    if int(n_propose) < 0:
        raise BadValueError(f"--n-propose must be >= 0, got {n_propose}")
    if int(diversity) < 1:
        raise BadValueError(f"--diversity must be >= 1, got {diversity}")
    if model not in MODELS:
        raise BadValueError(f"--model must be one of {', '.join(MODELS)}, got {model!r}")
    sample = require_sample(ws)
    backbone = resolve_backbone(ws, backbone)
    feats = load_features(ws, backbone, sample=sample)
    ids = np.asarray(feats.ids).astype(str)
    if labels_path is None:
        t0 = time.perf_counter()
        with blas_threads(1):
            Z, _ = reduce_for_scoring(feats.values, n_components=50, random_state=random_state)
        proposals = propose_representative(Z, n_propose, random_state=random_state)
        table = Table()
        table["id"] = ids
        table["label"] = np.full(len(ids), "", dtype=str)
        proposal = np.zeros(len(ids), dtype=np.int64)
        proposal[proposals] = np.arange(1, len(proposals) + 1)
        table["proposal"] = proposal
        entry = {"model": None, "backbone": backbone, "n_labels": 0, "classes": [], "label_counts": {},
                 "n_proposed": int(len(proposals)), "proposals": "representative (k-means centres, cold start)",
                 "predicted_counts": {}, "seconds": round(time.perf_counter() - t0, 3)}
        table.meta.update({"model": None, "backbone": backbone, "labels": None, "random_state": random_state,
                           "proposals": entry["proposals"]})
        write_table(ws.predictions, table)
        update_metrics(ws.metrics, {"learn": entry}, replace=("learn",))
        return entry
    rows, labels = read_labels(labels_path, ids)
    t0 = time.perf_counter()
    with blas_threads(1):
        Z, _ = reduce_for_scoring(feats.values, n_components=50, random_state=random_state)
    clf = fit_classifier(Z, rows, labels, model=model, random_state=random_state)
    proba = clf.predict_proba(Z)
    classes = np.asarray(clf.classes_).astype(str)
    labelled = np.zeros(len(ids), dtype=bool)
    labelled[rows] = True
    pred = classes[np.argmax(proba, axis=1)]
    given = np.full(len(ids), "", dtype=object)
    given[rows] = labels
    proposals = propose_uncertain(proba, labelled, n_propose, Z=Z, diversity=diversity, random_state=random_state)
    proposal = np.zeros(len(ids), dtype=np.int64)
    proposal[proposals] = np.arange(1, len(proposals) + 1)

    table = Table()
    table["id"] = ids
    table["label"] = given.astype(str)
    table["prediction"] = pred
    table["probability"] = proba.max(axis=1)
    table["uncertainty"] = uncertainty(proba)
    for j, c in enumerate(classes):
        name = _column_name(c)
        while name in table.colnames:
            name += "_"
        table[name] = proba[:, j]
    table["proposal"] = proposal
    counts = {str(c): int(np.count_nonzero(labels == c)) for c in classes}
    entry = {"model": model, "backbone": backbone, "n_labels": int(len(rows)), "classes": classes.tolist(),
             "label_counts": counts, "n_proposed": int(len(proposals)),
             "proposals": f"uncertainty (margin), diversity {int(diversity)}",
             "predicted_counts": {str(c): int(np.count_nonzero(pred == c)) for c in classes}}

    judged = np.isin(labels, [interesting, boring])
    if ws.anomalies.exists() and judged.any():
        anom = read_table(ws.anomalies)
        a_ids = np.asarray(anom["id"]).astype(str)
        if len(a_ids) != len(ids) or not np.array_equal(a_ids, ids):
            raise BadValueError(f"{ws.anomalies} does not match the feature file's galaxies: "
                                "re-run `galearn anomalies`")
        score = np.asarray(anom["score"], dtype=np.float64)
        new = rerank_anomalies(Z, score, rows[judged], labels[judged] == interesting)
        rr = np.zeros(len(ids), dtype=np.int64)
        free = np.flatnonzero(~labelled)
        rr[free] = ranks_of(new[free])
        table["anomaly_score"] = score
        table["rerank_score"] = np.where(np.isfinite(new), new, np.nan)
        table["rerank"] = rr
        entry["rerank"] = {"n_interesting": int(np.count_nonzero(labels == interesting)),
                           "n_boring": int(np.count_nonzero(labels == boring))}
    entry["seconds"] = round(time.perf_counter() - t0, 3)
    table.meta.update({"model": model, "backbone": backbone, "labels": str(labels_path),
                       "random_state": random_state})
    write_table(ws.predictions, table)
    update_metrics(ws.metrics, {"learn": entry}, replace=("learn",))
    return entry
