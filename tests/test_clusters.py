"""Label-free clusters (issue 15): the default finds a small population, n_clusters never depends on labels,
the per-cluster summary adds up, catalogue fusion is explicit."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table

from galearn.errors import BadValueError
from galearn.evaluate import agreement_metrics, cluster_agreement
from galearn.evaluate.summary import OUTLIER_ROW, cluster_summary
from galearn.features.fuse import catalog_matrix, check_fuse, fused_name
from galearn.maps import cluster_stability, default_clusters, fit_clusters
from galearn.runtime import blas_threads


def two_populations(n_big=450, n_small=50, dim=40, seed=0):
    """One large and one small population, well separated, in a 40-D feature space."""
    rng = np.random.default_rng(seed)
    big = rng.normal(0.0, 1.0, (n_big, dim))
    small = rng.normal(0.0, 1.0, (n_small, dim))
    small[:, :5] += 6.0
    X = np.vstack([big, small])
    y = np.array(["big"] * n_big + ["small"] * n_small)
    return X, y


def test_default_finds_the_small_population():
    X, y = two_populations()
    with blas_threads(1):
        fit = default_clusters(X, stability_resamples=2, random_state=0)
    assert 2 <= fit.n_clusters <= 10
    small = y == "small"
    # one cluster holds (nearly) all of the small population and (nearly) nothing else
    best = np.bincount(fit.labels[small][fit.labels[small] >= 0]).argmax()
    members = fit.labels == best
    assert (members & small).sum() >= 0.95 * small.sum()
    assert (members & ~small).sum() <= 0.05 * small.sum()
    m = cluster_agreement(fit.labels, (y == "small").astype(int), 2, ["big", "small"])
    assert m["cluster_majority_balanced_accuracy"] > 0.95
    assert m["cluster_majority_accuracy"] > m["majority_rate"] == pytest.approx(0.9)
    assert fit.probability.shape == (len(X),) and ((fit.probability >= 0) & (fit.probability <= 1)).all()
    assert fit.stability is not None and fit.stability > 0.8


def test_n_clusters_does_not_depend_on_the_label_column():
    X, y = two_populations(n_big=200, n_small=40)
    rng = np.random.default_rng(1)
    other = rng.choice(["a", "b", "c"], len(y))  # a different column, with three classes
    with blas_threads(1):
        fit = fit_clusters(X, method="kmeans", random_state=0)
    m1 = agreement_metrics(X, y, clusters=fit.labels, random_state=0)
    m2 = agreement_metrics(X, other, clusters=fit.labels, random_state=0)
    assert m1["n_clusters"] == m2["n_clusters"] == fit.n_clusters
    assert m1["n_classes"] == 2 and m2["n_classes"] == 3
    # without given clusters the label-free default is made from the features alone: same number for both
    a = agreement_metrics(X, y, random_state=0, stability_resamples=0)
    b = agreement_metrics(X, other, random_state=0, stability_resamples=0)
    assert a["n_clusters"] == b["n_clusters"]
    for key in ("ami", "majority_rate", "cluster_majority_balanced_accuracy", "cluster_accuracy", "stability"):
        assert key in a and key in m1
    assert m2["cluster_majority_balanced_accuracy"] < 0.7  # random labels are not recovered


def test_cluster_agreement_definitions():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, -1])
    classes = np.array([0, 0, 1, 1, 1, 0, 0, 1])
    m = cluster_agreement(clusters, classes, 2, ["a", "b"])
    # majority: cluster 0 -> a, 1 -> b, 2 -> a; the outlier is wrong. recall a = 4/4, b = 2/4
    assert m["cluster_majority_balanced_accuracy"] == pytest.approx(0.75)
    assert m["majority_rate"] == pytest.approx(0.5)
    assert m["n_clusters"] == 3 and m["n_outliers"] == 1
    assert m["contingency"]["majority"] == {"cluster 0": "a", "cluster 1": "b", "cluster 2": "a"}


def test_summary_counts_add_up():
    rng = np.random.default_rng(0)
    clusters = rng.integers(-1, 4, 300)
    z = rng.uniform(0, 1, 300)
    z[:5] = np.nan
    uvj = rng.choice(["quiescent", "star-forming", ""], 300)
    rows = cluster_summary(clusters, probability=rng.uniform(0, 1, 300), quantities={"z": z},
                           labels={"uvj_class": uvj})
    assert sum(r["size"] for r in rows) == 300
    assert rows[-1]["cluster"] == OUTLIER_ROW and [r["cluster"] for r in rows[:-1]] == [0, 1, 2, 3]
    assert sum(r["fraction"] for r in rows) == pytest.approx(1.0)
    for r in rows:
        sel = clusters == (-1 if r["cluster"] == OUTLIER_ROW else r["cluster"])
        assert r["median_z"] == pytest.approx(np.nanmedian(z[sel]))
        fr = r["fractions"]["uvj_class"]
        assert sum(fr.values()) == pytest.approx(1.0)
        lab = uvj[sel]
        assert fr["quiescent"] == pytest.approx((lab == "quiescent").sum() / (lab != "").sum())


def test_fit_on_a_sample_assigns_the_rest():
    X, y = two_populations(n_big=400, n_small=100, dim=10)
    with blas_threads(1):
        full = fit_clusters(X, method="kmeans", n_clusters=2, random_state=0)
        sub = fit_clusters(X, method="kmeans", n_clusters=2, random_state=0, max_fit=150)
        ward = fit_clusters(X, method="ward", n_clusters=2, random_state=0, max_fit=150)
    assert sub.params["n_fit"] == 150 and len(sub.labels) == len(X)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(full.labels, sub.labels) > 0.95
    assert adjusted_rand_score(full.labels, ward.labels) > 0.95
    # clusters are numbered by decreasing size
    assert np.bincount(sub.labels)[0] >= np.bincount(sub.labels)[1]


@pytest.mark.parametrize("method", ["gmm", "ward", "merge", "graph", "hdbscan"])
def test_other_methods_find_the_populations(method):
    X, y = two_populations(n_big=300, n_small=60, dim=6)
    with blas_threads(1):
        fit = fit_clusters(X, method=method, random_state=0)
        stab = cluster_stability(X, fit.labels, method=method,
                                 n_clusters=None if method == "hdbscan" else fit.n_clusters, n_resamples=2,
                                 random_state=0, n_micro=fit.params.get("n_micro"))
    m = cluster_agreement(fit.labels, (y == "small").astype(int), 2)
    assert m["cluster_majority_balanced_accuracy"] > 0.9, (method, fit.summary())
    assert 0.0 <= stab <= 1.0
    if method == "hdbscan":
        assert fit.select is None and fit.outlier.dtype == bool


def test_modularity_merge_joins_connected_groups():
    from galearn.maps.clusters import _modularity_merge

    # two cliques of three nodes joined by one weak edge: the best 2-group cut separates them
    W = np.zeros((6, 6))
    for grp in ((0, 1, 2), (3, 4, 5)):
        for i in grp:
            for j in grp:
                if i != j:
                    W[i, j] = 1.0
    W[2, 3] = W[3, 2] = 0.1
    merged = _modularity_merge(W, 6)
    assert sorted(merged) == [1, 2, 3, 4, 5, 6]
    lab, q = merged[2]
    assert len(set(lab[:3])) == 1 and len(set(lab[3:])) == 1 and lab[0] != lab[3]
    assert q == max(v[1] for v in merged.values()) and merged[1][1] == pytest.approx(0.0)


def test_graph_clusterer_on_the_umap_graph():
    X, y = two_populations(n_big=300, n_small=40, dim=20)
    with blas_threads(1):
        fit = default_clusters(X, method="graph", stability_resamples=2, random_state=0)
        fixed = fit_clusters(fit.points, method="graph", n_clusters=3, graph=fit.graph, random_state=0)
        sub = fit_clusters(fit.points, method="graph", graph=fit.graph, max_fit=200, random_state=0)
    assert fit.select == "modularity" and 2 <= fit.n_clusters <= 10 and fit.graph.shape == (340, 340)
    assert set(fit.summary()["scores"]) <= {str(k) for k in range(2, 11)}
    m = cluster_agreement(fit.labels, (y == "small").astype(int), 2)
    assert m["cluster_majority_balanced_accuracy"] > 0.95
    assert fixed.n_clusters == 3 and fixed.select is None
    assert sub.params["n_fit"] == 200 and len(sub.labels) == 340
    assert 0.0 <= fit.stability <= 1.0


def test_bad_clusterer_options():
    X, _ = two_populations(n_big=60, n_small=20, dim=4)
    with pytest.raises(BadValueError, match="unknown clusterer"):
        fit_clusters(X, method="nope")
    with pytest.raises(BadValueError, match="hdbscan chooses"):
        fit_clusters(X, method="hdbscan", n_clusters=3)
    with pytest.raises(BadValueError, match="bic"):
        fit_clusters(X, method="kmeans", select="bic")
    with pytest.raises(BadValueError, match="modularity"):
        fit_clusters(X, method="kmeans", select="modularity")
    with pytest.raises(BadValueError, match="neighbour graph"):
        fit_clusters(X, method="graph", graph=np.eye(3))
    with pytest.raises(BadValueError, match="cluster space"):
        default_clusters(X, space="tsne:3")
    with pytest.raises(BadValueError, match="needs the map"):
        default_clusters(X, space="map")


class _Sample:
    path = "sample.h5"

    def __init__(self):
        self.catalog = Table({"zbest": [0.1, np.nan, 0.5], "name": ["a", "b", "c"]})


def test_fuse_catalog_is_explicit_and_checked():
    assert check_fuse(None)[0] == "none"
    fuse, w = check_fuse("catalog:zbest, mag_F435W")
    assert fuse == "catalog:zbest,mag_F435W" and 0 < w < 1
    assert fused_name("efficientnet-lite0", fuse) == "efficientnet-lite0+catalog"
    with pytest.raises(BadValueError, match="name the catalogue columns"):
        check_fuse("catalog:")
    X, names = catalog_matrix(_Sample(), ["zbest"])
    assert X.shape == (3, 1) and np.isnan(X[1, 0]) and names == ["zbest"]
    with pytest.raises(BadValueError, match="no column 'Hmag'"):
        catalog_matrix(_Sample(), ["Hmag"])
    with pytest.raises(BadValueError, match="not numeric"):
        catalog_matrix(_Sample(), ["name"])
