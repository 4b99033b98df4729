"""Unsupervised clusters of galaxies, with the number of clusters chosen without labels.

Every clusterer takes a *space* (an ``(N, K)`` array: the standardised + PCA
features of :func:`galearn.maps.reduce_features`, a few leading components of
them, a low-dimensional UMAP of them, or the 2-D map) and returns a
:class:`ClusterFit`: one cluster per galaxy (``-1``: outlier / noise for the
density method), a membership probability, the number of clusters and how it
was chosen. Nothing here sees a label.

Methods (``method=``):

``kmeans``
    k-means (``n_init=10``); ``k`` from ``select`` (below) unless given.
``gmm``
    Gaussian mixture (full covariance, k-means start); ``k`` by the lowest BIC unless given.
``ward``
    Agglomerative (Ward) clustering; the cut from ``select``.
``merge``
    Over-clustering then merging: k-means with many centres (``n_micro``,
    default ``clip(N / 25, 20, 100)``), whose centres are merged by a
    size-weighted Ward hierarchy; the cut from ``select``. The recipe of
    unsupervised morphology papers (Hocking et al. 2018, Martin et al. 2020).
``graph``
    Over-clustering then merging by *connectivity*: k-means micro-clusters
    (``n_micro``, default ``clip(N / 15, 20, 100)``) in the space, merged
    greedily by the gain in modularity of the neighbour graph (the UMAP fuzzy
    graph of the PCA space when the space is ``umap:N``, else a 15-neighbour
    fuzzy graph of the space itself), i.e. Clauset-Newman-Moore agglomeration
    of the micro-cluster graph; ``k`` is the number of groups in ``k_range``
    with the highest modularity (``select="modularity"``) unless given.
``spectral``
    Spectral clustering (normalised cut: the spectral embedding of the graph,
    labels by scikit-learn's ``cluster_qr``, as ``SpectralClustering(assign_labels="cluster_qr")``
    but with one Lanczos eigensolve for every ``k``) of the neighbour graph of the galaxies:
    UMAP's fuzzy 15-neighbour graph of the space (or the given ``graph``); no
    layout is optimised, so the partition depends on the galaxies only (and the
    seeded eigensolver). ``k`` from ``select`` unless given.
``hdbscan``
    ``sklearn.cluster.HDBSCAN`` (``min_cluster_size`` default 2 % of the
    galaxies, at least 5); the number of clusters is what the density tree
    gives; outliers are ``-1``.

``select`` (label-free choice of ``k`` in ``k_range``, default 2..10):
``silhouette`` (largest mean silhouette), ``bic`` (Gaussian mixtures),
``stability`` (the largest ``k`` whose bootstrap stability is at least
``min_stability``, see :func:`cluster_stability`), ``stable-silhouette``
(the largest mean silhouette among the ``k`` whose bootstrap stability is at
least ``min_stability``; none: the most stable ``k``), ``modularity`` (``graph`` only).
Both stability criteria measure every ``k`` of ``k_range`` on the same
resamples (:func:`stability_by_k`: one re-built space per resample, then the
method at every ``k``), and report that curve (``ClusterFit.stability_scores``).

Scaling: every method is *fit on a sample, assign the rest*: above
``max_fit`` galaxies (default 20 000; Ward at most 5 000, its tree needs
O(n^2) memory) it is fitted on a seeded random subset and every galaxy is
assigned by :meth:`ClusterFit.predict` (the fitted k-means / mixture for those,
the nearest clustered neighbour for the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BadValueError
from ..runtime import as_seed
from .reduce import check_features

__all__ = [
    "CLUSTERERS", "SELECTORS", "NOISE", "ClusterFit", "fit_clusters", "cluster_stability", "cluster_space",
    "cluster_features", "cluster_map", "match_clusters", "contingency", "majority_labels", "stability_by_k",
    "DEFAULT_K_RANGE", "DEFAULT_MAX_FIT", "DEFAULT_CLUSTERER", "DEFAULT_SPACE", "default_clusters", "default_method",
]

CLUSTERERS = ("kmeans", "gmm", "ward", "merge", "graph", "spectral", "hdbscan")
SELECTORS = ("silhouette", "bic", "stability", "stable-silhouette", "modularity")
NOISE = -1
DEFAULT_K_RANGE = (2, 10)
DEFAULT_MAX_FIT = 20000
WARD_MAX_FIT = 5000
#: The default of ``galearn classify`` (measured: docs/maps.md, "Choosing the clusters").
DEFAULT_CLUSTERER = "kmeans"
DEFAULT_SPACE = "umap:5"
DEFAULT_SELECT: str | None = None
#: The default of ``galearn classify`` when the stamps' aperture colours are fused (round 4, docs/maps.md).
COLOUR_CLUSTERER = "spectral"
COLOUR_SPACE = "pca"
DEFAULT_STABILITY_RESAMPLES = 10
_SILHOUETTE_SAMPLE = 5000
#: Neighbours of the UMAP clustering space and of the ``graph`` clusterer's neighbour graph.
UMAP_NEIGHBOURS = 15


@dataclass
class ClusterFit:
    """A fitted clustering.

    Attributes
    ----------
    labels : numpy.ndarray of int, shape (N,)
        Cluster per galaxy, ``0 .. n_clusters - 1``; ``-1``: outlier (hdbscan only).
    probability : numpy.ndarray of float, shape (N,)
        Membership probability of the galaxy's own cluster: the mixture's
        posterior (gmm); a soft assignment ``softmax(-d^2 / 2 s^2)`` to the
        cluster centres with ``s^2`` the mean within-cluster variance per
        dimension (kmeans, ward, merge); HDBSCAN's membership strength
        (0 for outliers).
    n_clusters : int
    method, select : str
    scores : dict
        ``{k: score}`` of the criterion that chose ``k`` (empty when ``k`` was given).
    stability_scores : dict
        ``{k: bootstrap stability}`` for every ``k`` considered, when a
        stability criterion chose ``k`` (:func:`stability_by_k`); empty otherwise.
    params : dict
        Settings used (``k_range``, ``min_cluster_size``, ``n_micro`` ...).
    """

    labels: np.ndarray
    probability: np.ndarray
    n_clusters: int
    method: str
    select: str | None = None
    scores: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    space: str | None = None
    points: np.ndarray | None = None
    stability: float | None = None
    model: object = None
    fit_points: np.ndarray | None = None
    fit_labels: np.ndarray | None = None
    graph: object = None
    stability_scores: dict = field(default_factory=dict)

    @property
    def outlier(self) -> np.ndarray:
        """Boolean (N,): galaxies in no cluster."""
        return self.labels < 0

    def predict(self, S_new) -> np.ndarray:
        """Cluster of new points in the same space (fit-on-sample, assign-rest)."""
        S_new = check_features(S_new, name="space", min_samples=1)
        if self.method in ("kmeans", "gmm") and self.model is not None:
            return _relabel(self.model.predict(S_new), self.params.get("order"))
        return _nearest_label(self.fit_points, self.fit_labels, S_new)

    def typical(self, S, n: int = 8) -> dict[int, np.ndarray]:
        """Per cluster, the indices of its ``n`` members nearest its centre (mean of its members in ``S``)."""
        S = check_features(S, name="clustering space", min_samples=1)
        out = {}
        for c in np.unique(self.labels[self.labels >= 0]):
            members = np.flatnonzero(self.labels == c)
            d2 = ((S[members] - S[members].mean(axis=0)) ** 2).sum(axis=1)
            out[int(c)] = members[np.argsort(d2, kind="stable")[: int(n)]]
        return out

    def summary(self) -> dict:
        """JSON-ready description (method, select, n_clusters, sizes, n_outliers, scores, params)."""
        found = np.unique(self.labels[self.labels >= 0])
        return {
            "method": self.method,
            "space": self.space,
            "select": self.select,
            "n_clusters": int(self.n_clusters),
            "sizes": {str(int(c)): int((self.labels == c).sum()) for c in found},
            "n_outliers": int((self.labels < 0).sum()),
            "stability": None if self.stability is None else float(self.stability),
            "scores": {str(k): float(v) for k, v in self.scores.items()},
            "stability_by_k": {str(k): float(v) for k, v in self.stability_scores.items()},
            "params": _jsonable(self.params),
        }


def _jsonable(d: dict) -> dict:
    out = {}
    for k, v in d.items():
        if k == "order":
            continue
        if isinstance(v, (np.integer,)):
            v = int(v)
        elif isinstance(v, (np.floating,)):
            v = float(v)
        elif isinstance(v, tuple):
            v = list(v)
        out[k] = v
    return out


def _relabel(labels: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    labels = np.asarray(labels, dtype=np.int64)
    if order is None:
        return labels
    out = np.full_like(labels, NOISE)
    ok = labels >= 0
    out[ok] = order[labels[ok]]
    return out


def _size_order(labels: np.ndarray, n: int) -> np.ndarray:
    """Map raw cluster ids to ids ordered by decreasing size (ties: lower raw id first)."""
    counts = np.bincount(labels[labels >= 0], minlength=n)
    rank = np.argsort(-counts, kind="stable")
    order = np.empty(n, dtype=np.int64)
    order[rank] = np.arange(n)
    return order


def _nearest_label(points: np.ndarray, labels: np.ndarray, S_new: np.ndarray) -> np.ndarray:
    from sklearn.neighbors import NearestNeighbors

    ok = labels >= 0
    if not ok.any():
        return np.full(len(S_new), NOISE, dtype=np.int64)
    nn = NearestNeighbors(n_neighbors=1).fit(points[ok])
    idx = nn.kneighbors(S_new, return_distance=False)[:, 0]
    return labels[ok][idx].astype(np.int64)


def _soft_membership(S: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Own-cluster probability of an isotropic mixture at the cluster centres (shared variance)."""
    counts = np.bincount(labels, minlength=k).astype(np.float64)
    sums = np.zeros((k, S.shape[1]))
    np.add.at(sums, labels, S)
    centres = sums / np.maximum(counts, 1.0)[:, None]
    d2 = np.maximum((S ** 2).sum(axis=1)[:, None] - 2.0 * S @ centres.T + (centres ** 2).sum(axis=1)[None, :], 0.0)
    s2 = max(float(d2[np.arange(len(S)), labels].mean()) / S.shape[1], 1e-12)
    logit = -d2 / (2.0 * s2)
    logit -= logit.max(axis=1, keepdims=True)
    p = np.exp(logit)
    p /= p.sum(axis=1, keepdims=True)
    return p[np.arange(len(S)), labels]


def _silhouette(S, labels, seed) -> float:
    from sklearn.metrics import silhouette_score

    n_lab = len(np.unique(labels[labels >= 0]))
    keep = labels >= 0
    if n_lab < 2 or n_lab >= keep.sum():
        return -1.0
    size = min(_SILHOUETTE_SAMPLE, int(keep.sum()))
    return float(silhouette_score(S[keep], labels[keep], sample_size=size if size < keep.sum() else None,
                                  random_state=seed))


# ----------------------------------------------------------------------------- the raw partitioners


def _kmeans(S, k, seed):
    from sklearn.cluster import KMeans

    model = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(S)
    return model.labels_.astype(np.int64), model


def _gmm(S, k, seed):
    from sklearn.mixture import GaussianMixture

    model = GaussianMixture(n_components=k, covariance_type="full", n_init=1, reg_covar=1e-4, max_iter=200,
                            random_state=seed).fit(S)
    return model.predict(S).astype(np.int64), model


def _spectral_maps(graph, n_components: int, seed: int) -> np.ndarray:
    """Spectral embedding of a sparse symmetric affinity graph, ``(N, n_components)``.

    The leading eigenvectors of the normalised affinity ``D^-1/2 W D^-1/2``
    (the trailing ones of the normalised Laplacian), divided by the square
    root of the degree: what ``sklearn.manifold.spectral_embedding`` returns
    with ``drop_first=False``, but found by Lanczos iteration on the affinity
    (``scipy.sparse.linalg.eigsh``, ``which="LA"``, seeded start vector) rather
    than ARPACK's shift-invert mode, whose sparse LU factorisation of a
    neighbour graph grows steeply with N (measured in docs/maps.md "Spectral
    clustering at scale": the same partitions, orders of magnitude faster at
    20 000 galaxies). One embedding serves every number of clusters.
    """
    import scipy.sparse as sp

    W = sp.csr_matrix(graph, dtype=np.float64)
    n = W.shape[0]
    n_components = max(1, min(int(n_components), n - 1))
    inv_sqrt_degree = 1.0 / np.sqrt(np.maximum(np.asarray(W.sum(axis=1)).ravel(), 1e-12))
    A = sp.diags(inv_sqrt_degree) @ W @ sp.diags(inv_sqrt_degree)
    if n <= 5 * n_components + 1:  # tiny graphs: dense
        from scipy.linalg import eigh

        values, vectors = eigh(A.toarray())
    else:
        from scipy.sparse.linalg import eigsh

        v0 = np.random.default_rng(seed).uniform(-1.0, 1.0, n)
        values, vectors = eigsh(A, k=n_components, which="LA", v0=v0, tol=1e-6)
    order = np.argsort(-values)[:n_components]
    return vectors[:, order] * inv_sqrt_degree[:, None]


def _spectral_labels(maps: np.ndarray, k: int) -> np.ndarray:
    """Normalised-cut partition into ``k`` groups from the first ``k`` columns of :func:`_spectral_maps`.

    The labels are assigned by scikit-learn's ``cluster_qr`` (pivoted QR,
    Damle, Minden & Ying 2019; deterministic), as ``SpectralClustering(assign_labels="cluster_qr")``.
    """
    from sklearn.cluster._spectral import cluster_qr  # noqa: PLC2701 (no public name; SpectralClustering's own)

    if k <= 1:
        return np.zeros(len(maps), dtype=np.int64)
    return np.asarray(cluster_qr(maps[:, :k]), dtype=np.int64)


def _ward_tree(S):
    from scipy.cluster.hierarchy import linkage

    return linkage(S, method="ward")


def _cut(tree, k):
    from scipy.cluster.hierarchy import fcluster

    return (fcluster(tree, t=k, criterion="maxclust") - 1).astype(np.int64)


def _micro(S, n_micro, seed):
    """Over-clustering: k-means with many centres; returns (micro labels, centres, sizes)."""
    from sklearn.cluster import KMeans

    m = KMeans(n_clusters=n_micro, n_init=3, random_state=seed).fit(S)
    sizes = np.bincount(m.labels_, minlength=n_micro).astype(np.float64)
    return m.labels_.astype(np.int64), m.cluster_centers_, sizes


def _merge_tree(centres, sizes):
    """Size-weighted Ward hierarchy of micro-cluster centres (Lance-Williams, exact for weighted points)."""
    # Ward on weighted centroids == Ward on the points when every micro-cluster is collapsed to its centre:
    # the merge cost of clusters a, b is n_a n_b / (n_a + n_b) |c_a - c_b|^2.
    n = len(centres)
    active = {i: (centres[i].astype(np.float64), float(sizes[i])) for i in range(n) if sizes[i] > 0}
    members = {i: [i] for i in active}
    merges = []
    next_id = n
    while len(active) > 1:
        ids = list(active)
        C = np.stack([active[i][0] for i in ids])
        w = np.array([active[i][1] for i in ids])
        d2 = ((C[:, None, :] - C[None, :, :]) ** 2).sum(axis=2)
        cost = (w[:, None] * w[None, :]) / (w[:, None] + w[None, :]) * d2
        np.fill_diagonal(cost, np.inf)
        a, b = np.unravel_index(np.argmin(cost), cost.shape)
        ia, ib = ids[a], ids[b]
        (ca, wa), (cb, wb) = active.pop(ia), active.pop(ib)
        active[next_id] = ((wa * ca + wb * cb) / (wa + wb), wa + wb)
        members[next_id] = members.pop(ia) + members.pop(ib)
        merges.append((ia, ib))
        next_id += 1
    return merges, n


def _merge_cut(merges, n_micro, present, k):
    """Micro-cluster -> merged cluster for a cut into ``k`` groups."""
    groups = {i: [i] for i in present}
    n_groups = len(present)
    next_id = n_micro
    for a, b in merges:
        if n_groups <= k:
            break
        groups[next_id] = groups.pop(a) + groups.pop(b)
        n_groups -= 1
        next_id += 1
    out = np.full(n_micro, NOISE, dtype=np.int64)
    for g, (_, items) in enumerate(sorted(groups.items())):
        out[items] = g
    return out


#: Below this many points the fuzzy graph is built from exact distances, as ``umap.UMAP`` itself does
#: for small data (no NN-descent, whose numba compilation costs about a minute per process).
EXACT_GRAPH_MAX = 4096


def _fuzzy_graph(S, seed):
    """UMAP's fuzzy neighbour graph of the points themselves (sparse, symmetric)."""
    import warnings

    from umap.umap_ import fuzzy_simplicial_set

    k = min(UMAP_NEIGHBOURS, len(S) - 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if len(S) < EXACT_GRAPH_MAX:
            from sklearn.metrics import pairwise_distances

            graph = fuzzy_simplicial_set(pairwise_distances(S), k, np.random.RandomState(seed), "precomputed")[0]
        else:
            graph = fuzzy_simplicial_set(S, k, np.random.RandomState(seed), "euclidean")[0]
    return graph.tocsr()


def _micro_graph(graph, micro, n_micro):
    """Summed edge weights between micro-clusters: ``W = M^T G M`` (``M``: galaxy -> micro-cluster indicator)."""
    import scipy.sparse as sp

    n = len(micro)
    M = sp.csr_matrix((np.ones(n), (np.arange(n), micro)), shape=(n, n_micro))
    W = (M.T @ sp.csr_matrix(graph) @ M).toarray()
    return 0.5 * (W + W.T)


def _modularity_merge(W, k_max):
    """Greedy modularity agglomeration (Clauset, Newman & Moore 2004) of a small weighted graph.

    Starting from one group per node of ``W`` (``(m, m)``, symmetric, diagonal =
    internal weight), merge the pair with the largest modularity gain
    ``2 (e_ab - a_a a_b)`` until one group is left. Returns ``{k: (group per
    node, modularity)}`` for every ``k <= k_max`` reached.
    """
    m = len(W)
    total = float(W.sum())
    E = W / total if total > 0 else np.full((m, m), 1.0 / max(m * m, 1))
    active = list(range(m))
    groups = {i: [i] for i in range(m)}
    out = {}
    while True:
        A = E[np.ix_(active, active)]
        if len(active) <= k_max:
            lab = np.empty(m, dtype=np.int64)
            for g, i in enumerate(active):
                lab[groups[i]] = g
            out[len(active)] = (lab, float(np.trace(A) - (A.sum(axis=1) ** 2).sum()))
        if len(active) == 1:
            return out
        a = A.sum(axis=1)
        gain = 2.0 * (A - np.outer(a, a))
        np.fill_diagonal(gain, -np.inf)
        i, j = np.unravel_index(np.argmax(gain), gain.shape)
        gi, gj = active[i], active[j]
        E[gi, :] += E[gj, :]
        E[:, gi] += E[:, gj]
        E[gj, :] = 0.0
        E[:, gj] = 0.0
        groups[gi] += groups.pop(gj)
        active.remove(gj)


# ----------------------------------------------------------------------------- public API


def cluster_space(Z, space: str = "pca", *, xy=None, random_state=0, return_graph: bool = False):
    """The points a clusterer works on.

    Parameters
    ----------
    Z : array (N, K)
        Standardised + PCA-reduced features (:func:`galearn.maps.reduce_features`).
    space : str
        ``pca`` (all of ``Z``), ``pca:N`` (its first N components), ``umap:N``
        (an N-dimensional UMAP of ``Z``: ``n_neighbors=15``, ``min_dist=0``,
        seeded; for clustering, not display) or ``map`` (``xy``, the 2-D map).
    xy : array (N, 2) or None
        Map coordinates, for ``space="map"``.
    return_graph : bool
        Return ``(points, graph)``: for ``umap:N`` the UMAP fuzzy neighbour
        graph of ``Z`` (sparse ``(N, N)``, what the ``graph`` clusterer
        merges on), None for the other spaces.
    """
    Z = check_features(Z, name="reduced features", min_samples=2)
    kind = str(space).partition(":")[0]
    if return_graph and kind != "umap":
        return cluster_space(Z, space, xy=xy, random_state=random_state), None
    kind, _, arg = str(space).partition(":")
    if kind == "pca" and not arg:
        return Z
    if kind == "map" and not arg:
        if xy is None:
            raise BadValueError("cluster space 'map' needs the map: run `galearn embed` first")
        xy = check_features(xy, name="map coordinates", min_samples=2)
        if len(xy) != len(Z):
            raise BadValueError(f"the map has {len(xy)} rows for {len(Z)} galaxies: re-run `galearn embed`")
        return xy
    try:
        dim = int(arg)
    except ValueError:
        dim = 0
    if kind in ("pca", "umap") and dim >= 1:
        if kind == "pca":
            return np.ascontiguousarray(Z[:, :min(dim, Z.shape[1])])
        import warnings

        from umap import UMAP

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = UMAP(n_components=dim, n_neighbors=min(UMAP_NEIGHBOURS, len(Z) - 1), min_dist=0.0,
                         random_state=as_seed(random_state)).fit(Z)
        emb = np.ascontiguousarray(model.embedding_, dtype=np.float64)
        if return_graph:
            return emb, model.graph_.tocsr()
        return emb
    raise BadValueError(f"unknown cluster space {space!r} (option --cluster-space); "
                        "choose pca, pca:N, umap:N or map")


def fit_clusters(
    S,
    *,
    method: str = "kmeans",
    n_clusters: int | None = None,
    select: str | None = None,
    k_range: tuple[int, int] = DEFAULT_K_RANGE,
    min_cluster_size: int | None = None,
    min_samples: int | None = None,
    n_micro: int | None = None,
    min_stability: float = 0.8,
    n_resamples: int = 10,
    max_fit: int | None = DEFAULT_MAX_FIT,
    graph=None,
    rebuild=None,
    measure_stability: bool = False,
    random_state=0,
) -> ClusterFit:
    """Cluster the galaxies of a space without labels.

    Parameters
    ----------
    S : array-like, shape (N, K)
        Points to cluster (reduced features, their UMAP, or the 2-D map).
    method : {"kmeans", "gmm", "ward", "merge", "graph", "spectral", "hdbscan"}
    n_clusters : int or None
        Fixed number of clusters (not for hdbscan); None: chosen by ``select``.
    select : {"silhouette", "bic", "stability", "stable-silhouette", "modularity"} or None
        Criterion for ``k`` in ``k_range`` (inclusive). None: ``bic`` for gmm,
        ``modularity`` for graph, ``silhouette`` otherwise.
    min_cluster_size, min_samples : int or None
        HDBSCAN settings (None: 2 % of the galaxies, at least 5; scikit-learn's default).
    n_micro : int or None
        Micro-clusters of ``merge`` (None: ``clip(N / 25, 20, 100)``) or ``graph``
        (None: ``clip(N / 15, 20, 100)``).
    min_stability, n_resamples : float, int
        ``select="stability"``: keep the largest ``k`` whose mean bootstrap ARI
        (``n_resamples`` resamples) is >= ``min_stability`` (else the most stable ``k``);
        ``select="stable-silhouette"``: the best silhouette among those ``k`` (else the
        most stable ``k``). Either sets ``stability`` (of the chosen ``k``) and
        ``stability_scores`` (every ``k``) of the result.
    max_fit : int or None
        Fit on at most this many galaxies (seeded subset), assign the rest.
    graph : scipy sparse matrix (N, N) or None
        Neighbour graph of the galaxies for ``graph`` (e.g. the UMAP fuzzy graph
        from :func:`cluster_space` ``return_graph=True``); None: a 15-neighbour
        fuzzy graph of ``S``.
    rebuild : callable or None
        ``rebuild(idx, seed)`` -> the space of galaxies ``idx`` (rows of ``S``)
        built afresh, for the stability criteria (see :func:`cluster_stability`);
        None: the resampled rows of ``S``.
    measure_stability : bool
        Also measure the bootstrap stability of every ``k`` considered (or of the
        given ``n_clusters``) whatever ``select`` is (``n_resamples`` resamples,
        ``rebuild``; not for hdbscan): ``stability_scores`` and ``stability``
        (of the chosen ``k``) of the result. The stability criteria always do.
    random_state : int, numpy.random.Generator or None

    Returns
    -------
    ClusterFit
        Clusters numbered by decreasing size.
    """
    S = check_features(S, name="clustering space", min_samples=2)
    if method not in CLUSTERERS:
        raise BadValueError(f"unknown clusterer {method!r} (option --clusterer); choose one of {', '.join(CLUSTERERS)}")
    seed = as_seed(random_state)
    n = len(S)
    lo, hi = int(k_range[0]), int(k_range[1])
    if not 1 <= lo <= hi:
        raise BadValueError(f"k_range must be 1 <= low <= high, got {k_range}")
    if n_clusters is not None:
        n_clusters = int(n_clusters)
        if method == "hdbscan":
            raise BadValueError("hdbscan chooses its own number of clusters: leave --n-clusters unset")
        if not 1 <= n_clusters <= n:
            raise BadValueError(f"n_clusters must be between 1 and the number of galaxies ({n}), got {n_clusters}")
    if select is None:
        select = {"gmm": "bic", "graph": "modularity"}.get(method, "silhouette")
    if select not in SELECTORS:
        raise BadValueError(f"unknown cluster-number criterion {select!r}; choose one of {', '.join(SELECTORS)}")
    if select == "bic" and method != "gmm":
        raise BadValueError("select='bic' needs method='gmm' (a likelihood)")
    if select == "modularity" and method != "graph":
        raise BadValueError("select='modularity' needs method='graph' (a neighbour graph)")
    if select in ("stability", "stable-silhouette") and n_clusters is None and method != "hdbscan" \
            and int(n_resamples) < 1:
        raise BadValueError(f"select={select!r} needs stability resamples (classify.stability_resamples >= 1)")
    if graph is not None and getattr(graph, "shape", None) != (n, n):
        raise BadValueError(f"the neighbour graph is {getattr(graph, 'shape', None)} for {n} galaxies")

    fit_idx = np.arange(n)
    if method == "ward" and max_fit is not None:
        max_fit = min(int(max_fit), WARD_MAX_FIT)  # the Ward tree needs O(n^2) memory
    if max_fit is not None and n > int(max_fit):
        fit_idx = np.sort(np.random.default_rng(seed).choice(n, int(max_fit), replace=False))
    Sf = S[fit_idx]
    nf = len(Sf)
    if method in ("graph", "spectral") and graph is not None and nf < n:
        import scipy.sparse as sp

        graph = sp.csr_matrix(graph)[fit_idx][:, fit_idx]
    hi = min(hi, nf - 1) if nf > 2 else 1
    lo = min(lo, hi)
    params: dict = {"k_range": [lo, hi], "n_fit": int(nf)}
    if max_fit is not None and n > int(max_fit):
        params["max_fit"] = int(max_fit)

    if rebuild is not None and nf < n:
        rebuild = (lambda idx, s, _outer=rebuild: _outer(fit_idx[idx], s))
    fit = _fit_raw(Sf, method, n_clusters, select, lo, hi, min_cluster_size, min_samples, n_micro,
                   min_stability, n_resamples, seed, params, graph, rebuild,
                   measure_stability and int(n_resamples) > 0)
    raw, model, scores, k, stab = fit
    order = _size_order(raw, max(k, int(raw.max(initial=-1)) + 1))
    labels_f = _relabel(raw, order)
    result = ClusterFit(labels=labels_f, probability=np.ones(nf), n_clusters=int(len(np.unique(labels_f[labels_f >= 0]))),
                        method=method, select=None if (n_clusters is not None or method == "hdbscan") else select,
                        scores=scores, params={**params, "order": order}, model=model, fit_points=Sf,
                        fit_labels=labels_f, stability_scores=stab)
    if stab:
        result.stability = float(stab[k])
    if nf < n:
        labels = result.predict(S)
        labels[fit_idx] = labels_f
    else:
        labels = labels_f
    result.labels = labels
    result.probability = membership_probability(S, labels, result, model)
    return result


def default_clusters(
    X,
    *,
    method: str | None = None,
    space: str | None = None,
    xy=None,
    select: str | None = None,
    n_clusters: int | None = None,
    k_max: int | None = None,
    min_cluster_size: int | None = None,
    stability_resamples: int = DEFAULT_STABILITY_RESAMPLES,
    max_components: int | None = 50,
    random_state=0,
) -> ClusterFit:
    """The label-free clustering of raw feature vectors that ``galearn classify`` makes.

    Standardise + PCA (:func:`galearn.maps.reduce_features`), build the space
    (:func:`cluster_space`; ``xy`` for ``map``), :func:`fit_clusters`, then
    its :func:`cluster_stability` over ``stability_resamples`` seeded resamples
    (0: not measured). None arguments take the measured defaults
    (:data:`DEFAULT_CLUSTERER`, :data:`DEFAULT_SPACE`, :data:`DEFAULT_SELECT`,
    ``k`` in 2 .. 10).
    """
    from .reduce import reduce_features

    method = DEFAULT_CLUSTERER if method is None else method
    space = DEFAULT_SPACE if space is None else space
    select = _select_for(select, method, n_clusters, stability_resamples)
    seed = as_seed(random_state)
    Z, _ = reduce_features(X, max_components=max_components, random_state=seed)
    S, graph = cluster_space(Z, space, xy=xy, random_state=seed, return_graph=True)
    k_range = (DEFAULT_K_RANGE[0], int(k_max) if k_max is not None else DEFAULT_K_RANGE[1])
    rebuild = ((lambda idx, s: cluster_space(Z[idx], space, random_state=s,
                                                return_graph=method in ("graph", "spectral")))
               if space.startswith("umap") else None)
    fit = fit_clusters(S, method=method, n_clusters=n_clusters, select=select, k_range=k_range,
                       min_cluster_size=min_cluster_size, graph=graph if method in ("graph", "spectral") else None,
                       n_resamples=int(stability_resamples or 0), rebuild=rebuild,
                       measure_stability=bool(stability_resamples), random_state=seed)
    fit.space = space
    fit.points = S
    fit.graph = graph if method == "graph" else None
    if fit.stability is None and stability_resamples and int(stability_resamples) > 0:
        fit.stability = cluster_stability(
            S, fit.labels, method=method, n_clusters=None if method == "hdbscan" else fit.n_clusters,
            n_resamples=int(stability_resamples), random_state=seed, n_micro=fit.params.get("n_micro"),
            min_cluster_size=fit.params.get("min_cluster_size") if method == "hdbscan" else None, rebuild=rebuild)
    return fit


def default_method(colours_fused: bool) -> tuple[str, str]:
    """``(clusterer, space)`` of ``galearn classify --clusterer auto`` (the default), measured in docs/maps.md.

    With the stamps' aperture colours fused (stamps in linear units: survey
    mosaics, the mock) spectral clustering of the 15-neighbour graph of the
    PCA space (stable: no layout is optimised); without them (display images)
    k-means in the 5-D UMAP.
    """
    return (COLOUR_CLUSTERER, COLOUR_SPACE) if colours_fused else (DEFAULT_CLUSTERER, DEFAULT_SPACE)


def _select_for(select: str | None, method: str, n_clusters, stability_resamples) -> str | None:
    """The k criterion of :func:`default_clusters`: the measured default for the default clusterer; a stability
    criterion falls back to the silhouette when no stability is measured (``stability_resamples=0``)."""
    if select is None and method == DEFAULT_CLUSTERER:
        select = DEFAULT_SELECT
    if select in ("stability", "stable-silhouette") and n_clusters is None and not (stability_resamples or 0):
        select = "silhouette"
    return select


def _fit_raw(S, method, n_clusters, select, lo, hi, min_cluster_size, min_samples, n_micro, min_stability,
             n_resamples, seed, params, graph=None, rebuild=None, measure=False):
    n = len(S)
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        mcs = max(5, int(round(0.02 * n))) if min_cluster_size is None else int(min_cluster_size)
        if mcs < 2:
            raise BadValueError(f"min_cluster_size must be >= 2, got {min_cluster_size}")
        mcs = min(mcs, n)
        params["min_cluster_size"] = mcs
        if min_samples is not None:
            params["min_samples"] = int(min_samples)
        model = HDBSCAN(min_cluster_size=mcs, min_samples=min_samples, copy=True).fit(S)
        raw = model.labels_.astype(np.int64)
        return raw, model, {}, int(raw.max(initial=-1)) + 1, {}

    if method == "merge":
        nm = int(np.clip(round(n / 25), 20, 100)) if n_micro is None else int(n_micro)
        nm = max(2, min(nm, n))
        params["n_micro"] = nm
        micro, centres, sizes = _micro(S, nm, seed)
        merges, _ = _merge_tree(centres, sizes)
        present = [i for i in range(nm) if sizes[i] > 0]
        hi_m = min(hi, len(present))

        def partition(k):
            return _merge_cut(merges, nm, present, k)[micro]
    elif method == "graph":
        nm = int(np.clip(round(n / 15), 20, 100)) if n_micro is None else int(n_micro)
        nm = max(2, min(nm, n))
        params["n_micro"] = nm
        micro, _, _ = _micro(S, nm, seed)
        W = _micro_graph(_fuzzy_graph(S, seed) if graph is None else graph, micro, nm)
        merged = _modularity_merge(W, max(hi, n_clusters or 1))
        hi_m = min(hi, max(merged))

        def partition(k):
            return merged[min(k, max(merged))][0][micro]
    elif method == "spectral":
        maps = _spectral_maps(_fuzzy_graph(S, seed) if graph is None else graph, max(hi, n_clusters or 1), seed)
        hi_m = hi

        def partition(k):
            return _spectral_labels(maps, k)
    elif method == "ward":
        tree = _ward_tree(S)

        def partition(k):
            return _cut(tree, k)
    else:
        hi_m = hi
        cache: dict = {}

        def partition(k):
            if k not in cache:
                cache[k] = (_kmeans if method == "kmeans" else _gmm)(S, k, seed)
            return cache[k][0]
    if method in ("ward",):
        hi_m = hi

    scores: dict = {}
    stab: dict = {}
    if n_clusters is not None:
        k = min(n_clusters, len(present)) if method == "merge" else min(n_clusters, max(merged)) \
            if method == "graph" else n_clusters
    elif select == "modularity":
        scores = {kk: merged[kk][1] for kk in range(max(lo, 2), hi_m + 1) if kk in merged}
        k = max(scores, key=scores.get) if scores else 1
    elif select == "bic":
        for kk in range(lo, hi_m + 1):
            partition(kk)
            scores[kk] = float(cache[kk][1].bic(S))
        k = min(scores, key=scores.get)
    elif select == "silhouette":
        for kk in range(max(lo, 2), hi_m + 1):
            scores[kk] = _silhouette(S, partition(kk), seed)
        k = max(scores, key=scores.get) if scores else 1
    else:  # stability, stable-silhouette: one stability curve over every k, on shared resamples
        ks = list(range(max(lo, 2), hi_m + 1))
        stab = stability_by_k(S, {kk: partition(kk) for kk in ks}, method=method, n_resamples=n_resamples,
                              random_state=seed, rebuild=rebuild, n_micro=params.get("n_micro"))
        ok = [kk for kk in ks if stab[kk] >= min_stability]
        if select == "stability":
            scores = dict(stab)
            k = max(ok) if ok else max(ks, key=stab.get)
        else:
            scores = {kk: _silhouette(S, partition(kk), seed) for kk in ks}
            k = max(ok, key=scores.get) if ok else max(ks, key=stab.get)
        params["min_stability"] = float(min_stability)
    if measure and not stab:  # the stability curve beside another criterion (the partitions are cached)
        ks = [int(k)] if n_clusters is not None else (sorted(scores) or [int(k)])
        stab = stability_by_k(S, {kk: partition(kk) for kk in ks}, method=method, n_resamples=n_resamples,
                              random_state=seed, rebuild=rebuild, n_micro=params.get("n_micro"))
    if stab:
        params["n_resamples"] = int(n_resamples)
    raw = partition(k)
    model = cache[k][1] if method in ("kmeans", "gmm") else None
    return raw, model, scores, int(k), stab


def membership_probability(S, labels, result: ClusterFit, model) -> np.ndarray:
    """Each galaxy's membership probability of its own cluster (0 for outliers); see docs/maps.md ``classes.ecsv``."""
    p = np.zeros(len(S))
    ok = labels >= 0
    if result.method == "gmm" and model is not None:
        order = result.params["order"]
        post = model.predict_proba(S)
        inv = np.argsort(order)  # new id -> raw id
        p[ok] = post[np.flatnonzero(ok), inv[labels[ok]]]
        return p
    if result.method == "hdbscan":
        if len(labels) == len(result.fit_labels) and result.model is not None:
            p[:] = np.where(ok, result.model.probabilities_, 0.0)
        else:
            p[ok] = 1.0
        return p
    if result.n_clusters >= 1 and ok.any():
        p[ok] = _soft_membership(S[ok], labels[ok], result.n_clusters)
    return p


def cluster_stability(
    S,
    labels,
    *,
    method: str = "kmeans",
    n_clusters: int | None = None,
    n_resamples: int = 10,
    fraction: float = 0.8,
    random_state=0,
    rebuild=None,
    **kwargs,
) -> float:
    """Mean ARI between a clustering and the same method re-fitted on seeded resamples.

    Each resample draws ``fraction`` of the galaxies without replacement
    (an m-out-of-n bootstrap: duplicated points would fake density for
    HDBSCAN and zero-distance merges for Ward), re-runs the method with the
    same settings (``n_clusters`` when given, else the same label-free
    choice) and scores ``adjusted_rand_score`` between the resample's
    clusters and ``labels`` on the resampled galaxies (outliers count as one
    more label). ``rebuild(idx, seed)``, when given, returns the space of the
    resampled galaxies built afresh (e.g. a UMAP re-fitted on them; or
    ``(space, neighbour graph)`` for ``graph``), so that
    the figure covers every fitted step, not only the last one.

    Returns
    -------
    float
        Mean ARI over the resamples (1: identical every time).
    """
    S = check_features(S, name="clustering space", min_samples=2)
    key = None if method == "hdbscan" else n_clusters
    return _resample_aris(S, {key: np.asarray(labels, dtype=np.int64)}, method=method, n_resamples=n_resamples,
                          fraction=fraction, random_state=random_state, rebuild=rebuild, **kwargs)[key]


def stability_by_k(
    S,
    partitions: dict,
    *,
    method: str = "kmeans",
    n_resamples: int = 10,
    fraction: float = 0.8,
    random_state=0,
    rebuild=None,
    **kwargs,
) -> dict[int, float]:
    """:func:`cluster_stability` of several partitions of the same galaxies, one per ``k``, on shared resamples.

    ``partitions`` maps ``k`` to the labels (N,) of the method fitted with
    ``n_clusters=k`` on all of ``S``. Each of the ``n_resamples`` seeded
    resamples (the same draws as :func:`cluster_stability` with the same
    ``random_state``) builds its space once (``rebuild``, e.g. a UMAP re-fitted
    on the resampled galaxies), then fits the method at every ``k``; so
    ``stability_by_k(S, {k: labels})[k] == cluster_stability(S, labels, n_clusters=k)``
    and the whole curve costs one space per resample.

    Returns
    -------
    dict
        ``{k: mean ARI over the resamples}``.
    """
    S = check_features(S, name="clustering space", min_samples=2)
    if method == "hdbscan":
        raise BadValueError("stability_by_k needs a method with a number of clusters (not hdbscan)")
    parts = {int(k): np.asarray(v, dtype=np.int64) for k, v in partitions.items()}
    return _resample_aris(S, parts, method=method, n_resamples=n_resamples, fraction=fraction,
                          random_state=random_state, rebuild=rebuild, **kwargs)


def _resample_aris(S, partitions: dict, *, method, n_resamples, fraction, random_state, rebuild, **kwargs) -> dict:
    """Mean ARI per key of ``partitions`` (``{n_clusters or None: labels}``) over seeded m-out-of-n resamples."""
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(as_seed(random_state))
    m = max(2, int(round(float(fraction) * len(S))))
    kw = {k: v for k, v in kwargs.items() if v is not None}
    if method not in ("merge", "graph"):
        kw.pop("n_micro", None)
    for labels in partitions.values():
        if len(labels) != len(S):
            raise BadValueError(f"{len(labels)} cluster labels for {len(S)} galaxies")
    out: dict = {k: [] for k in partitions}
    for _ in range(int(n_resamples)):
        idx = np.sort(rng.choice(len(S), m, replace=False))
        seed = int(rng.integers(0, 2**31 - 1))
        built = S[idx] if rebuild is None else rebuild(idx, seed)
        S_sub, g_sub = built if isinstance(built, tuple) else (built, None)
        if method in ("graph", "spectral"):
            # one neighbour graph per resample, shared by every k (what fit_clusters would build for each)
            kw["graph"] = _fuzzy_graph(S_sub, seed) if g_sub is None else g_sub
        if method == "spectral":  # and one spectral embedding, cut at every k (as fit_clusters does)
            maps = _spectral_maps(kw["graph"], max(k for k in partitions if k is not None), seed)
        for k, labels in partitions.items():
            if method == "spectral":
                sub = _spectral_labels(maps, k)
            elif method == "hdbscan":
                sub = fit_clusters(S_sub, method=method, random_state=seed, max_fit=None, **kw).labels
            else:
                sub = fit_clusters(S_sub, method=method, n_clusters=k, random_state=seed, max_fit=None, **kw).labels
            out[k].append(adjusted_rand_score(labels[idx], sub))
    return {k: float(np.mean(v)) if v else float("nan") for k, v in out.items()}


def majority_labels(clusters, classes, n_classes: int) -> np.ndarray:
    """Many-to-one labelling: each galaxy gets its cluster's majority class (outliers: -1)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    table = contingency(clusters, classes, None, n_classes)
    major = table.argmax(axis=1) if table.size else np.zeros(0, dtype=np.int64)
    out = np.full(len(clusters), NOISE, dtype=np.int64)
    ok = clusters >= 0
    out[ok] = major[clusters[ok]]
    return out


# ----------------------------------------------------------------------------- kept for compatibility


def cluster_features(Z, n_clusters: int, *, method: str = "kmeans", random_state=0) -> np.ndarray:
    """Cluster label (0 .. n_clusters-1) per galaxy from reduced features, with a fixed ``n_clusters``.

    ``method``: ``kmeans`` (``n_init=10``), ``gmm`` (full covariance), ``ward`` or ``merge``
    (see :func:`fit_clusters`).
    """
    if method == "hdbscan":
        raise BadValueError("hdbscan clusters the 2-D map: use cluster_map(xy) (galearn classify --clusterer hdbscan)")
    Z = check_features(Z, name="reduced features", min_samples=1)
    if not 1 <= int(n_clusters) <= len(Z):
        raise BadValueError(f"n_clusters must be between 1 and the number of galaxies ({len(Z)}), got {n_clusters}")
    if len(Z) == 1:
        return np.zeros(1, dtype=np.int64)
    return fit_clusters(Z, method=method, n_clusters=int(n_clusters), random_state=random_state).labels


def cluster_map(xy, *, min_cluster_size: int | None = None) -> np.ndarray:
    """HDBSCAN clusters of 2-D map positions; -1 marks noise (see :func:`fit_clusters`)."""
    xy = check_features(xy, name="map coordinates", min_samples=2)
    return fit_clusters(xy, method="hdbscan", min_cluster_size=min_cluster_size).labels


def contingency(clusters, classes, n_clusters: int | None = None, n_classes: int | None = None) -> np.ndarray:
    """Counts ``C[i, j]`` of galaxies in cluster i and class j (int arrays; noise, -1, dropped)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    classes = np.asarray(classes, dtype=np.int64)
    keep = clusters >= 0
    n_clusters = int(n_clusters if n_clusters is not None else (clusters.max(initial=-1) + 1))
    n_classes = int(n_classes if n_classes is not None else (classes.max(initial=-1) + 1))
    table = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(table, (clusters[keep], classes[keep]), 1)
    return table


def match_clusters(clusters, classes, n_clusters: int | None = None, n_classes: int | None = None):
    """Best one-to-one matching of clusters to classes.

    Parameters
    ----------
    clusters : array of int, shape (N,)
        Cluster per galaxy (-1: noise, never counted as correct).
    classes : array of int, shape (N,)
        Class index per galaxy.

    Returns
    -------
    accuracy : float
        Fraction of all N galaxies whose cluster is matched to their class.
    table : numpy.ndarray, shape (n_clusters, n_classes)
        The contingency matrix.
    mapping : dict
        cluster index -> class index for the matched pairs.
    """
    from scipy.optimize import linear_sum_assignment

    table = contingency(clusters, classes, n_clusters, n_classes)
    n = len(np.asarray(clusters))
    if n == 0 or table.size == 0:
        return 0.0, table, {}
    rows, cols = linear_sum_assignment(table, maximize=True)
    accuracy = float(table[rows, cols].sum() / n)
    return accuracy, table, {int(r): int(c) for r, c in zip(rows, cols)}
