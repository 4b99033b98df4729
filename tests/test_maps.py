"""Maps: t-SNE / UMAP / PCA estimators and `galearn embed`."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from sklearn.datasets import make_blobs
from sklearn.exceptions import NotFittedError

from conftest import make_stamp_workspace, write_feature_files

from galearn.cli import main
from galearn.config import EmbedConfig
from galearn.errors import BadValueError, MissingInputError
from galearn.maps import PCAMap, TSNEMap, UMAPMap, run_embed
from galearn.store import (FeatureWriter, load_map_model, open_sample, read_map, read_metrics,
                           update_manifest, write_sample)


def blobs(n=150, dim=20, centers=3, seed=0, std=1.5):
    return make_blobs(n_samples=n, centers=centers, n_features=dim, cluster_std=std, random_state=seed)


def spread(embedding):
    return float(np.mean(np.std(embedding, axis=0)))


def make_workspace(root, n=120, dim=16, backbones=("efficientnet-lite0",), library=0, seed=0):
    """A workspace with sample.h5, feature files and (optionally) a library + its features."""
    rng = np.random.default_rng(seed)
    X, y = blobs(n=n, dim=dim, seed=seed)
    ws = make_stamp_workspace(root, stamps=rng.uniform(0, 1, (n, 3, 8, 8)), bands=["B", "G", "R"],
                              ids=np.arange(n) + 100, columns={"truth_class": np.array(["a", "b", "c"])[y]})
    sample = open_sample(ws.sample)
    write_feature_files(ws, sample, backbones, X, rng)
    if library:
        lib_cat = Table({"ID": [f"gan-{i}" for i in range(library)]})
        write_sample(ws.library, rng.uniform(0, 1, (library, 3, 8, 8)), lib_cat, physical=None,
                     bands=["B", "G", "R"], kind="library", columns={"id": "ID"})
        lib = open_sample(ws.library)
        w = FeatureWriter(ws.features(backbones[0], library=True), library, dim, lib.ids(),
                          {"sample_checksum": lib.checksum})
        w.write(0, X[:library].astype("f4") + 0.01)  # copies of the first galaxies
        w.finish({"backbone": backbones[0]})
    return ws, X, y


# ----------------------------------------------------------------------------- estimators


def test_tsne_same_seed_same_map_and_different_seed_differs():
    X, _ = blobs(n=100)
    a = TSNEMap(perplexity=15, n_jobs=1, random_state=3).fit(X).embedding_
    b = TSNEMap(perplexity=15, n_jobs=1, random_state=3).fit(X).embedding_
    c = TSNEMap(perplexity=15, n_jobs=1, random_state=4).fit(X).embedding_
    assert a.shape == (100, 2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_tsne_separates_blobs_and_transform_places_copies_next_to_originals():
    X, y = blobs(n=150, dim=20)
    m = TSNEMap(perplexity=20, n_jobs=1, random_state=0).fit(X)
    emb = m.embedding_.copy()
    # blobs stay apart on the map: each point's nearest map neighbour is from its own blob
    d = np.linalg.norm(emb[:, None] - emb[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    assert np.mean(y[d.argmin(axis=1)] == y) > 0.95
    new = X[:10] + np.random.default_rng(1).normal(0, 1e-3, (10, X.shape[1]))
    placed = m.transform(new)
    assert placed.shape == (10, 2)
    dist = np.linalg.norm(placed - emb[:10], axis=1)
    assert np.max(dist) < 0.1 * spread(emb), (dist, spread(emb))
    # placing points does not refit or move the map
    np.testing.assert_array_equal(m.embedding_, emb)
    np.testing.assert_allclose(np.asarray(m.tsne_embedding_), emb, atol=1e-9)


def test_tsne_constructor_parameters_reach_opentsne(monkeypatch):
    import openTSNE

    seen = {}
    real = openTSNE.TSNE

    class Spy(real):
        def __init__(self, **kwargs):
            seen.update(kwargs)
            super().__init__(**kwargs)

    monkeypatch.setattr(openTSNE, "TSNE", Spy)
    X, _ = blobs(n=80, dim=12)
    m = TSNEMap(perplexity=7, pca_components=5, n_jobs=1, random_state=np.int64(11), n_iter=50).fit(X)
    assert seen["perplexity"] == 7 and seen["n_jobs"] == 1 and seen["n_iter"] == 50
    assert seen["random_state"] == 11 and type(seen["random_state"]) is int  # plain int for openTSNE
    assert seen["initialization"] == "pca"
    assert m.reducer_.named_steps["pca"].n_components_ == 5
    assert m.get_params()["perplexity"] == 7  # stored unchanged


def test_tsne_small_sample_lowers_perplexity():
    X, _ = blobs(n=30, dim=6)
    m = TSNEMap(perplexity=30, n_jobs=1, random_state=0).fit(X)
    assert m.perplexity_ == pytest.approx(29 / 3)
    assert np.isfinite(m.embedding_).all()


def test_pca_map_transform_matches_embedding():
    X, _ = blobs(n=60, dim=10)
    m = PCAMap(random_state=0).fit(X)
    np.testing.assert_allclose(m.transform(X), m.embedding_, atol=1e-9)
    assert m.explained_variance_ratio_[0] >= m.explained_variance_ratio_[1] > 0


@pytest.mark.parametrize("estimator", [TSNEMap(n_jobs=1, n_iter=50, random_state=0), PCAMap(random_state=0)])
def test_bad_input(estimator):
    X, _ = blobs(n=40, dim=8)
    with pytest.raises(NotFittedError):
        estimator.transform(X)
    bad = X.copy()
    bad[5, 2] = np.nan
    with pytest.raises(BadValueError, match="row 5"):
        estimator.fit(bad)
    with pytest.raises(BadValueError, match="2-D"):
        estimator.fit(X[0])
    estimator.fit(X)
    with pytest.raises(BadValueError, match="8"):
        estimator.transform(X[:, :5])


@pytest.mark.slow
def test_umap_seeded_and_transform():
    pytest.importorskip("umap")
    X, _ = blobs(n=120, dim=12)
    a = UMAPMap(n_neighbors=10, random_state=0).fit(X)
    b = UMAPMap(n_neighbors=10, random_state=0).fit(X)
    np.testing.assert_allclose(a.embedding_, b.embedding_)
    placed = a.transform(X[:5] + 1e-4)
    assert np.max(np.linalg.norm(placed - a.embedding_[:5], axis=1)) < 0.2 * spread(a.embedding_)


# ----------------------------------------------------------------------------- run_embed


def test_run_embed_writes_map_model_and_library_map(tmp_path):
    ws, X, _ = make_workspace(tmp_path / "ws", library=6)
    out = run_embed(ws, EmbedConfig(method="tsne", perplexity=15, n_jobs=1, random_state=0))
    assert out == ws.map("tsne")
    emb, ids, attrs = read_map(out)
    assert emb.shape == (120, 2) and list(ids[:2]) == ["100", "101"]
    assert attrs["backbone"] == "efficientnet-lite0" and attrs["method"] == "tsne"
    model = load_map_model(ws.map_model("tsne"))
    np.testing.assert_array_equal(model.embedding_, emb)
    lib_emb, lib_ids, lib_attrs = read_map(ws.library_map("tsne"))
    assert list(lib_ids) == [f"gan-{i}" for i in range(6)]
    assert lib_attrs["placed_with"] == "transform"
    # the library galaxies are copies of the first six: they land next to them
    assert np.max(np.linalg.norm(lib_emb - emb[:6], axis=1)) < 0.1 * spread(emb)
    assert "embed" in read_metrics(ws.metrics)["timing"]


def test_run_embed_chooses_the_feature_file(tmp_path):
    ws, _, _ = make_workspace(tmp_path / "ws", backbones=("efficientnet-lite0", "random-resnet18"))
    with pytest.raises(BadValueError, match="several feature files"):
        run_embed(ws, EmbedConfig(method="pca"))
    update_manifest(ws, {"features": {"backbone": "random-resnet18"}})
    run_embed(ws, EmbedConfig(method="pca"))
    assert read_map(ws.map("pca"))[2]["backbone"] == "random-resnet18"
    run_embed(ws, EmbedConfig(method="pca", backbone="efficientnet-lite0"))
    assert read_map(ws.map("pca"))[2]["backbone"] == "efficientnet-lite0"
    with pytest.raises(MissingInputError, match="resnet50"):
        run_embed(ws, EmbedConfig(method="pca", backbone="resnet50"))
    with pytest.raises(BadValueError, match="--method"):
        run_embed(ws, EmbedConfig(method="mds"))


def test_run_embed_refuses_features_of_another_sample(tmp_path):
    ws, _, _ = make_workspace(tmp_path / "ws")
    other, _, _ = make_workspace(tmp_path / "other", n=100)
    ws.features("efficientnet-lite0").write_bytes(other.features("efficientnet-lite0").read_bytes())
    with pytest.raises(BadValueError, match="re-run `galearn features`"):
        run_embed(ws, EmbedConfig(method="pca"))


def test_cli_embed(tmp_path, capsys):
    ws, _, _ = make_workspace(tmp_path / "ws")
    assert main(["embed", "--workspace", str(ws.root), "--method", "pca"]) == 0
    assert "pca.h5" in capsys.readouterr().out
    assert main(["embed", "--workspace", str(tmp_path / "empty")]) == 2
    assert "galearn features" in capsys.readouterr().err


def test_run_embed_skips_stale_library_features(tmp_path):
    ws, _, _ = make_workspace(tmp_path / "ws", library=6)
    run_embed(ws, EmbedConfig(method="pca"))
    assert ws.library_map("pca").exists()
    # the library is regenerated; its old features no longer match it
    write_sample(ws.library, np.zeros((4, 3, 8, 8)), Table({"ID": ["x1", "x2", "x3", "x4"]}), physical=None,
                 bands=["B", "G", "R"], kind="library", columns={"id": "ID"})
    with pytest.warns(UserWarning, match="not placing the GAN library"):
        run_embed(ws, EmbedConfig(method="pca"))
    assert ws.map("pca").exists() and not ws.library_map("pca").exists()
