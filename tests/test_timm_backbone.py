"""``--backbone timm:ARCH``: timm encoders from local weights files (galearn.features.timm_backbone).

Every model here is built with random weights and saved the way model
repositories ship them (safetensors, PyTorch ``.bin``, a folder with
``config.json``), then loaded through the command line users run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import urllib.request

import numpy as np
import pytest

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")
safetensors_torch = pytest.importorskip("safetensors.torch")

from astropy.table import Table  # noqa: E402

from galearn.cli import main  # noqa: E402
from galearn.errors import BadValueError, WeightsNotFoundError  # noqa: E402
from galearn.features import build_architecture, load_backbone, prepare_batch  # noqa: E402
from galearn.features.adapt import load_adapted  # noqa: E402
from galearn.store import Workspace, read_features, read_metrics, write_sample  # noqa: E402

BANDS = ["F435W", "F850LP", "F160W"]
CNN = "efficientnet_b0"
VIT = "vit_tiny_patch16_224"
FAST = ["--input-size", "32", "--tta", "1", "--scales", "1"]


def _stamps(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    width = rng.uniform(2, 8, size=(n, 1, 1, 1))
    colour = rng.uniform(0.2, 1.0, size=(n, 3, 1, 1))
    img = colour * np.exp(-(xx**2 + yy**2) / (2 * width**2)) + rng.normal(0, 0.02, size=(n, 3, size, size))
    return np.clip(img, 0, 1).astype(np.float32)


def _workspace(root) -> Workspace:
    ws = Workspace(root)
    stamps = _stamps()
    cat = Table({"ID": np.arange(1, len(stamps) + 1)})
    write_sample(ws.sample, stamps, cat, physical=None, bands=BANDS, kind="mock", columns={"id": "ID"})
    return ws


def _sha256(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Random-weight models saved as repositories ship them."""
    root = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    out = {}
    # a CNN with a 10-class head (the head's tensors are in the files and must be dropped)
    cnn = timm.create_model(CNN, pretrained=False, num_classes=10).eval()
    out["cnn_model"] = cnn
    out["cnn_st"] = root / "cnn.safetensors"
    out["cnn_bin"] = root / "cnn.bin"
    safetensors_torch.save_file(cnn.state_dict(), str(out["cnn_st"]))
    torch.save(cnn.state_dict(), out["cnn_bin"])
    # a ViT at 32 px, exported with timm's own writer: model.safetensors + pytorch_model.bin + config.json
    vit = timm.create_model(VIT, pretrained=False, num_classes=0, img_size=32).eval()
    out["vit_dir"] = root / "vit-repo"
    timm.models.save_for_hf(vit, str(out["vit_dir"]), safe_serialization="both",
                            data_config={"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)})
    out["vit_model"] = vit
    # a greyscale (one-channel) ResNet, like Zoobot's greyscale encoders
    grey = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=1).eval()
    out["grey"] = root / "grey.safetensors"
    safetensors_torch.save_file(grey.state_dict(), str(out["grey"]))
    out["grey_model"] = grey
    return out


def _features(tmp_path, name, backbone, weights, *extra) -> tuple[np.ndarray, dict, dict]:
    ws = _workspace(tmp_path / name)
    code = main(["features", "-w", str(ws.root), "--backbone", backbone, "--weights", str(weights), *FAST, *extra])
    assert code == 0
    feats = read_features(ws.features(backbone))
    return feats.values, feats.attrs, read_metrics(ws.metrics)["features"]


# --------------------------------------------------------------------------- both formats, same features


def test_cnn_safetensors_and_pytorch_files_give_identical_features(tmp_path, files):
    a, attrs, metrics = _features(tmp_path, "st", f"timm:{CNN}", files["cnn_st"])
    b, _, metrics_b = _features(tmp_path, "bin", f"timm:{CNN}", files["cnn_bin"])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 1280) and np.isfinite(a).all() and a.std() > 0
    # metrics.json records what was built, from which file, and how bands became channels
    assert metrics["architecture"] == f"timm {CNN}"
    assert metrics["weights"] == str(files["cnn_st"].resolve())
    assert metrics["weights_sha256"] == _sha256(files["cnn_st"])
    assert metrics_b["weights_sha256"] == _sha256(files["cnn_bin"])
    assert metrics["layers"] == ["pooled"] and metrics["in_chans"] == 3
    assert metrics["band_mapping"].startswith("RGB: R=F160W, G=F850LP, B=F435W")
    assert attrs["weights_sha256"] == metrics["weights_sha256"]


def test_the_files_weights_are_the_ones_used(files):
    """load_backbone's features equal the original network's pooled output on the same input."""
    bb = load_backbone(f"timm:{CNN}", weights=files["cnn_st"], device="cpu")
    x = prepare_batch(_stamps(3), BANDS, bb, input_size=64)
    ref = files["cnn_model"]
    with torch.inference_mode():
        want = ref.forward_head(ref.forward_features(x), pre_logits=True)
        got = bb.model(x)
    torch.testing.assert_close(got, want)
    assert bb.default_input_size == 224 and bb.mean == timm.models.get_pretrained_cfg(CNN).mean


def test_vit_repository_folder_and_its_files_give_identical_features(tmp_path, files):
    repo = files["vit_dir"]
    assert {p.name for p in repo.iterdir()} >= {"model.safetensors", "pytorch_model.bin", "config.json"}
    a, attrs, metrics = _features(tmp_path, "dir", f"timm:{VIT}", repo)
    b, _, _ = _features(tmp_path, "bin", f"timm:{VIT}", repo / "pytorch_model.bin")
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 192) and a.std() > 0
    # config.json beside the weights was read: its input size (32 px) and normalisation
    assert metrics["weights"] == str((repo / "model.safetensors").resolve())
    assert attrs["mean"] == [0.5, 0.5, 0.5] and attrs["std"] == [0.25, 0.25, 0.25]
    assert attrs["native_size"] == 32


def test_vit_default_input_size_comes_from_config(tmp_path, files):
    ws = _workspace(tmp_path / "ws")
    assert main(["features", "-w", str(ws.root), "--backbone", f"timm:{VIT}", "--weights", str(files["vit_dir"]),
                 "--tta", "2", "--scales", "1,0.5"]) == 0
    m = read_metrics(ws.metrics)["features"]
    assert m["input_size"] == 32 and m["dim"] == 2 * 192 and m["tta"] == 2  # two scales, concatenated
    # built with dynamic_img_size: another input size works (position embedding interpolated)
    assert not load_backbone(f"timm:{VIT}", weights=files["vit_dir"], device="cpu").fixed_input_size
    assert main(["features", "-w", str(ws.root), "--backbone", f"timm:{VIT}", "--weights", str(files["vit_dir"]),
                 "--tta", "1", "--scales", "1", "--input-size", "48"]) == 0
    assert read_metrics(ws.metrics)["features"]["input_size"] == 48


def test_other_stages_are_selectable(files):
    bb = load_backbone(f"timm:{CNN}", weights=files["cnn_st"], device="cpu", layers=("blocks.6", "pooled"))
    assert bb.layers == ("blocks.6", "pooled") and bb.dim == 320 + 1280
    x = prepare_batch(_stamps(2), BANDS, bb, input_size=64)
    with torch.inference_mode():
        both = bb.model(x)
        ref = files["cnn_model"]
        torch.testing.assert_close(both[:, 320:], ref.forward_head(ref.forward_features(x), pre_logits=True))
    vit = load_backbone(f"timm:{VIT}", weights=files["vit_dir"], device="cpu", layers=("blocks.5",))
    assert vit.dim == 192
    with pytest.raises(BadValueError, match="known: .*blocks.0"):
        load_backbone(f"timm:{VIT}", weights=files["vit_dir"], device="cpu", layers=("layer9",))


# --------------------------------------------------------------------------- channels


def test_greyscale_encoder_gets_the_mean_of_the_bands(tmp_path, files):
    bb = load_backbone("timm:resnet18", weights=files["grey"], device="cpu")
    assert bb.in_chans == 1 and len(bb.mean) == 1
    stamps = _stamps(2)
    x = prepare_batch(stamps, BANDS, bb, input_size=None)
    want = (stamps.mean(axis=1, keepdims=True) - bb.mean[0]) / bb.std[0]
    np.testing.assert_allclose(x.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
    _, attrs, metrics = _features(tmp_path, "grey", "timm:resnet18", files["grey"])
    assert metrics["in_chans"] == 1
    assert metrics["band_mapping"].startswith("mean of the bands F435W, F850LP, F160W")
    assert attrs["band_mapping"] == metrics["band_mapping"]


# --------------------------------------------------------------------------- wrong files


def _exit_2(capsys, tmp_path, backbone, weights) -> str:
    ws = _workspace(tmp_path / f"bad{sum(1 for _ in tmp_path.glob('bad*'))}")
    capsys.readouterr()
    assert main(["features", "-w", str(ws.root), "--backbone", backbone, "--weights", str(weights), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    return err


def test_another_architectures_file_exits_2_naming_file_and_keys(tmp_path, files, capsys):
    err = _exit_2(capsys, tmp_path, "timm:resnet18", files["cnn_st"])
    assert str(files["cnn_st"]) in err and "missing" in err and "conv1.weight" in err and "unexpected" in err


def test_text_file_exits_2_naming_it(tmp_path, files, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("these are not weights\n" * 20)
    err = _exit_2(capsys, tmp_path, f"timm:{CNN}", text)
    assert str(text) in err and "neither safetensors nor a PyTorch state dict" in err
    fake = tmp_path / "fake.safetensors"
    fake.write_text("not safetensors either")
    assert str(fake) in _exit_2(capsys, tmp_path, f"timm:{CNN}", fake)


def test_missing_keys_exit_2_naming_them(tmp_path, files, capsys):
    state = safetensors_torch.load_file(str(files["cnn_st"]))
    dropped = sorted(k for k in state if k.startswith("blocks.6."))
    partial = tmp_path / "partial.safetensors"
    safetensors_torch.save_file({k: v for k, v in state.items() if k not in dropped}, str(partial))
    err = _exit_2(capsys, tmp_path, f"timm:{CNN}", partial)
    assert str(partial) in err and f"missing {len(dropped)} keys" in err and "blocks.6." in err


def test_config_of_another_architecture_exits_2(tmp_path, files, capsys):
    repo = tmp_path / "repo"
    shutil.copytree(files["vit_dir"], repo)
    err = _exit_2(capsys, tmp_path, f"timm:{CNN}", repo)
    assert str(repo / "config.json") in err and VIT in err


def test_wrong_vit_size_without_config_exits_2(tmp_path, files, capsys):
    lone = tmp_path / "lone.safetensors"  # the 32-px ViT's weights, away from its config.json
    shutil.copy(files["vit_dir"] / "model.safetensors", lone)
    err = _exit_2(capsys, tmp_path, f"timm:{VIT}", lone)
    assert str(lone) in err and "pos_embed" in err and "wrong shape" in err


def test_unknown_architecture_or_a_repository_id_exit_2(tmp_path, files, capsys):
    err = _exit_2(capsys, tmp_path, "timm:convnxt_nano", files["cnn_st"])
    assert "convnxt_nano" in err and "convnext_nano" in err
    err = _exit_2(capsys, tmp_path, "timm:hf-hub:mwalmsley/zoobot-encoder-convnext_nano", files["cnn_st"])
    assert "https://huggingface.co/mwalmsley/zoobot-encoder-convnext_nano" in err and "--weights FOLDER" in err


# --------------------------------------------------------------------------- offline


@pytest.fixture
def no_network(monkeypatch):
    """Every way out of the machine raises and is recorded."""
    import huggingface_hub
    import huggingface_hub.file_download

    calls: list[str] = []

    def refuse(what):
        def _refuse(*args, **kwargs):
            calls.append(what)
            raise OSError(f"network access attempted: {what}")
        return _refuse

    monkeypatch.setattr(socket.socket, "connect", refuse("socket.connect"))
    monkeypatch.setattr(socket, "create_connection", refuse("socket.create_connection"))
    monkeypatch.setattr(socket, "getaddrinfo", refuse("socket.getaddrinfo"))
    monkeypatch.setattr(urllib.request, "urlopen", refuse("urlopen"))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(huggingface_hub.file_download, "hf_hub_download", refuse("hf_hub_download"))
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse("torch.hub.download_url_to_file"))
    return calls


def test_without_weights_exit_2_names_the_repository_and_never_downloads(tmp_path, no_network, capsys):
    ws = _workspace(tmp_path / "ws")
    capsys.readouterr()
    assert main(["features", "-w", str(ws.root), "--backbone", "timm:convnext_nano"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "https://huggingface.co/timm/convnext_nano" in err and "--weights" in err and "--allow-download" in err
    assert main(["features", "-w", str(ws.root), "--backbone", "timm:vit_small_patch14_dinov2.lvd142m"]) == 2
    assert "huggingface.co/timm/vit_small_patch14_dinov2.lvd142m" in capsys.readouterr().err
    assert no_network == []


def test_local_weights_need_no_network(tmp_path, files, no_network):
    a, _, _ = _features(tmp_path, "ws", f"timm:{CNN}", files["cnn_st"])
    assert a.shape[0] == 6 and no_network == []


def test_allow_download_fetches_through_the_hub_client(tmp_path, files, monkeypatch):
    import huggingface_hub

    asked = []

    def fake_download(repo_id, filename, revision=None, **kwargs):
        asked.append((repo_id, filename))
        path = files["vit_dir"] / filename
        if not path.is_file():
            raise FileNotFoundError(filename)
        return str(path)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    with pytest.raises(WeightsNotFoundError):
        load_backbone(f"timm:{VIT}", device="cpu")  # off by default: the client is not asked
    assert asked == []
    bb = load_backbone(f"timm:{VIT}", device="cpu", allow_download=True)
    assert asked[0] == (f"timm/{VIT}.augreg_in21k_ft_in1k", "model.safetensors")
    assert ("timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k", "config.json") in asked
    assert bb.weights == str((files["vit_dir"] / "model.safetensors").resolve()) and bb.native_size == 32


# --------------------------------------------------------------------------- adapt


def test_adapt_takes_a_timm_base(tmp_path, files):
    ws = _workspace(tmp_path / "ws")
    code = main(["adapt", "-w", str(ws.root), "--backbone", "timm:resnet18", "--weights", str(files["grey"]),
                 "--epochs", "1", "--input-size", "32", "adapt.batch_size=4", "adapt.freeze_stages=2"])
    assert code == 0
    state = torch.load(ws.adapted_backbone, map_location="cpu", weights_only=True)
    assert state["base"] == "timm:resnet18" and state["base_weights_sha256"] == _sha256(files["grey"])
    bb = load_adapted(ws.adapted_backbone, device="cpu")
    assert bb.base == "timm:resnet18" and bb.in_chans == 1 and bb.architecture == "timm resnet18"
    # frozen groups kept the file's weights; the last stage moved
    ref = files["grey_model"].state_dict()
    got = {k[len("model."):]: v for k, v in bb.model.state_dict().items()}
    torch.testing.assert_close(got["conv1.weight"], ref["conv1.weight"])
    assert all(torch.equal(got[k], ref[k]) for k in ref if k.startswith(("conv1.", "bn1.", "layer1.")))
    assert any(not torch.equal(got[k], ref[k]) for k in ref if k.startswith("layer4."))
    assert main(["features", "-w", str(ws.root), "--backbone", "adapted", "--tta", "1", "--scales", "1"]) == 0
    m = read_metrics(ws.metrics)["features"]
    assert m["base"] == "timm:resnet18" and m["input_size"] == 32 and m["dim"] == 512
    assert m["band_mapping"].startswith("mean of the bands")


def test_build_architecture_rebuilds_a_timm_backbone(files):
    bb = load_backbone(f"timm:{VIT}", weights=files["vit_dir"], device="cpu")
    again = build_architecture(bb.name, layers=bb.layers, options=json.loads(json.dumps(bb.options)))
    again.model.load_state_dict(bb.model.state_dict())  # same architecture, key for key
    assert again.native_size == 32 and again.mean == bb.mean
