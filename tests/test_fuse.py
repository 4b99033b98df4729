"""Tests of fused features (CNN vector + colours + statmorph morphology): galearn.features.fuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")

from conftest import make_stamp_workspace  # noqa: E402

from galearn.config import FeatureConfig  # noqa: E402
from galearn.errors import BadValueError  # noqa: E402
from galearn.features import run_features  # noqa: E402
from galearn.features.fuse import (  # noqa: E402
    DEFAULT_FUSE_WEIGHT,
    check_fuse,
    fuse_blocks,
    fuse_repeats,
    robust_standardise,
)
from galearn.imaging import subtract_border_background  # noqa: E402
from astropy.table import Table  # noqa: E402

from galearn.store import Workspace, read_features, read_metrics, write_sample  # noqa: E402

BANDS = ["F435W", "F850LP", "F160W"]
REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "galaxy-zoo-dev"


def _blobs(n: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Elliptical Gaussian blobs of known width (pixels) and random colour on a sky of 0.05, in 0..1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    width = rng.uniform(1.5, 6.0, size=n)
    colour = rng.uniform(0.3, 0.9, size=(n, 3, 1, 1))
    r2 = (xx**2 + (yy / 0.7) ** 2)[None] / (2 * width[:, None, None] ** 2)
    img = 0.05 + colour * np.exp(-r2)[:, None] + rng.normal(0, 0.01, size=(n, 3, size, size))
    return np.clip(img, 0, 1).astype(np.float32), width


def _workspace(tmp_path, n: int = 12) -> tuple[Workspace, np.ndarray]:
    stamps, width = _blobs(n)
    return make_stamp_workspace(tmp_path / "ws", stamps=stamps, bands=BANDS), width


CFG = dict(backbone="random-resnet18", input_size=32, tta=1, batch_size=16, scales=(1.0,))


def test_fused_features_have_the_block_and_are_flagged(tmp_path):
    ws, width = _workspace(tmp_path)
    path = run_features(ws, FeatureConfig(**CFG, fuse="morphology"))
    assert path == ws.features("random-resnet18+morphology")
    plain = read_features(ws.features("random-resnet18")).values  # the CNN file stays
    fused = read_features(path)
    info = fused.attrs["fused"]
    m = len(info["columns"])
    assert m == 8 and info["columns"][4] == "log10_half_light_radius"  # 6 statistics + 2 colours
    r = fuse_repeats(512, m, DEFAULT_FUSE_WEIGHT)
    assert info["repeats"] == r and fused.values.shape == (12, 512 + m * r)
    np.testing.assert_array_equal(fused.values[:, :512], plain)
    block = fused.values[:, 512:].reshape(12, r, m)
    assert np.all(block == block[:, :1])  # the block, repeated
    # the measured size follows the blobs' true width (rank correlation)
    size = block[:, 0, 4]
    ranks = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    assert np.corrcoef(ranks(size), ranks(width))[0, 1] > 0.8
    # metrics.json says the features are fused, with what, and names the fused file
    entry = read_metrics(ws.metrics)["features"]
    assert entry["backbone"] == "random-resnet18+morphology" and entry["cnn_backbone"] == "random-resnet18"
    assert entry["fused"]["with"] == "morphology" and entry["fused"]["columns"] == info["columns"]
    assert entry["dim"] == fused.values.shape[1]
    # the statmorph table is cached for the sample
    assert (ws.root / "features" / "morphology.ecsv").exists()


def test_plain_features_are_not_fused(tmp_path):
    ws, _ = _workspace(tmp_path, n=6)
    path = run_features(ws, FeatureConfig(**CFG))
    assert path == ws.features("random-resnet18")
    assert "fused" not in read_metrics(ws.metrics)["features"]
    assert not ws.features("random-resnet18+morphology").exists()


def test_fuse_option_round_trips_through_the_cli(tmp_path, capsys):
    from galearn.cli import main

    ws, _ = _workspace(tmp_path, n=8)
    args = ["features", "-w", str(ws.root), "--backbone", "random-resnet18", "--input-size", "32", "--tta", "1"]
    assert main([*args, "--fuse", "morphology"]) == 0
    out = capsys.readouterr().out
    assert "fused with morphology" in out
    assert read_metrics(ws.metrics)["features"]["fused"]["with"] == "morphology"
    # the same through a configuration override, with another weight
    assert main([*args, "features.fuse=morphology", "features.fuse_weight=0.1"]) == 0
    fused = read_metrics(ws.metrics)["features"]["fused"]
    assert fused["weight"] == 0.1 and fused["repeats"] == fuse_repeats(1024, 8, 0.1)  # two scales of 512


@pytest.mark.parametrize("extra", [["--fuse", "texture"], ["features.fuse_weight=1.5", "--fuse", "morphology"]])
def test_bad_fuse_value_exits_2_naming_the_option(tmp_path, capsys, extra):
    from galearn.cli import main

    ws, _ = _workspace(tmp_path, n=4)
    code = main(["features", "-w", str(ws.root), "--backbone", "random-resnet18", *extra])
    assert code == 2
    err = capsys.readouterr().err
    assert ("--fuse" in err and "texture" in err) or "fuse_weight" in err
    assert not ws.features("random-resnet18").exists()  # refused before any work


def test_weighting_gives_the_block_its_share_of_the_variance():
    rng = np.random.default_rng(0)
    cnn, block = rng.normal(size=(200, 300)), rng.normal(size=(200, 6))
    for w in (0.1, 0.3, 0.5):
        fused, r = fuse_blocks(cnn, block, w)
        assert fused.shape == (200, 300 + 6 * r)
        share = 6 * r / fused.shape[1]  # after per-column standardisation every column has variance 1
        assert abs(share - w) < 0.02
    with pytest.raises(BadValueError, match="fuse_weight"):
        check_fuse("morphology", 1.0)
    with pytest.raises(BadValueError, match="--fuse"):
        check_fuse("colours")


def test_robust_standardise_reuses_the_reference_scale():
    x = np.array([[1.0, 10.0], [2.0, np.nan], [3.0, 30.0], [100.0, 20.0]])
    z, center, scale = robust_standardise(x)
    assert np.all(np.abs(z) <= 5) and z[1, 1] == 0.0  # outlier clipped, NaN -> the median
    z2, _, _ = robust_standardise(x[:2] + 1.0, center, scale)
    np.testing.assert_allclose(z2[0, 0], (2.0 - center[0]) / scale[0])


def test_border_background_is_removed():
    stamps, _ = _blobs(3, size=32)
    out = subtract_border_background(stamps)
    assert abs(np.median(out[:, :, :2, :])) < 0.01 and out[:, :, 16, 16].min() > 0.2


@pytest.mark.realdata
@pytest.mark.skipif(not (REAL / "labels.csv").exists(), reason="../shared/data/galaxy-zoo-dev not present")
def test_real_ellipticals_are_redder_and_more_concentrated(tmp_path):
    """On 40 real SDSS images: the fused block carries the physics it claims."""
    from galearn.features.fuse import measure_stamp_morphology
    from galearn.survey.images import load_image_stamp

    labels = Table.read(REAL / "labels.csv", format="ascii.csv")
    rows = [i for c in ("elliptical", "spiral") for i in np.flatnonzero(labels["morph"] == c)[:20]]
    stamps = np.stack([load_image_stamp(REAL / "images" / f"{labels['id'][i]}.jpeg", 64, 0.5) for i in rows])
    table = measure_stamp_morphology(stamps, ["R", "G", "B"], background=True, progress=False)
    ell = np.arange(40) < 20
    med = lambda col, sel: np.nanmedian(np.asarray(table[col], dtype="f8")[sel])  # noqa: E731
    assert med("concentration", ell) > med("concentration", ~ell)
    assert med("colour_G-R", ell) > med("colour_G-R", ~ell)  # G minus R: larger = redder


def test_library_block_uses_the_sample_scale(tmp_path):
    ws, _ = _workspace(tmp_path, n=8)
    cfg = FeatureConfig(**CFG, fuse="morphology")
    run_features(ws, cfg)
    lib, _ = _blobs(5, seed=3)
    write_sample(ws.library, lib, Table({"ID": np.arange(5)}), physical=None, bands=BANDS, kind="library",
                 columns={"id": "ID"})
    before = read_metrics(ws.metrics)["features"]
    path = run_features(ws, cfg, library=True)
    assert path == ws.features("random-resnet18+morphology", library=True)
    info, ref = read_features(path).attrs["fused"], read_features(ws.features("random-resnet18+morphology"))
    assert info["standardisation_from"] == str(ws.features("random-resnet18+morphology"))
    assert info["center"] == ref.attrs["fused"]["center"] and info["scale"] == ref.attrs["fused"]["scale"]
    assert (ws.root / "features" / "library_morphology.ecsv").exists()
    assert read_metrics(ws.metrics)["features"] == before  # library runs leave the sample's entry alone
