"""Per-k bootstrap stability and the stability-aware choice of k (issue 15, round 4)."""

from __future__ import annotations

import numpy as np
import pytest

from galearn.errors import BadValueError
from galearn.evaluate import agreement_metrics
from galearn.maps import cluster_stability, default_clusters, fit_clusters
from galearn.maps.clusters import stability_by_k
from galearn.runtime import blas_threads


def blobs(seed=0):
    """Three groups in 6-D: a large one, a small one far away, and a mid-sized one close to the large one."""
    rng = np.random.default_rng(seed)
    big = rng.normal(0.0, 1.0, (200, 6))
    near = rng.normal(0.0, 1.0, (80, 6))
    near[:, 0] += 3.0
    small = rng.normal(0.0, 1.0, (40, 6))
    small[:, 1] += 9.0
    X = np.vstack([big, near, small])
    y = np.array(["big"] * 200 + ["near"] * 80 + ["small"] * 40)
    return X, y


def test_stability_by_k_is_cluster_stability_on_shared_resamples():
    X, _ = blobs()
    with blas_threads(1):
        parts = {k: fit_clusters(X, n_clusters=k, random_state=0).labels for k in (2, 3, 4)}
        curve = stability_by_k(X, parts, n_resamples=3, random_state=5)
        assert set(curve) == {2, 3, 4}
        for k, labels in parts.items():
            assert curve[k] == pytest.approx(cluster_stability(X, labels, n_clusters=k, n_resamples=3, random_state=5))
        # a rebuild is called once per resample (not once per k)
        calls = []

        def rebuild(idx, seed):
            calls.append(seed)
            return X[idx]

        assert stability_by_k(X, parts, n_resamples=3, random_state=5, rebuild=rebuild) == pytest.approx(curve)
    assert len(calls) == 3
    with pytest.raises(BadValueError):
        stability_by_k(X, {2: parts[2][:10]}, n_resamples=1)
    with pytest.raises(BadValueError):
        stability_by_k(X, parts, method="hdbscan")


def test_stable_silhouette_reports_the_curve_and_obeys_its_rule():
    X, _ = blobs()
    with blas_threads(1):
        fit = fit_clusters(X, select="stable-silhouette", k_range=(2, 6), n_resamples=4, random_state=0)
        sil = fit_clusters(X, select="silhouette", k_range=(2, 6), random_state=0)
    assert fit.select == "stable-silhouette"
    assert set(fit.stability_scores) == set(fit.scores) == {2, 3, 4, 5, 6}
    assert fit.scores == pytest.approx(sil.scores)  # the same silhouettes, only filtered by stability
    stable = [k for k, s in fit.stability_scores.items() if s >= 0.8]
    want = max(stable, key=fit.scores.get) if stable else max(fit.stability_scores, key=fit.stability_scores.get)
    assert fit.n_clusters == want
    assert fit.stability == pytest.approx(fit.stability_scores[fit.n_clusters])
    assert fit.params["min_stability"] == 0.8 and fit.params["n_resamples"] == 4
    summary = fit.summary()
    assert set(summary["stability_by_k"]) == {"2", "3", "4", "5", "6"}
    # a threshold no k reaches: the most stable k
    strict = fit_clusters(X, select="stable-silhouette", k_range=(2, 6), n_resamples=4, min_stability=1.01,
                          random_state=0)
    assert strict.n_clusters == max(strict.stability_scores, key=strict.stability_scores.get)
    with pytest.raises(BadValueError):
        fit_clusters(X, select="stable-silhouette", n_resamples=0)


def test_default_reports_per_k_stability_and_k_is_label_free():
    X, y = blobs(1)
    rng = np.random.default_rng(2)
    other = rng.choice(["a", "b", "c", "d"], len(y))
    with blas_threads(1):
        fit = default_clusters(X, select="stable-silhouette", k_max=5, stability_resamples=2, random_state=0)
        assert set(fit.stability_scores) == {2, 3, 4, 5}
        assert fit.stability == pytest.approx(fit.stability_scores[fit.n_clusters])
        # 0 resamples: no stability measured, the silhouette alone
        plain = default_clusters(X, select="stable-silhouette", k_max=5, stability_resamples=0, random_state=0)
        assert plain.select == "silhouette" and plain.stability is None and not plain.stability_scores
        a = agreement_metrics(X, y, random_state=0, stability_resamples=2)
        b = agreement_metrics(X, other, random_state=0, stability_resamples=2)
    assert a["n_clusters"] == b["n_clusters"]
    assert a["stability"] == pytest.approx(b["stability"])


def test_spectral_clusterer_finds_the_small_population_stably():
    from galearn.maps import default_method

    X, y = blobs(3)
    with blas_threads(1):
        fit = fit_clusters(X, method="spectral", n_clusters=3, random_state=0)
        again = fit_clusters(X, method="spectral", n_clusters=3, random_state=0)
        chosen = fit_clusters(X, method="spectral", k_range=(2, 5), n_resamples=3, measure_stability=True,
                              random_state=0)
    assert np.array_equal(fit.labels, again.labels)  # seeded, no layout
    small = y == "small"
    best = np.bincount(fit.labels[small]).argmax()
    assert ((fit.labels == best) == small).mean() > 0.98
    assert set(chosen.stability_scores) == {2, 3, 4, 5} and chosen.stability is not None
    assert (fit.predict(X[:5]) == fit.labels[:5]).all()  # nearest fitted neighbour
    assert default_method(True) == ("spectral", "pca") and default_method(False) == ("kmeans", "umap:5")


def test_spectral_partitions_are_scikit_learns_normalised_cut():
    """One Lanczos embedding cut at every k gives SpectralClustering's own partitions (cluster_qr)."""
    import warnings

    from sklearn.cluster import SpectralClustering
    from sklearn.metrics import adjusted_rand_score

    from galearn.maps.clusters import _fuzzy_graph, _spectral_labels, _spectral_maps

    X, y = blobs(1)
    graph = _fuzzy_graph(X, 0)
    maps = _spectral_maps(graph, 6, seed=0)
    assert maps.shape == (len(X), 6)
    for k in (2, 3, 4):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = SpectralClustering(n_clusters=k, affinity="precomputed", assign_labels="cluster_qr",
                                     random_state=0).fit(graph).labels_
        assert adjusted_rand_score(ref, _spectral_labels(maps, k)) > 0.99
    # the normalised cut finds the far, small group at k = 2 ...
    two = _spectral_labels(maps, 2)
    assert adjusted_rand_score(y == "small", two) > 0.95
    # ... and is deterministic for a seed
    np.testing.assert_array_equal(_spectral_labels(_spectral_maps(graph, 6, seed=0), 3), _spectral_labels(maps, 3))
