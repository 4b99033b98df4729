"""Conditioning the GAN on redshift as well as class (gan.redshift_bins; issue 14 item 5, docs/gan-experiments.md round 7)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import make_stamp_workspace
from galearn.errors import BadValueError
from galearn.imaging import AsinhStretch


def _workspace(tmp_path, n: int = 60, *, with_z: bool = True, seed: int = 0):
    pytest.importorskip("torch")
    from test_gan import BANDS, synthetic_galaxies

    physical, labels = synthetic_galaxies(n, seed)
    z = np.random.default_rng(seed + 1).uniform(0.2, 2.5, n)
    z[3] = np.nan  # no redshift: kept in the sample, never trained on
    stretch = AsinhStretch.fit(physical)
    return make_stamp_workspace(tmp_path / "ws", stamps=stretch.forward(physical), bands=BANDS,
                                columns={"truth_class": labels, **({"zbest": z} if with_z else {})},
                                roles={"z": "zbest"} if with_z else None, physical=physical,
                                pixel_scale_arcsec=0.06, stretch=stretch.to_dict())


def test_bin_labels_are_half_open_with_the_last_bin_closed():
    from galearn.gan.data import redshift_bin_labels

    z = np.array([0.5, 0.99999, 1.0, 2.0, 3.0, 3.01, 0.49, np.nan])
    got = redshift_bin_labels(z, (0.5, 1.0, 3.0))
    assert got.tolist() == ["z0.50-1.00", "z0.50-1.00", "z1.00-3.00", "z1.00-3.00", "z1.00-3.00", "", "", ""]
    masked = np.ma.masked_array([0.7, 0.7], mask=[False, True])
    assert redshift_bin_labels(masked, (0.5, 1.0)).tolist() == ["z0.50-1.00", ""]


def test_edges_equal_count_or_given_and_refused_when_bad(tmp_path):
    from galearn.gan.data import redshift_bin_edges, redshift_bin_labels
    from galearn.store import open_sample

    ws = _workspace(tmp_path)
    sample = open_sample(ws.sample)
    z = np.asarray(sample.catalog["zbest"])
    assert redshift_bin_edges(sample, ()) == ()
    edges = redshift_bin_edges(sample, (3,))
    assert len(edges) == 4 and edges[0] <= np.nanmin(z) and edges[-1] >= np.nanmax(z)
    counts = np.unique(redshift_bin_labels(z, edges), return_counts=True)[1][1:]  # [0]: the NaN row's ""
    assert counts.sum() == 59 and counts.min() >= 17  # about equal counts, every finite redshift in a bin
    assert redshift_bin_edges(sample, (0.5, 1, 2.0)) == (0.5, 1.0, 2.0)
    for bad in ((1,), (11,), (2.5,), ("three",), (1.0, 1.0), (2.0, 1.0), (-0.1, 1.0), (0.0, float("nan")), (True,)):
        with pytest.raises(BadValueError, match="gan.redshift_bins"):
            redshift_bin_edges(sample, bad)
    no_z = open_sample(_workspace(tmp_path / "noz", with_z=False).sample)
    with pytest.raises(BadValueError, match="no redshift column"):
        redshift_bin_edges(no_z, (3,))


def test_joint_condition_labels_and_name(tmp_path):
    from galearn.gan.data import gan_condition
    from galearn.store import open_sample

    sample = open_sample(_workspace(tmp_path).sample)
    name, labels = gan_condition(sample, "truth_class", (0.0, 1.0, 3.0))
    assert name == "truth_class+redshift_bin"
    z, cls = np.asarray(sample.catalog["zbest"]), np.asarray(sample.catalog["truth_class"]).astype(str)
    want = [f"{c} z0.00-1.00" if v < 1 else f"{c} z1.00-3.00" for c, v in zip(cls, z)]
    want[3] = ""
    assert labels.tolist() == want
    assert gan_condition(sample, name, (0.0, 1.0, 3.0))[1].tolist() == want  # the stored name resolves the same
    assert gan_condition(sample, "truth_class")[0] == "truth_class"
    with pytest.raises(BadValueError, match="redshift bin edges"):
        gan_condition(sample, name)


def test_train_sample_evaluate_per_class_and_redshift_bin(tmp_path):
    torch = pytest.importorskip("torch")
    from test_gan import TINY

    from galearn.gan import run_evaluate, run_sample, run_train
    from galearn.gan.checkpoint import load_checkpoint
    from galearn.store import open_sample

    ws = _workspace(tmp_path, n=80)
    cfg = dataclasses.replace(TINY, condition="truth_class", redshift_bins=(2,), eval_morphology_n=0,
                              balancing_repeats=2)
    run_train(ws, cfg, progress=False)
    ckpt = load_checkpoint(ws.gan / "ckpt-000004.pt")
    edges = ckpt["redshift_edges"]
    assert len(edges) == 3 and ckpt["condition"] == "truth_class+redshift_bin"
    assert len(ckpt["classes"]) == 4 and all(" z" in c for c in ckpt["classes"])
    split = json.loads(ws.gan_split.read_text())
    assert split["redshift_edges"] == edges and 3 not in split["train"] + split["heldout"]  # no redshift: unused
    with pytest.raises(BadValueError, match="redshift_bins"):
        run_train(ws, dataclasses.replace(cfg, steps=6, redshift_bins=(3,)), resume=True, progress=False)

    run_sample(ws, dataclasses.replace(cfg, n_per_class=5), progress=False)
    lib = open_sample(ws.library)
    cat = lib.catalog
    assert lib.n == 20
    assert sorted(set(cat["truth_class+redshift_bin"])) == sorted(ckpt["classes"])
    assert np.all(np.char.add(np.char.add(np.asarray(cat["truth_class"]).astype(str), " "),
                              np.asarray(cat["redshift_bin"]).astype(str)) == np.asarray(cat["truth_class+redshift_bin"]))
    assert np.unique(np.asarray(cat["redshift_bin"]), return_counts=True)[1].tolist() == [10, 10]  # filled per bin

    metrics = run_evaluate(ws, cfg, feature_fn=lambda x: x.reshape(len(x), -1)[:, ::97].astype("f4"))
    assert metrics["redshift_edges"] == edges and metrics["condition"] == "truth_class+redshift_bin"
    assert metrics["sky_noise"] == ckpt["config"]["sky_noise"] == "measured"  # what gan.sky_noise = auto chose
    assert metrics["diffaugment"] == ckpt["config"]["diffaugment"] != "auto"  # and gan.diffaugment = auto
    trained_on = metrics["trained_on"]  # the torch build and processor the run's numbers hold for
    assert trained_on["torch"] == torch.__version__ and trained_on["cpu_capability"] and trained_on["cpu"]
    assert set(metrics["per_class"]) == set(ckpt["classes"])
