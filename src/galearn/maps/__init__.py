"""galearn.maps: 2-D maps (t-SNE, UMAP, PCA) of feature vectors, and clustering.

Public names are imported lazily so that ``import galearn.maps`` stays cheap
(scikit-learn, openTSNE and umap-learn load on first use)::

    from galearn.maps import TSNEMap
    m = TSNEMap(random_state=0).fit(features)      # m.embedding_: (N, 2)
    xy_new = m.transform(new_features)             # same map, no refit
"""

from __future__ import annotations


from .._lazy import lazy_exports


__all__ = [
    "TSNEMap",
    "UMAPMap",
    "PCAMap",
    "MAP_METHODS",
    "make_map",
    "run_embed",
    "check_features",
    "pca_dimension",
    "make_reducer",
    "reduce_features",
    "CLUSTERERS",
    "cluster_features",
    "cluster_map",
    "match_clusters",
    "fit_clusters",
    "cluster_space",
    "cluster_stability",
    "ClusterFit",
    "default_clusters",
    "default_method",
]

_WHERE = {
    "TSNEMap": ".embed",
    "UMAPMap": ".embed",
    "PCAMap": ".embed",
    "MAP_METHODS": ".embed",
    "make_map": ".embed",
    "run_embed": ".embed",
    "check_features": ".reduce",
    "pca_dimension": ".reduce",
    "make_reducer": ".reduce",
    "reduce_features": ".reduce",
    "CLUSTERERS": ".clusters",
    "cluster_features": ".clusters",
    "cluster_map": ".clusters",
    "match_clusters": ".clusters",
    "fit_clusters": ".clusters",
    "cluster_space": ".clusters",
    "cluster_stability": ".clusters",
    "ClusterFit": ".clusters",
    "default_clusters": ".clusters",
    "default_method": ".clusters",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
