"""Read the classes: one row per cluster (size, median redshift / mass / SFR, UVJ and label fractions)."""

from __future__ import annotations

import numpy as np

__all__ = ["cluster_summary", "OUTLIER_ROW"]

#: Name of the summary row of galaxies in no cluster (density methods).
OUTLIER_ROW = "outliers"


def _median(values: np.ndarray, sel: np.ndarray) -> float | None:
    v = values[sel]
    v = v[np.isfinite(v)]
    return float(np.median(v)) if v.size else None


def _fractions(labels: np.ndarray, sel: np.ndarray) -> dict:
    lab = labels[sel]
    lab = lab[lab != ""]
    if not lab.size:
        return {}
    names, counts = np.unique(lab, return_counts=True)
    return {str(c): float(k / lab.size) for c, k in zip(names, counts)}


def cluster_summary(
    clusters,
    *,
    probability=None,
    quantities: dict | None = None,
    labels: dict | None = None,
) -> list[dict]:
    """Per-cluster summary, one dict per cluster (``0 .. k-1``) then one for the outliers (if any).

    Parameters
    ----------
    clusters : array of int, shape (N,)
        Cluster per galaxy (``-1``: outlier).
    probability : array of float, shape (N,) or None
        Membership probability; its mean per cluster is reported.
    quantities : dict or None
        ``{name: values (N,)}`` of numbers (e.g. ``z``, ``mass``, ``sfr`` in the
        catalogue's units): their median per cluster (NaN ignored) as
        ``median_<name>``.
    labels : dict or None
        ``{column: class strings (N,)}`` (``""``: no class): the fraction of
        each class among the cluster's labelled galaxies, under ``fractions``.

    Returns
    -------
    list of dict
        ``cluster`` (int, or ``"outliers"``), ``size``, ``fraction`` (of all
        N), ``mean_probability``, ``median_<quantity>`` and ``fractions``
        ``{column: {class: fraction}}``. The sizes add up to N.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    n = len(clusters)
    quantities = {k: np.asarray(v, dtype=np.float64) for k, v in (quantities or {}).items()}
    labels = {k: np.asarray(v, dtype=str) for k, v in (labels or {}).items()}
    prob = None if probability is None else np.asarray(probability, dtype=np.float64)
    groups = [(int(c), clusters == c) for c in np.unique(clusters[clusters >= 0])]
    if (clusters < 0).any():
        groups.append((OUTLIER_ROW, clusters < 0))
    rows = []
    for name, sel in groups:
        row: dict = {"cluster": name, "size": int(sel.sum()), "fraction": float(sel.sum() / n) if n else 0.0}
        if prob is not None:
            row["mean_probability"] = float(prob[sel].mean())
        for q, values in quantities.items():
            row[f"median_{q}"] = _median(values, sel)
        row["fractions"] = {col: _fractions(lab, sel) for col, lab in labels.items()}
        rows.append(row)
    return rows
