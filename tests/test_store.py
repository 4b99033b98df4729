"""Workspace store: stamp files, tables, features, maps, metrics (galearn.store)."""

from __future__ import annotations

import astropy.units as u
import h5py
import numpy as np
import pytest
from astropy.table import MaskedColumn, Table
from numpy.testing import assert_allclose, assert_array_equal

from galearn.errors import BadValueError, MissingInputError
from galearn.store import (
    FeatureWriter,
    SampleWriter,
    Workspace,
    atomic_path,
    file_sha256,
    open_sample,
    read_features,
    read_map,
    read_metrics,
    update_metrics,
    write_map,
    write_sample,
)


def _catalog(n: int) -> Table:
    t = Table({"ID": np.arange(n), "zbest": np.linspace(0.1, 2, n)})
    t["Hmag"] = MaskedColumn(np.linspace(20, 25, n), unit=u.mag, mask=np.arange(n) % 3 == 0)
    t["RA_1"] = np.linspace(53.0, 53.1, n) * u.deg
    t["truth_class"] = np.array(["spiral", "elliptical"] * (n // 2) + ["star"] * (n % 2))
    t.meta["SURVEY"] = "GOODS-S"
    t.meta["nested"] = {"a": 1}
    return t


def test_sample_round_trip_keeps_catalogue(tmp_path):
    n = 7
    rng = np.random.default_rng(0)
    phys = rng.normal(size=(n, 3, 16, 16)).astype("f4")
    st = np.clip(phys, 0, 1)
    cat = _catalog(n)
    write_sample(tmp_path / "s.h5", st, cat, physical=phys, bands=["F435W", "F850LP", "F160W"], kind="survey",
                 pixel_scale_arcsec=0.06, stretch={"method": "asinh"}, columns={"id": "ID"},
                 inputs=[{"name": "x"}], extra={"k": 1})
    s = open_sample(tmp_path / "s.h5")
    assert (s.n, s.bands, s.stamp_size, s.kind) == (n, ["F435W", "F850LP", "F160W"], 16, "survey")
    assert s.pixel_scale_arcsec == pytest.approx(0.06)
    assert_array_equal(s.read("physical"), phys)
    assert_array_equal(s.read("stretched", np.array([5, 1, 3])), st[[5, 1, 3]])
    c = s.catalog
    assert c.colnames == cat.colnames
    assert c["Hmag"].unit == u.mag and c["RA_1"].unit == u.deg
    assert_array_equal(np.ma.getmaskarray(c["Hmag"]), np.ma.getmaskarray(cat["Hmag"]))
    assert c.meta["SURVEY"] == "GOODS-S" and c.meta["nested"] == {"a": 1}
    assert list(c["truth_class"]) == list(cat["truth_class"])
    assert list(s.ids()) == [str(i) for i in range(n)]
    assert len(s.rejected) == 0 and s.rejected.colnames == ["row", "id", "reason"]
    batches = list(s.iter_batches(3))
    assert [b.shape[0] for _, b in batches] == [3, 3, 1]
    assert_array_equal(np.concatenate([b for _, b in batches]), st)


def test_sample_writer_streams_truncates_and_is_atomic(tmp_path):
    path = tmp_path / "s.h5"
    cat = _catalog(4)
    with SampleWriter(path, 10, ["R", "G", "B"], 8, kind="images") as w:
        assert not path.exists()  # nothing visible before finish
        for start in (0, 2):
            block = np.full((2, 3, 8, 8), start, dtype="f4")
            w.write(start, block, block)
        w.truncate(4)
        w.finish(cat)
    s = open_sample(path)
    assert s.n == 4
    assert_array_equal(s.read()[:, 0, 0, 0], [0, 0, 2, 2])
    # An exception inside the writer leaves no file behind (and the old one untouched).
    with pytest.raises(RuntimeError):
        with SampleWriter(path, 2, ["R"], 8, kind="images") as w:
            raise RuntimeError("boom")
    assert open_sample(path).n == 4
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(BadValueError, match="never written"):
        with SampleWriter(tmp_path / "t.h5", 2, ["R"], 8, kind="images") as w:
            w.write(0, np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 8, 8)))
            w.finish(_catalog(2))
    with pytest.raises(BadValueError, match="catalogue has 3 rows"):
        with SampleWriter(tmp_path / "t.h5", 2, ["R"], 8, kind="images") as w:
            w.write(0, np.zeros((2, 1, 8, 8)), np.zeros((2, 1, 8, 8)))
            w.finish(_catalog(3))
    assert not (tmp_path / "t.h5").exists()


def test_sample_is_chunked_for_batch_reading(tmp_path):
    write_sample(tmp_path / "s.h5", np.zeros((200, 2, 8, 8), "f4"), _catalog(200), physical=None,
                 bands=["R", "B"], kind="library")
    with h5py.File(tmp_path / "s.h5") as f:
        assert f["stamps/stretched"].chunks[0] < 200
        assert "stamps/physical" not in f
    s = open_sample(tmp_path / "s.h5")
    with pytest.raises(MissingInputError, match="no physical"):
        s.read("physical")


def test_open_sample_errors(tmp_path):
    with pytest.raises(MissingInputError):
        open_sample(tmp_path / "missing.h5")
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(BadValueError, match="not a galearn stamp file"):
        open_sample(tmp_path / "junk.h5")


def test_atomic_path_and_sha(tmp_path):
    p = tmp_path / "a.txt"
    with atomic_path(p) as tmp:
        tmp.write_text("hello")
        assert not p.exists()
    assert p.read_text() == "hello"
    assert file_sha256(p) == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    with pytest.raises(ValueError):
        with atomic_path(p) as tmp:
            tmp.write_text("bye")
            raise ValueError
    assert p.read_text() == "hello"


def test_metrics_merge(tmp_path):
    ws = Workspace(tmp_path)
    update_metrics(ws.metrics, {"sample": {"n_images": 3, "bands": ["R"]}, "timing": {"cutouts": 1.0}})
    update_metrics(ws.metrics, {"timing": {"features": 2.0}})
    m = update_metrics(ws.metrics, {"sample": {"n_images": 5}}, replace=("sample",))
    assert m == read_metrics(ws.metrics)
    assert m["sample"] == {"n_images": 5}
    assert m["timing"] == {"cutouts": 1.0, "features": 2.0}


def test_feature_writer_resumes(tmp_path):
    path = tmp_path / "f.h5"
    ids = np.array(["a", "b", "c", "d"])
    attrs = {"sample_checksum": "x", "backbone": "b"}
    w = FeatureWriter(path, 4, 2, ids, attrs)
    w.write(0, np.ones((2, 2)))
    w.close()  # interrupted
    w = FeatureWriter(path, 4, 2, ids, attrs)
    assert w.n_done == 2
    w.write(2, 2 * np.ones((2, 2)))
    w.finish({"dim": 2})
    f = read_features(path)
    assert_allclose(f.values[:, 0], [1, 1, 2, 2])
    assert list(f.ids) == list(ids) and f.attrs["dim"] == 2
    w = FeatureWriter(path.with_name("g.h5"), 4, 2, ids, attrs)
    w.write(0, np.ones((1, 2)))
    w.close()
    w = FeatureWriter(path.with_name("g.h5"), 4, 2, ids, dict(attrs, sample_checksum="y"))
    assert w.n_done == 0  # another sample: the partial file is discarded
    w.close()


def test_map_round_trip(tmp_path):
    ws = Workspace(tmp_path)
    emb = np.random.default_rng(0).normal(size=(5, 2))
    write_map(ws.map("tsne"), emb, np.array(list("abcde")), {"method": "tsne"}, model={"m": 1},
              model_path=ws.map_model("tsne"))
    e, ids, attrs = read_map(ws.map("tsne"))
    assert_allclose(e, emb) and list(ids) == list("abcde") and attrs == {"method": "tsne"}
    with pytest.raises(MissingInputError, match="galearn embed"):
        read_map(ws.map("umap"))
