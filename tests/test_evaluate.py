"""Agreement metrics, clusters, `galearn classify` and nearest-neighbour look-up."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import MaskedColumn, Table
from sklearn.datasets import make_blobs

from conftest import make_stamp_workspace, write_feature_files

from galearn.cli import main
from galearn.config import ClassifyConfig, EmbedConfig
from galearn.errors import BadValueError, EmptySelectionError, MissingInputError
from galearn.evaluate import (agreement_metrics, compare_labels, label_array, match_clusters, run_classify,
                              similar_galaxies)
from galearn.maps import run_embed
from galearn.runtime import blas_threads
from galearn.store import (FeatureWriter, Workspace, open_sample, read_metrics, read_table, update_manifest,
                           write_sample)

HEADLINE = ("knn_balanced_accuracy", "linear_balanced_accuracy", "ari", "nmi", "cluster_accuracy")
N_NO_UVJ = 7  # rows of the test workspace without rest-frame U


def make_workspace(root, n=150, dim=32, seed=0, backbones=("efficientnet-lite0", "random-resnet18")):
    """Sample with UVJ colours + truth columns; the first backbone separates the truth classes, the other is noise."""
    ws = Workspace(root)
    rng = np.random.default_rng(seed)
    X, y = make_blobs(n_samples=n, centers=3, n_features=dim, cluster_std=2.0, random_state=seed)
    early = y == 0
    V = rng.uniform(20, 24, n)
    U = V + np.where(early, 1.9, 0.7) + rng.normal(0, 0.05, n)  # quiescent vs star-forming
    J = V - (np.where(early, 1.0, 0.8) + rng.normal(0, 0.05, n))
    U[:N_NO_UVJ] = np.nan  # no colour -> no UVJ class
    columns = {
        "zbest": rng.uniform(0.2, 1.5, n),
        "restUXbessel": U, "restVbessel": V, "restJpalomar": J,
        "truth_class": np.array(["elliptical", "spiral", "edge-on"])[y],
        "truth_morph": np.where(early, "early-type", "disk"),
        "Hmag": rng.uniform(20, 25, n),
    }
    make_stamp_workspace(root, stamps=rng.uniform(0, 1, (n, 3, 8, 8)), ids=np.arange(n) + 1000, columns=columns,
                         roles={"z": "zbest", "u_mag": "restUXbessel", "v_mag": "restVbessel",
                                "j_mag": "restJpalomar", "mag": "Hmag"})
    sample = open_sample(ws.sample)
    write_feature_files(ws, sample, backbones, X, rng)
    update_manifest(ws, {"features": {"backbone": backbones[0]}})
    return ws, X, y


# ----------------------------------------------------------------------------- agreement_metrics


@pytest.mark.parametrize("clusterer,space", [("kmeans", "pca"), ("gmm", "pca:5")])
def test_separable_classes_score_near_one(clusterer, space):
    X, y = make_blobs(n_samples=240, centers=4, n_features=40, cluster_std=1.0, random_state=1)
    m = agreement_metrics(X, np.array(["w", "x", "y", "z"])[y], random_state=0, clusterer=clusterer,
                          cluster_space=space, stability_resamples=2)
    assert m["n_classes"] == 4 and m["n_galaxies"] == 240
    assert m["n_clusters"] == 4 and m["stability"] > 0.9  # chosen without labels
    for key in (*HEADLINE, "ami", "cluster_majority_balanced_accuracy"):
        assert m[key] > 0.95, (key, m[key])
    assert np.trace(np.array(m["confusion"]["knn"])) > 0.95 * 240
    counts = np.array(m["confusion"]["clusters"]["counts"])
    assert counts.shape == (4, 4) and counts.sum() == 240
    assert set(m["per_class_recall"]["knn"]) == {"w", "x", "y", "z"}


def test_shuffled_labels_score_near_chance():
    X, y = make_blobs(n_samples=300, centers=3, n_features=30, cluster_std=1.0, random_state=2)
    shuffled = np.random.default_rng(5).permutation(y)
    m = agreement_metrics(X, shuffled, random_state=0, cluster_space="pca", stability_resamples=0)
    assert m["chance_balanced_accuracy"] == pytest.approx(1 / 3)
    assert abs(m["knn_balanced_accuracy"] - 1 / 3) < 0.1
    assert abs(m["linear_balanced_accuracy"] - 1 / 3) < 0.1
    assert abs(m["ari"]) < 0.05 and m["nmi"] < 0.05 and abs(m["ami"]) < 0.05
    assert m["stability"] is None


def test_matches_sklearn_cross_val_score():
    """knn/linear balanced accuracy are exactly the DESIGN pipeline under cross_val_score."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 150)
    X = rng.normal(size=(150, 60))
    X[:, :3] += 1.5 * np.eye(3)[y]  # a weak signal: neither trivial nor chance
    m = agreement_metrics(X, y, random_state=4, cluster_space="pca", stability_resamples=0)
    cv = StratifiedKFold(5, shuffle=True, random_state=4)
    for key, clf in (("knn_balanced_accuracy", KNeighborsClassifier(10)),
                     ("linear_balanced_accuracy", LogisticRegression(max_iter=5000))):
        pipe = make_pipeline(StandardScaler(), PCA(50, random_state=4), clf)
        with blas_threads(1):
            ref = cross_val_score(pipe, X, y, cv=cv, scoring="balanced_accuracy").mean()
        assert m[key] == pytest.approx(ref, abs=1e-9), key
    assert m["pca_components"] == 50
    assert 0.4 < m["knn_balanced_accuracy"] < 0.95 and 0.4 < m["linear_balanced_accuracy"] < 0.99


def test_unlabelled_and_small_classes_are_left_out_not_guessed():
    X, y = make_blobs(n_samples=120, centers=2, n_features=10, cluster_std=3.0, random_state=0)
    labels = np.array(["disk", "early"])[y].astype(object)
    labels[:10] = ""
    labels[10:13] = None
    labels[13:16] = "rare"  # 3 members < 5: excluded, and said so
    masked = np.ma.masked_array(labels, mask=np.isin(np.arange(120), [20, 21]))
    m = agreement_metrics(X, masked, random_state=0, cluster_space="pca", stability_resamples=0)
    assert m["excluded_classes"] == {"rare": 3}
    assert m["n_unlabelled"] == 10 + 3 + 2
    assert m["n_galaxies"] == 120 - 18 and m["classes"] == ["disk", "early"]
    # exactly the numbers of the labelled rows alone
    keep = np.ones(120, bool)
    keep[list(range(16)) + [20, 21]] = False
    alone = agreement_metrics(X[keep], np.array(["disk", "early"])[y[keep]], random_state=0, cluster_space="pca",
                              stability_resamples=0)
    for key in ("knn_balanced_accuracy", "linear_balanced_accuracy"):
        assert m[key] == alone[key]
    # the clusters are made from every galaxy (labelled or not); only the comparison leaves rows out
    fit_all = compare_labels(X, np.array(["disk", "early"])[y], random_state=0, cluster_space="pca",
                             stability_resamples=0)
    assert m["n_clusters"] == fit_all.metrics["n_clusters"]
    column = MaskedColumn(np.where(labels == None, "", labels).astype(str), mask=masked.mask)  # noqa: E711
    res = compare_labels(X, column, random_state=0, cluster_space="pca", stability_resamples=0)
    assert res.metrics == m
    assert not res.included[:22][~keep[:22]].any() and (res.knn_prediction[~keep] == "").all()
    assert (res.clusters[~keep] == -1).all()


def test_same_seed_same_numbers_and_errors():
    X, y = make_blobs(n_samples=100, centers=2, n_features=8, cluster_std=4.0, random_state=0)
    kw = dict(cluster_space="pca", stability_resamples=2)
    assert agreement_metrics(X, y, random_state=7, **kw) == agreement_metrics(X, y, random_state=7, **kw)
    with pytest.raises(EmptySelectionError, match="at least 2 classes"):
        agreement_metrics(X, np.where(y == 0, "a", ""), random_state=0)
    with pytest.raises(BadValueError, match="labels for"):
        agreement_metrics(X, y[:-1])
    with pytest.raises(BadValueError, match="categorical"):
        agreement_metrics(X, X[:, 0])


def test_label_array():
    np.testing.assert_array_equal(label_array(np.array([1.0, 2.0, np.nan])), ["1", "2", ""])
    np.testing.assert_array_equal(label_array(np.array([b"a ", b""])), ["a", ""])
    np.testing.assert_array_equal(label_array(np.array([True, False])), ["1", "0"])


def test_match_clusters_best_one_to_one():
    acc, table, mapping = match_clusters(np.array([0, 0, 1, 1, 2, -1]), np.array([1, 1, 0, 0, 0, 0]), 3, 2)
    assert table.tolist() == [[0, 2], [2, 0], [1, 0]]
    assert mapping == {0: 1, 1: 0} and acc == pytest.approx(4 / 6)  # noise and cluster 2 count as wrong


# ----------------------------------------------------------------------------- run_classify


def test_run_classify_writes_metrics_and_classes(tmp_path):
    ws, _, y = make_workspace(tmp_path / "ws")
    run_embed(ws, EmbedConfig(method="pca"))
    new = run_classify(ws, ClassifyConfig(method="pca", cluster_space="pca", stability_resamples=2))
    metrics = read_metrics(ws.metrics)
    agreement = metrics["agreement"]
    assert set(agreement) == {"uvj_class", "truth_class", "truth_morph"}
    for m in agreement.values():
        assert {"n_classes", *HEADLINE, "confusion"} <= set(m) and m["backbone"] == "efficientnet-lite0"
    uvj = agreement["uvj_class"]
    assert uvj["n_galaxies"] == 150 - N_NO_UVJ and uvj["n_unlabelled"] == N_NO_UVJ
    assert uvj["classes"] == ["quiescent", "star-forming"]
    assert agreement["truth_class"]["knn_balanced_accuracy"] > 0.95
    noise = metrics["agreement_by_backbone"]["random-resnet18"]
    assert set(noise) == set(agreement)
    assert noise["truth_class"]["knn_balanced_accuracy"] < 0.6  # pre-trained clearly ahead of noise
    clusters = metrics["clusters"]
    assert clusters["space"] == "pca" and 2 <= clusters["n_clusters"] <= 10
    # the bootstrap stability of every k considered (issue 15, round 4); the reported one is the chosen k's
    assert set(clusters["stability_by_k"]) == {str(k) for k in range(2, 11)}
    assert clusters["stability"] == clusters["stability_by_k"][str(clusters["n_clusters"])]
    for m in agreement.values():  # one label-free clustering for every column
        assert m["n_clusters"] == clusters["n_clusters"] and m["stability"] == clusters["stability"]
        assert {"cluster_majority_balanced_accuracy", "ami", "majority_rate", "stability"} <= set(m)
    assert sum(r["size"] for r in clusters["summary"]) == 150
    assert "median_z" in clusters["summary"][0] and "uvj_class" in clusters["summary"][0]["fractions"]
    assert len(clusters["typical_ids"]) == clusters["n_clusters"]
    assert new["agreement"] == agreement and "classify" in metrics["timing"]

    table = read_table(ws.classes)
    assert len(table) == 150 and list(table["id"][:2]) == ["1000", "1001"]
    for col in ("uvj_class", "cluster", "cluster_probability", "cluster_outlier", "map_x", "map_y", "truth_class",
                "knn_truth_class", "knn_uvj_class"):
        assert col in table.colnames
    uvj_col = np.asarray(table["uvj_class"].filled("") if hasattr(table["uvj_class"], "filled")
                         else table["uvj_class"]).astype(str)
    assert (uvj_col[:N_NO_UVJ] == "").all() and (uvj_col[N_NO_UVJ:] != "").all()
    assert np.isfinite(table["map_x"]).all()

    # a second run replaces the whole agreement key
    run_classify(ws, ClassifyConfig(compare=("truth_morph",), method="pca", cluster_space="pca",
                                    stability_resamples=2))
    metrics = read_metrics(ws.metrics)
    assert set(metrics["agreement"]) == {"truth_morph"}
    assert metrics["clusters"]["n_clusters"] == clusters["n_clusters"]  # not from the compared column
    assert set(metrics["agreement_by_backbone"]["random-resnet18"]) == {"truth_morph"}


def test_run_classify_hdbscan_needs_the_map(tmp_path):
    ws, _, _ = make_workspace(tmp_path / "ws", backbones=("efficientnet-lite0",))
    with pytest.raises(MissingInputError, match="galearn embed"):
        run_classify(ws, ClassifyConfig(clusterer="hdbscan", method="pca"))
    run_embed(ws, EmbedConfig(method="pca"))
    run_classify(ws, ClassifyConfig(clusterer="hdbscan", method="pca", compare=("truth_class",),
                                    stability_resamples=2))
    clusters = read_metrics(ws.metrics)["clusters"]
    assert clusters["space"] == "map:pca" and clusters["n_clusters"] >= 2
    assert "agreement_by_backbone" not in read_metrics(ws.metrics)


def test_cli_classify_unknown_column_exits_2(tmp_path, capsys):
    ws, _, _ = make_workspace(tmp_path / "ws", backbones=("efficientnet-lite0",))
    assert main(["classify", "--workspace", str(ws.root), "--compare", "NO_SUCH_COLUMN"]) == 2
    err = capsys.readouterr().err
    assert "NO_SUCH_COLUMN" in err and len(err.strip().splitlines()) == 1
    assert main(["classify", "--workspace", str(ws.root), "--compare", "truth_class", "--method", "pca",
                 "--cluster-space", "pca", "classify.stability_resamples=2"]) == 0
    assert "truth_class [efficientnet-lite0]: kNN" in capsys.readouterr().out


# ----------------------------------------------------------------------------- neighbours


def test_similar_galaxies(tmp_path, capsys):
    ws, X, y = make_workspace(tmp_path / "ws", backbones=("efficientnet-lite0",))
    table = similar_galaxies(ws, "1010", k=5)
    assert list(table["rank"]) == [1, 2, 3, 4, 5]
    assert "1010" not in list(table["id"])
    assert np.all(np.diff(table["distance"]) >= 0)
    assert (y[table["row"]] == y[10]).all()  # neighbours from the same class
    assert "zbest" in table.colnames and table.meta["query_id"] == "1010"
    same = similar_galaxies(X, 1010, k=5, ids=np.arange(150) + 1000)
    np.testing.assert_array_equal(same["id"], table["id"])
    with pytest.raises(BadValueError, match="no galaxy with id '77'"):
        similar_galaxies(ws, "77")
    assert main(["similar", "--workspace", str(ws.root), "--id", "1010", "--k", "3"]) == 0
    assert "distance" in capsys.readouterr().out
    assert main(["similar", "--workspace", str(ws.root), "--id", "nope"]) == 2
    # --out: the format its name says, written atomically (no partial or temporary file left behind)
    out = tmp_path / "out" / "like1010.csv"
    assert main(["similar", "--workspace", str(ws.root), "--id", "1010", "--k", "4", "--out", str(out)]) == 0
    assert list(Table.read(out)["rank"]) == [1, 2, 3, 4]
    capsys.readouterr()
    bad = tmp_path / "out" / "like1010.weird"
    assert main(["similar", "--workspace", str(ws.root), "--id", "1010", "--out", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "like1010.weird" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in out.parent.iterdir()) == ["like1010.csv"]


def test_image_folder_labels_need_compare(tmp_path):
    """An ingested folder has no UVJ or truth columns: name the label column."""
    ws = Workspace(tmp_path / "ws")
    X, y = make_blobs(n_samples=60, centers=2, n_features=12, cluster_std=1.0, random_state=0)
    cat = Table({"id": [f"img{i:03d}" for i in range(60)], "morph": np.array(["elliptical", "spiral"])[y],
                 "gz1_class": y})
    write_sample(ws.sample, np.zeros((60, 3, 4, 4)), cat, physical=None, bands=["R", "G", "B"], kind="images",
                 columns={"id": "id"})
    sample = open_sample(ws.sample)
    w = FeatureWriter(ws.features("efficientnet-lite0"), 60, 12, sample.ids(), {"sample_checksum": sample.checksum})
    w.write(0, X.astype("f4"))
    w.finish({"backbone": "efficientnet-lite0"})
    with pytest.raises(EmptySelectionError, match="--compare COLUMN"):
        run_classify(ws, ClassifyConfig(cluster_space="pca"))
    with pytest.raises(BadValueError, match="uvj_class"):
        run_classify(ws, ClassifyConfig(compare=("uvj_class",)))
    out = run_classify(ws, ClassifyConfig(compare=("morph", "gz1_class"), cluster_space="pca",
                                          stability_resamples=2))
    assert out["agreement"]["morph"]["knn_balanced_accuracy"] > 0.95
    assert out["agreement"]["gz1_class"]["classes"] == ["0", "1"]
    table = read_table(ws.classes)
    assert np.isnan(table["map_x"]).all()  # no map yet: positions unknown, not invented
    assert list(table["id"][:2]) == ["img000", "img001"]
