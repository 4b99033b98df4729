"""Agreement between feature space and a classification (UVJ class, truth class, a label column).

Definitions (DESIGN.md, "metrics.json contract"):

* ``knn_balanced_accuracy``: 5-fold stratified cross-validation
  (``StratifiedKFold(shuffle=True, random_state)``); inside each fold a
  ``StandardScaler`` and a ``PCA`` to ``min(50, n_features, n_train - 1)``
  components are fitted on the training fold only, then a k = 10
  nearest-neighbour classifier. The value is the mean over the folds of the
  balanced accuracy (mean per-class recall), i.e. what
  ``cross_val_score(Pipeline(...), scoring="balanced_accuracy")`` returns.
* ``linear_balanced_accuracy``: the same folds and reduction, multinomial
  logistic regression (lbfgs, C = 1).
* cluster metrics: one label-free clustering of all galaxies
  (:func:`galearn.maps.fit_clusters`; its number of clusters ``n_clusters``
  never depends on the compared column), compared with the column
  (:func:`cluster_agreement`): ``cluster_majority_balanced_accuracy`` (each
  cluster labelled with its majority class, many-to-one; mean per-class
  recall), ``cluster_accuracy`` / ``cluster_balanced_accuracy`` (best
  one-to-one matching, ``scipy.optimize.linear_sum_assignment``), ``ari``,
  ``nmi``, ``ami``, ``majority_rate`` (calling everything the largest class)
  and ``stability`` (mean ARI over seeded resamples,
  :func:`galearn.maps.cluster_stability`).

Rows without a label (empty string, masked, NaN) are left out of a column's
comparison, never guessed; classes with fewer than ``min_class_size`` (5)
members are left out too and listed under ``excluded_classes``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import BadValueError, EmptySelectionError
from ..maps.clusters import DEFAULT_STABILITY_RESAMPLES, default_clusters, majority_labels, match_clusters
from ..maps.reduce import check_features, make_reducer, pca_dimension
from ..runtime import as_seed, blas_threads

__all__ = ["agreement_metrics", "compare_labels", "cluster_agreement", "label_array", "AgreementResult",
           "N_NEIGHBORS", "N_SPLITS", "MIN_CLASS_SIZE", "MAX_COMPONENTS"]

N_NEIGHBORS = 10
N_SPLITS = 5
MIN_CLASS_SIZE = 5
MAX_COMPONENTS = 50


def label_array(values, *, name: str = "labels") -> np.ndarray:
    """Class labels as a string array; ``""`` means *no label*.

    Masked entries, ``None``, NaN and blank strings become ``""``. Integer and
    boolean labels become their decimal strings; floats are accepted only if
    every finite value is a whole number (class codes), since a continuous
    quantity is not a classification.

    Raises
    ------
    BadValueError
        A float column with non-integer values, or a multi-dimensional column.
    """
    arr = np.ma.asarray(values)
    if arr.ndim != 1:
        raise BadValueError(f"{name} must be one label per galaxy (1-D), got shape {arr.shape}")
    mask = np.ma.getmaskarray(arr).copy()
    data = np.asarray(arr.data)
    kind = data.dtype.kind
    if kind == "f":
        finite = np.isfinite(data)
        mask |= ~finite
        vals = np.where(finite & ~mask, data, 0.0)
        if np.any(vals != np.round(vals)):
            raise BadValueError(
                f"{name} holds non-integer numbers (e.g. {float(vals[vals != np.round(vals)][0]):g}); "
                "a comparison column must be categorical (strings or integer class codes)"
            )
        out = vals.astype(np.int64).astype(str)
    elif kind in "iub":
        out = data.astype(np.int64).astype(str) if kind == "b" else data.astype(str)
    elif kind == "S":
        out = np.char.decode(data, "utf-8", errors="replace")
    elif kind == "O":
        none = np.frompyfunc(lambda v: v is None or (isinstance(v, float) and not np.isfinite(v)), 1, 1)(data)
        mask |= none.astype(bool)
        out = data.astype(str)
    else:
        out = data.astype(str)
    out = np.char.strip(np.asarray(out, dtype=str))
    out[mask] = ""
    return out


@dataclass
class AgreementResult:
    """Everything :func:`compare_labels` computed.

    Attributes
    ----------
    metrics : dict
        The dictionary :func:`agreement_metrics` returns.
    included : numpy.ndarray of bool, shape (N,)
        Rows that took part (labelled, in a class with enough members).
    knn_prediction : numpy.ndarray of str, shape (N,)
        Cross-validated kNN prediction per included row (``""`` elsewhere).
    clusters : numpy.ndarray of int, shape (N,)
        Unsupervised cluster per included row (-1 elsewhere).
    """

    metrics: dict
    included: np.ndarray
    knn_prediction: np.ndarray
    clusters: np.ndarray


def compare_labels(
    features,
    labels,
    *,
    random_state=0,
    clusterer: str | None = None,
    clusters=None,
    stability: float | None = None,
    cluster_space: str | None = None,
    stability_resamples: int = DEFAULT_STABILITY_RESAMPLES,
    n_neighbors: int = N_NEIGHBORS,
    n_splits: int = N_SPLITS,
    min_class_size: int = MIN_CLASS_SIZE,
    max_components: int = MAX_COMPONENTS,
    name: str = "labels",
    threads: int | None = 1,
) -> AgreementResult:
    """Agreement metrics plus the per-galaxy predictions and clusters behind them.

    See :func:`agreement_metrics` for the parameters. ``clusters`` (int,
    shape (N,), ``-1`` = outlier) is a label-free clustering of *all* the
    galaxies made once for every compared column (``galearn classify`` passes
    its workspace-wide clusters, with their ``stability``); None: one is made
    here from ``features`` alone with :func:`galearn.maps.fit_clusters`
    (``clusterer`` in ``cluster_space``; None: the measured defaults,
    :data:`galearn.maps.clusters.DEFAULT_CLUSTERER` / ``DEFAULT_SPACE``), with
    its stability over ``stability_resamples`` resamples (0: not measured). ``name`` is used in error messages (e.g.
    the column name); ``threads`` limits the BLAS/OpenMP pools (see
    :func:`galearn.runtime.blas_threads`; None: no limit).
    """
    with blas_threads(threads):
        return _compare_labels(features, labels, random_state=random_state, clusterer=clusterer,
                               clusters=clusters, stability=stability, cluster_space=cluster_space,
                               stability_resamples=stability_resamples,
                               n_neighbors=n_neighbors, n_splits=n_splits, min_class_size=min_class_size,
                               max_components=max_components, name=name)


def _compare_labels(features, labels, *, random_state, clusterer, clusters, stability, cluster_space,
                    stability_resamples, n_neighbors, n_splits, min_class_size, max_components,
                    name) -> AgreementResult:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix
    from sklearn.model_selection import StratifiedKFold
    from sklearn.neighbors import KNeighborsClassifier

    X = check_features(features)
    y_all = label_array(labels, name=name)
    if len(y_all) != len(X):
        raise BadValueError(f"{name} has {len(y_all)} labels for {len(X)} feature vectors")
    if int(min_class_size) < int(n_splits):
        raise BadValueError(f"min_class_size ({min_class_size}) must be >= n_splits ({n_splits})")
    seed = as_seed(random_state)

    labelled = y_all != ""
    names, counts = np.unique(y_all[labelled], return_counts=True)
    small = counts < int(min_class_size)
    classes = names[~small]
    excluded_classes = {str(c): int(n) for c, n in zip(names[small], counts[small])}
    if len(classes) < 2:
        have = ", ".join(f"{c!s}: {n}" for c, n in zip(names[:8], counts[:8])) or "no labelled rows"
        if len(names) > 8:
            have += f", ... ({len(names)} distinct values)"
        raise EmptySelectionError(
            f"{name}: needs at least 2 classes with >= {min_class_size} members to compare ({have})"
        )
    included = labelled & np.isin(y_all, classes)
    Xi = X[included]
    yi = np.searchsorted(classes, y_all[included])
    n, n_classes = len(yi), len(classes)

    # ----------------------------------------------------------- supervised, cross-validated
    folds = StratifiedKFold(n_splits=int(n_splits), shuffle=True, random_state=seed)
    knn_pred = np.empty(n, dtype=np.int64)
    lin_pred = np.empty(n, dtype=np.int64)
    knn_scores, lin_scores = [], []
    for train, test in folds.split(Xi, yi):
        n_comp = pca_dimension(Xi.shape[1], len(train), max_components)
        reducer = make_reducer(n_comp, seed).fit(Xi[train])
        z_train, z_test = reducer.transform(Xi[train]), reducer.transform(Xi[test])
        knn = KNeighborsClassifier(n_neighbors=min(int(n_neighbors), len(train))).fit(z_train, yi[train])
        knn_pred[test] = knn.predict(z_test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=UserWarning)  # sklearn notes on multinomial defaults
            linear = LogisticRegression(max_iter=5000, random_state=seed).fit(z_train, yi[train])
        lin_pred[test] = linear.predict(z_test)
        knn_scores.append(balanced_accuracy_score(yi[test], knn_pred[test]))
        lin_scores.append(balanced_accuracy_score(yi[test], lin_pred[test]))

    # ----------------------------------------------------------- unsupervised (label-free, made once)
    if clusters is None:
        fit = default_clusters(X, method=clusterer, space=cluster_space, max_components=max_components,
                               stability_resamples=stability_resamples, random_state=seed)
        clusters_all = fit.labels
        clusterer = fit.method
        if stability is None:
            stability = fit.stability
    else:
        clusters_all = np.asarray(clusters, dtype=np.int64)
        if clusters_all.shape != (len(X),):
            raise BadValueError(f"clusters must be one per galaxy ({len(X)}), got shape {clusters_all.shape}")
    labels_out = [str(c) for c in classes]
    clusters = clusters_all[included]
    cl = cluster_agreement(clusters, yi, n_classes, labels_out)
    contingency_table = cl.pop("contingency")

    cm_knn = confusion_matrix(yi, knn_pred, labels=np.arange(n_classes))
    cm_lin = confusion_matrix(yi, lin_pred, labels=np.arange(n_classes))
    metrics = {
        "n_classes": int(n_classes),
        "n_galaxies": int(n),
        "classes": labels_out,
        "class_counts": {c: int(k) for c, k in zip(labels_out, np.bincount(yi, minlength=n_classes))},
        "excluded_classes": excluded_classes,
        "n_unlabelled": int((~labelled).sum()),
        "chance_balanced_accuracy": 1.0 / n_classes,
        "knn_balanced_accuracy": float(np.mean(knn_scores)),
        "knn_balanced_accuracy_std": float(np.std(knn_scores)),
        "linear_balanced_accuracy": float(np.mean(lin_scores)),
        "linear_balanced_accuracy_std": float(np.std(lin_scores)),
        **cl,
        "stability": None if stability is None else float(stability),
        "majority_fraction": cl["majority_rate"],  # earlier name of majority_rate
        "per_class_recall": {
            "knn": _recall(cm_knn, labels_out),
            "linear": _recall(cm_lin, labels_out),
        },
        "confusion": {
            "classes": labels_out,
            "knn": cm_knn.tolist(),  # rows: true class, columns: cross-validated kNN prediction
            "linear": cm_lin.tolist(),
            "clusters": contingency_table,  # rows: cluster, columns: class; matched / majority pairs
        },
        "clusterer": clusterer,
        "n_neighbors": int(n_neighbors),
        "n_splits": int(n_splits),
        "pca_components": int(pca_dimension(Xi.shape[1], n - int(np.ceil(n / n_splits)), max_components)),
        "random_state": seed,
    }
    knn_out = np.full(len(y_all), "", dtype=classes.dtype)
    knn_out[included] = classes[knn_pred]
    clusters_out = np.full(len(y_all), -1, dtype=np.int64)
    clusters_out[included] = clusters
    return AgreementResult(metrics=metrics, included=included, knn_prediction=knn_out, clusters=clusters_out)


def cluster_agreement(clusters, classes, n_classes: int | None = None, class_names=None) -> dict:
    """How well label-free clusters agree with a classification (no fitting: clusters are given).

    Parameters
    ----------
    clusters : array of int, shape (n,)
        Cluster per compared galaxy (``-1``: outlier, in no cluster).
    classes : array of int, shape (n,)
        Class index per galaxy (``0 .. n_classes - 1``).
    class_names : list of str or None
        Names for the contingency table.

    Returns
    -------
    dict
        ``n_clusters`` (clusters holding compared galaxies), ``n_outliers``,
        ``cluster_majority_balanced_accuracy`` (each cluster labelled with its
        majority class, many-to-one; outliers count as wrong; mean per-class
        recall), ``cluster_majority_accuracy``, ``cluster_accuracy`` and
        ``cluster_balanced_accuracy`` (best one-to-one matching), ``ari``,
        ``nmi``, ``ami`` (outliers as one more label), ``majority_rate``
        (accuracy of calling every galaxy the largest class) and the
        ``contingency`` table.
    """
    from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score, normalized_mutual_info_score

    clusters = np.asarray(clusters, dtype=np.int64)
    yi = np.asarray(classes, dtype=np.int64)
    n_classes = int(yi.max(initial=-1) + 1 if n_classes is None else n_classes)
    n = len(yi)
    n_rows = int(clusters.max(initial=-1)) + 1
    acc, table, matched = match_clusters(clusters, yi, n_rows, n_classes)
    major = majority_labels(clusters, yi, n_classes)
    support = np.bincount(yi, minlength=n_classes)
    hits = np.bincount(yi[major == yi], minlength=n_classes)
    recall = np.divide(hits, support, out=np.zeros(n_classes), where=support > 0)
    names = [str(c) for c in (class_names if class_names is not None else range(n_classes))]
    present = np.unique(clusters[clusters >= 0])
    return {
        "n_clusters": int(len(present)),
        "n_outliers": int((clusters < 0).sum()),
        "cluster_majority_balanced_accuracy": float(recall[support > 0].mean()) if n else 0.0,
        "cluster_majority_accuracy": float(hits.sum() / n) if n else 0.0,
        "cluster_majority_recall": {c: float(r) for c, r in zip(names, recall)},
        "cluster_accuracy": float(acc),
        "cluster_balanced_accuracy": _matched_balanced_accuracy(table, matched),
        "ari": float(adjusted_rand_score(yi, clusters)),
        "nmi": float(normalized_mutual_info_score(yi, clusters)),
        "ami": float(adjusted_mutual_info_score(yi, clusters)),
        "majority_rate": float(support.max() / n) if n else 0.0,
        "contingency": {
            "rows": [f"cluster {i}" for i in range(n_rows)],
            "columns": names,
            "counts": table.tolist(),  # rows: cluster, columns: class
            "matched": {f"cluster {k}": names[v] for k, v in matched.items()},
            "majority": {f"cluster {i}": names[int(np.argmax(table[i]))] for i in range(n_rows) if table[i].sum()},
        },
    }


def _matched_balanced_accuracy(table: np.ndarray, matched: dict) -> float:
    """Mean over classes of the fraction of the class inside its matched cluster (0 if unmatched)."""
    support = table.sum(axis=0)
    hits = np.zeros(table.shape[1])
    for cluster, cls in matched.items():
        hits[cls] = table[cluster, cls]
    return float(np.mean(np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)))


def _recall(cm: np.ndarray, labels: list[str]) -> dict:
    support = cm.sum(axis=1)
    recall = np.divide(np.diag(cm), support, out=np.zeros(len(labels)), where=support > 0)
    return {c: float(r) for c, r in zip(labels, recall)}


def agreement_metrics(features: np.ndarray, labels: np.ndarray, *, random_state=0, clusterer: str | None = None,
                      clusters=None, cluster_space: str | None = None,
                      stability_resamples: int = DEFAULT_STABILITY_RESAMPLES,
                      n_neighbors: int = N_NEIGHBORS, n_splits: int = N_SPLITS,
                      min_class_size: int = MIN_CLASS_SIZE, max_components: int = MAX_COMPONENTS) -> dict:
    """How well the feature space agrees with a classification.

    Parameters
    ----------
    features : array-like, shape (N, D)
        One feature vector per galaxy (raw; standardised and PCA-reduced here,
        inside each cross-validation fold).
    labels : array-like, shape (N,)
        Class per galaxy (strings or integer codes); ``""``, masked, None or
        NaN mean *no label*: the row is left out, never guessed.
    random_state : int, numpy.random.Generator or None
        Seed of the folds, the PCA and the clustering; same seed, same numbers.
    clusterer : str or None
        Method of the label-free clustering made when ``clusters`` is None
        (:func:`galearn.maps.fit_clusters`; None: the default).
    clusters : array of int, shape (N,), or None
        A label-free clustering of all the galaxies to compare instead (-1: outlier).
    cluster_space, stability_resamples : str or None, int
        Space of that clustering (:func:`galearn.maps.cluster_space`; None: the
        default) and resamples of its stability (0: not measured).
    n_neighbors, n_splits, min_class_size, max_components : int
        k of the kNN classifier (10), folds (5), the smallest class kept (5),
        most PCA components (50). The defaults are the DESIGN definitions.

    Returns
    -------
    dict
        ``n_classes``, ``n_galaxies``, ``knn_balanced_accuracy``,
        ``linear_balanced_accuracy`` (means over folds, with ``*_std``),
        ``n_clusters``, ``cluster_majority_balanced_accuracy``,
        ``cluster_accuracy``, ``cluster_balanced_accuracy``, ``ari``, ``nmi``,
        ``ami``, ``majority_rate`` (``majority_fraction``: the same, earlier
        name), ``stability`` (see :func:`cluster_agreement`), ``per_class_recall``
        (``knn``/``linear``: class -> recall), ``confusion`` (``knn`` and
        ``linear``: rows true class, columns predicted; ``clusters``: the
        cluster-vs-class contingency matrix with its labels and the matching),
        ``classes``, ``class_counts``, ``excluded_classes`` (class -> members,
        for classes too small to compare), ``n_unlabelled``,
        ``chance_balanced_accuracy`` and the settings used.

    Raises
    ------
    EmptySelectionError
        Fewer than two classes with at least ``min_class_size`` members.
    BadValueError
        Shapes that do not match, non-finite features, continuous labels.

    Examples
    --------
    >>> from sklearn.datasets import make_blobs
    >>> X, y = make_blobs(n_samples=200, centers=3, n_features=20, random_state=0)
    >>> m = agreement_metrics(X, y, random_state=0)
    >>> m["n_classes"], m["knn_balanced_accuracy"] > 0.95
    (3, True)
    """
    return compare_labels(features, labels, random_state=random_state, clusterer=clusterer, clusters=clusters,
                          cluster_space=cluster_space, stability_resamples=stability_resamples,
                          n_neighbors=n_neighbors, n_splits=n_splits, min_class_size=min_class_size,
                          max_components=max_components).metrics
