"""galearn.explore: what a person does with the map beyond the classes.

- :mod:`.anomalies`: rank galaxies by how unusual they are in feature space
  (isolation forest or local outlier factor), ``galearn anomalies``;
- :mod:`.learn`: a classifier from a person's labels, the next galaxies to
  label (uncertainty sampling) and the re-ranking of the anomaly list by what
  the person marked interesting or boring, ``galearn learn``;
- :mod:`.neighbours`: nearest neighbours of every galaxy for the HTML page.

Public names are imported lazily (scikit-learn loads on first use).
"""

from __future__ import annotations

from .._lazy import lazy_exports

__all__ = [
    "anomaly_scores",
    "run_anomalies",
    "read_labels",
    "fit_classifier",
    "propose_uncertain",
    "propose_representative",
    "rerank_anomalies",
    "run_learn",
    "neighbour_indices",
]

_WHERE = {
    "anomaly_scores": ".anomalies",
    "run_anomalies": ".anomalies",
    "read_labels": ".learn",
    "fit_classifier": ".learn",
    "propose_uncertain": ".learn",
    "propose_representative": ".learn",
    "rerank_anomalies": ".learn",
    "run_learn": ".learn",
    "neighbour_indices": ".neighbours",
}

__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
