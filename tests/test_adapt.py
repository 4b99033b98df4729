"""Self-supervised adaptation of a backbone (galearn.features.adapt, `galearn adapt`).

Tiny data and budgets: 16 stamps of 32 x 32 pixels, random-resnet18 at 32 px, 2-4 steps.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import make_stamp_workspace  # noqa: E402

from galearn.config import AdaptConfig, FeatureConfig  # noqa: E402
from galearn.errors import BadValueError, MissingInputError  # noqa: E402
from galearn.features import extract_features, load_backbone, run_features  # noqa: E402
from galearn.features.adapt import (  # noqa: E402
    AugmentSettings,
    adapt_backbone,
    augment_views,
    load_adapted,
    nt_xent_loss,
    run_adapt,
)
from galearn.store import Workspace, open_sample, read_manifest, read_metrics  # noqa: E402

BANDS = ["F435W", "F850LP", "F160W"]
N, SIZE = 16, 32


def _stamps(n: int = N, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """Elliptical Gaussian blobs whose colour (band ratios) and size vary from stamp to stamp."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    out = np.empty((n, 3, size, size), dtype=np.float32)
    for i in range(n):  # test data only
        q, pa = rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
        c, s = np.cos(pa), np.sin(pa)
        r2 = ((xx * c + yy * s) / q) ** 2 + (-xx * s + yy * c) ** 2
        colour = rng.uniform(0.2, 1.0, size=3)
        for b in range(3):
            sigma = rng.uniform(2, 6) * (1 + 0.3 * b)
            out[i, b] = colour[b] * np.exp(-0.5 * r2 / sigma**2)
    return out + 0.01 * rng.standard_normal(out.shape).astype(np.float32)


def _workspace(tmp_path, name: str = "ws", seed: int = 0) -> Workspace:
    return make_stamp_workspace(tmp_path / name, stamps=_stamps(seed=seed), bands=BANDS, ids=np.arange(N))


def _cfg(**kw) -> AdaptConfig:
    base = dict(backbone="random-resnet18", epochs=2, batch_size=8, input_size=32, freeze_stages=2,
                budget_minutes=5.0, device="cpu", random_state=3)
    base.update(kw)
    return AdaptConfig(**base)


def _state(path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


# ----------------------------------------------------------------------------- augmentations


def test_augmentations_keep_colour_and_are_seeded():
    x = torch.from_numpy(_stamps(4)).clamp(0, 1)
    # band 1 = 2 x band 0 exactly: every augmentation but the noise must keep that ratio
    x[:, 1] = 2 * x[:, 0]
    no_noise = AugmentSettings(noise_sigma=(0.0, 0.0), blur_sigma=(0.5, 1.5))
    y = augment_views(x, no_noise, torch.Generator().manual_seed(1))
    assert y.shape == x.shape
    assert not torch.allclose(y, x)  # something happened
    torch.testing.assert_close(y[:, 1], 2 * y[:, 0], rtol=1e-5, atol=1e-6)
    # blur and resampling keep the total flux of a centred source (no colour-dependent loss)
    assert torch.allclose(y.sum((2, 3)) / x.sum((2, 3)), torch.ones(4, 3), atol=0.35)
    # seeded: same generator seed, same views; another seed, other views
    settings = AugmentSettings()
    a = augment_views(x, settings, torch.Generator().manual_seed(7))
    b = augment_views(x, settings, torch.Generator().manual_seed(7))
    c = augment_views(x, settings, torch.Generator().manual_seed(8))
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_augment_settings_are_validated():
    with pytest.raises(BadValueError, match="max_shift"):
        AugmentSettings(max_shift=0.7).validate()
    with pytest.raises(BadValueError, match="noise_sigma"):
        AugmentSettings(noise_sigma=(0.1, 0.0)).validate()


def test_nt_xent_prefers_matching_views():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    matched = nt_xent_loss(z, z + 0.01 * torch.randn(32, 16, generator=g))
    shuffled = nt_xent_loss(z, z[torch.randperm(32, generator=g)])
    assert matched < 0.5 * shuffled
    assert matched >= 0


# ----------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def adapted_ws(tmp_path_factory) -> Workspace:
    """One small adaptation (2 epochs x 2 steps), shared by the tests that only read it."""
    ws = _workspace(tmp_path_factory.mktemp("adapted"))
    run_adapt(ws, _cfg(), progress=False)
    return ws


def test_adaptation_is_reproducible_and_changes_the_weights(tmp_path, adapted_ws):
    s1 = _state(adapted_ws.adapted_backbone)
    s2 = _state(run_adapt(_workspace(tmp_path, "b"), _cfg(), progress=False))
    assert s1["history"]["finished"] and s1["history"]["step"] == 4  # 2 epochs x (16 // 8)
    for k in s1["state_dict"]:
        torch.testing.assert_close(s1["state_dict"][k], s2["state_dict"][k], rtol=0, atol=0)
    base = load_backbone("random-resnet18", device="cpu", random_state=3).model.state_dict()
    changed = [k for k, v in s1["state_dict"].items() if v.is_floating_point() and not torch.equal(v, base[k])]
    assert any(k.startswith("stages.layer4") for k in changed)
    # frozen stages (stem, layer1) keep their weights AND BatchNorm statistics
    assert not any(k.startswith(("stages.stem", "stages.layer1")) for k in changed)


def test_another_seed_trains_differently():
    images = torch.from_numpy(_stamps()).clamp(0, 1)
    out = []
    for seed in (0, 0, 1):
        bb = load_backbone("random-resnet18", device="cpu", random_state=0)
        adapt_backbone(bb, images, epochs=1, batch_size=8, freeze_stages=3, random_state=seed, max_steps=1,
                       progress=False)
        out.append(bb.model.stages.layer4[1].conv2.weight.detach().clone())
    torch.testing.assert_close(out[0], out[1], rtol=0, atol=0)
    assert not torch.equal(out[0], out[2])


def test_checkpoint_file_contents(adapted_ws):
    ws = adapted_ws
    state = _state(ws.adapted_backbone)  # weights_only=True must work
    assert state["base"] == "random-resnet18"
    assert state["sample_checksum"] == open_sample(ws.sample).checksum
    assert state["settings"]["input_size"] == 32
    assert state["settings"]["augment"]["rotate"] is True
    assert "galearn_version" in state and state["settings"]["method"] == "simclr"
    assert ws.adapt_checkpoint.exists()


def test_resumed_run_matches_uninterrupted_run(tmp_path):
    images = torch.from_numpy(_stamps()).clamp(0, 1)
    kw = dict(epochs=1, batch_size=8, random_state=5, freeze_stages=3, progress=False, fingerprint="f")

    def fresh():
        return load_backbone("random-resnet18", device="cpu", random_state=0)

    full = fresh()
    h_full = adapt_backbone(full, images, **kw)
    assert h_full["step"] == 2 and h_full["finished"]

    ckpt = tmp_path / "ckpt.pt"
    part = fresh()
    h1 = adapt_backbone(part, images, checkpoint=ckpt, max_steps=1, **kw)
    assert h1["step"] == 1 and not h1["finished"]
    resumed = fresh()
    h2 = adapt_backbone(resumed, images, checkpoint=ckpt, **kw)
    assert h2["resumed_from"] == 1 and h2["step"] == 2 and h2["finished"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    # a checkpoint made with other settings is ignored, not continued
    other = fresh()
    h3 = adapt_backbone(other, images, checkpoint=ckpt, max_steps=0, **{**kw, "fingerprint": "g"})
    assert h3["resumed_from"] == 0


def test_run_adapt_continues_after_budget_and_skips_when_done(tmp_path):
    ws = _workspace(tmp_path)
    # a budget of zero stops before the first step; the checkpoint and an adapted.pt are still written
    p = run_adapt(ws, _cfg(epochs=1, budget_minutes=1e-9), progress=False)
    assert _state(p)["history"]["step"] == 0 and not _state(p)["history"]["finished"]
    run_adapt(ws, _cfg(epochs=1), progress=False)
    s = _state(ws.adapted_backbone)
    assert s["history"]["finished"] and s["history"]["step"] == 2 and s["history"]["resumed_from"] == 0
    mtime = ws.adapted_backbone.stat().st_mtime_ns
    run_adapt(ws, _cfg(epochs=1), progress=False)  # same settings, same stamps: nothing to do
    assert ws.adapted_backbone.stat().st_mtime_ns == mtime


# ----------------------------------------------------------------------------- registry


def test_adapted_backbone_loads_through_the_registry(adapted_ws):
    ws = adapted_ws
    path = ws.adapted_backbone
    bb = load_backbone("adapted", workspace=ws, device="cpu")
    assert bb.name == "adapted" and bb.base == "random-resnet18" and bb.pretrained
    assert str(path) in bb.weights and "adapted from random-resnet18" in bb.weights
    assert bb.native_size == 32
    direct = load_adapted(path)
    stamps = open_sample(ws.sample).read()
    f1 = extract_features(stamps, BANDS, bb, input_size=32, progress=False)
    f2 = extract_features(stamps, BANDS, direct, input_size=32, progress=False)
    np.testing.assert_allclose(f1, f2, rtol=1e-5, atol=1e-6)
    # the adapted weights are used, not the base's
    base = load_backbone("random-resnet18", device="cpu", random_state=3)
    f0 = extract_features(stamps, BANDS, base, input_size=32, progress=False)
    assert not np.allclose(f0, f1, atol=1e-4)
    # galearn features --backbone adapted: metrics.json says adapted and from what
    run_features(ws, FeatureConfig(backbone="adapted", input_size=32, tta=False, device="cpu"))
    feats = read_metrics(ws.metrics)["features"]
    assert feats["backbone"] == "adapted" and feats.get("base") == "random-resnet18"
    assert "adapted from random-resnet18" in feats["weights"]
    assert read_manifest(ws)["features"]["backbone"] == "adapted"
    assert read_manifest(ws)["features"]["cnn_backbone"] == "adapted"


def test_adapted_features_keep_colour(adapted_ws):
    ws = adapted_ws
    bb = load_backbone("adapted", workspace=ws, device="cpu")
    stamps = open_sample(ws.sample).read()
    swapped = stamps[:, [2, 1, 0]]  # blue and near-infrared exchanged
    f = extract_features(stamps, BANDS, bb, input_size=32, progress=False)
    g = extract_features(swapped, BANDS, bb, input_size=32, progress=False)
    rel = np.linalg.norm(f - g, axis=1) / np.linalg.norm(f, axis=1)
    assert np.median(rel) > 0.05


def test_bad_input_is_reported(tmp_path):
    ws = Workspace(tmp_path / "empty")
    with pytest.raises(MissingInputError, match="sample.h5"):
        run_adapt(ws, _cfg(), progress=False)
    ws = _workspace(tmp_path)
    with pytest.raises(BadValueError, match="adapted"):
        run_adapt(ws, _cfg(backbone="adapted"), progress=False)
    with pytest.raises(BadValueError, match="bn"):
        run_adapt(ws, _cfg(bn="sometimes"), progress=False)
    with pytest.raises(MissingInputError, match="galearn adapt"):
        load_backbone("adapted", workspace=ws, device="cpu")


def test_cli_adapt(tmp_path, capsys):
    from galearn.cli import main

    ws = _workspace(tmp_path)
    code = main(["adapt", "--workspace", str(ws.root), "--backbone", "random-resnet18", "--epochs", "1",
                 "adapt.input_size=32", "adapt.batch_size=16", "adapt.freeze_stages=4"])
    assert code == 0
    assert _state(ws.adapted_backbone)["history"]["step"] == 1
    assert main(["adapt", "--workspace", str(ws.root), "--epochs", "0"]) == 2
    assert "epochs" in capsys.readouterr().err
