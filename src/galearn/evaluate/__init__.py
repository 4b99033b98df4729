"""galearn.evaluate: UVJ classes, agreement metrics, clusters, nearest neighbours (and GAN realism).

Public names are imported lazily so that ``import galearn.evaluate`` stays
cheap (scikit-learn loads on first use)::

    from galearn.evaluate import agreement_metrics, uvj_class
    m = agreement_metrics(features, labels, random_state=0)
"""

from __future__ import annotations


from .._lazy import lazy_exports


__all__ = [
    # uvj
    "QUIESCENT",
    "STAR_FORMING",
    "UVJ_COLUMN",
    "uvj_class",
    "uvj_class_of_catalog",
    # agreement
    "agreement_metrics",
    "compare_labels",
    "cluster_agreement",
    "label_array",
    "AgreementResult",
    # clusters (implemented in galearn.maps.clusters)
    "cluster_features",
    "cluster_map",
    "match_clusters",
    # classify stage
    "run_classify",
    "comparison_columns",
    # neighbours
    "similar_galaxies",
]

_WHERE = {
    "QUIESCENT": "..survey.uvj",
    "STAR_FORMING": "..survey.uvj",
    "UVJ_COLUMN": "..survey.uvj",
    "uvj_class": "..survey.uvj",
    "uvj_class_of_catalog": "..survey.uvj",
    "agreement_metrics": ".agreement",
    "compare_labels": ".agreement",
    "cluster_agreement": ".agreement",
    "label_array": ".agreement",
    "AgreementResult": ".agreement",
    "cluster_features": "..maps.clusters",
    "cluster_map": "..maps.clusters",
    "match_clusters": "..maps.clusters",
    "run_classify": ".classify",
    "comparison_columns": ".classify",
    "similar_galaxies": ".neighbours",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
