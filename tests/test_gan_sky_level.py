"""gan.g_sky_level_match: the distribution of G's noiseless sky levels held to the real stamps' own levels of the same
classes, while G still picks each stamp's level (docs/gan-experiments.md issue 14 round 46)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from galearn.errors import BadValueError

torch = pytest.importorskip("torch")

from test_gan import TINY, assert_resume_exact, assert_sample_reproducible, make_workspace  # noqa: E402


def _flat_sky(levels: np.ndarray, size: int = 32) -> torch.Tensor:
    """Noiseless stamps ``(N, C, size, size)`` in network units whose linear value is ``levels`` ``(N, C)``
    everywhere, for a linear (unstretched) sky."""
    return torch.from_numpy(np.asarray(levels, dtype="f4"))[:, :, None, None].expand(-1, -1, size, size) * 2 - 1


def _linear_sky(n_bands: int = 3):
    from galearn.gan.sky import SkyNoise

    sky = SkyNoise(n_bands)
    sky.set({"sigma": np.full(n_bands, 0.01), "softening": np.zeros(n_bands), "norm": np.ones(n_bands)})
    return sky


def test_ring_level_is_the_sky_under_a_galaxy_and_a_neighbour_with_the_ring_s_gradient():
    sky = _linear_sky()
    levels = np.array([[0.02, 0.03, 0.05], [0.10, 0.0, 0.07]])
    h = _flat_sky(levels).clone()
    h[:, :, 8:24, 8:24] += 1.0  # a galaxy inside the ring
    h[:, :, :3, :3] += 1.0  # a neighbour on the ring's corner: 9 of its 240 pixels
    h.requires_grad_(True)
    got = sky.ring_level(h)
    torch.testing.assert_close(got, torch.from_numpy(levels).float(), rtol=0, atol=1e-6)
    got.sum().backward()
    touched = (h.grad != 0).float().sum(dim=(2, 3))
    assert (touched >= 100).all()  # half the ring's 240 pixels per stamp and band, not the median's one
    assert float(h.grad[:, :, 8:24, 8:24].abs().sum()) == 0  # nothing of the galaxy


def test_sky_level_penalty_reads_the_spread_and_pulls_toward_the_class_levels():
    from galearn.gan.loss import ClassReference, sky_level_penalty

    rng = np.random.default_rng(0)
    n = 400
    y = np.repeat([0, 1], n // 2)
    real = np.where(y[:, None] == 0, 0.02, 0.06) + 0.01 * rng.normal(size=(n, 3))  # two classes at two sky levels
    stamps = rng.uniform(-1, 1, size=(n, 3, 16, 16)).astype("f4")
    ref = ClassReference(stamps, y, 2, sky_levels=real)
    yb = torch.from_numpy(np.tile([0, 1], 32))
    target = ref.sorted_sky_level(yb)
    assert target.shape == (3, 64)
    sigma = torch.full((3,), 0.01)
    like = np.where(yb.numpy()[:, None] == 0, 0.02, 0.06) + 0.01 * rng.normal(size=(64, 3))
    wide = np.where(yb.numpy()[:, None] == 0, 0.02, 0.06) + 0.03 * rng.normal(size=(64, 3))
    swapped = np.where(yb.numpy()[:, None] == 1, 0.02, 0.06) + 0.01 * rng.normal(size=(64, 3))
    p_like = float(sky_level_penalty(torch.from_numpy(like), target, sigma))
    p_wide = float(sky_level_penalty(torch.from_numpy(wide), target, sigma))
    assert p_like < 0.3 < p_wide
    # each class against its own levels: the classes' levels swapped is the same mixture, so a batch target of
    # both classes cannot tell; one class's batch can
    zeros = torch.zeros(64, dtype=torch.long)
    one_class = 0.02 + 0.01 * rng.normal(size=(64, 3))
    assert float(sky_level_penalty(torch.from_numpy(one_class), ref.sorted_sky_level(zeros), sigma)) < 0.3
    assert float(sky_level_penalty(torch.from_numpy(one_class), ref.sorted_sky_level(zeros + 1), sigma)) > 2
    assert float(sky_level_penalty(torch.from_numpy(swapped), target, sigma)) < 0.5
    # gradient descent on the levels brings a wide set toward the target
    x = torch.from_numpy(wide).float().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=1e-3)
    for _ in range(100):
        opt.zero_grad()
        sky_level_penalty(x, target, sigma).backward()
        opt.step()
    assert float(sky_level_penalty(x.detach(), target, sigma)) < 0.5 * p_wide
    with pytest.raises(ValueError, match="sky levels"):
        ClassReference(stamps, y, 2).sorted_sky_level(yb)
    with pytest.raises(ValueError, match="sky levels of shape"):
        ClassReference(stamps, y, 2, sky_levels=real[:10])


def test_sky_level_penalty_below_lifts_only_the_dark_tail():
    """gan.g_sky_level_side = "below": only the sorted levels darker than the real level of their rank cost, and
    their gradient is upward; a sky brighter than every real one costs nothing; "both" is the Wasserstein term."""
    from galearn.gan.loss import sky_level_penalty

    rng = np.random.default_rng(2)
    target = torch.from_numpy(np.sort(0.05 + 0.01 * rng.normal(size=(3, 64)), axis=1)).float()
    sigma = torch.full((3,), 0.01)
    brighter = target.T + 0.02
    darker = target.T - 0.02
    assert float(sky_level_penalty(brighter, target, sigma, side="below")) == 0.0
    assert float(sky_level_penalty(brighter, target, sigma)) > 1.0
    both = float(sky_level_penalty(darker, target, sigma))
    np.testing.assert_allclose(float(sky_level_penalty(darker, target, sigma, side="below")), both, rtol=1e-5)
    # a set with a dark tail: the tail pulled up, the rest untouched
    levels = target.T.clone()
    levels[:8] -= 0.04
    levels = levels[torch.randperm(64, generator=torch.Generator().manual_seed(0))].requires_grad_(True)
    sky_level_penalty(levels, target, sigma, side="below").backward()
    dark = levels.detach() < target.min(dim=1).values
    assert (levels.grad[dark] < 0).all()  # descent raises them
    assert int((levels.grad != 0).sum()) <= int(dark.sum()) + 3 * 8  # the tail and at most its ranks' neighbours
    with pytest.raises(ValueError, match="side"):
        sky_level_penalty(levels, target, sigma, side="above")


def test_stamp_sky_levels_are_the_real_stamps_own_levels():
    from galearn.gan.loop import _stamp_sky_levels
    from galearn.gan.sky import sky_per_stamp

    rng = np.random.default_rng(1)
    level = np.array([0.02, 0.05])[None, :, None, None] * rng.uniform(0.5, 2.0, size=(5, 1, 1, 1))
    stamps = np.clip(level + 0.01 * rng.normal(size=(5, 2, 32, 32)), 0, 1)
    got = _stamp_sky_levels(stamps, None)
    np.testing.assert_allclose(got, sky_per_stamp(stamps)["level"])
    np.testing.assert_allclose(got, level[:, :, 0, 0], atol=0.003)


def test_sky_level_match_trains_resumes_exactly_samples_reproducibly_and_is_checked(tmp_path):
    from galearn.config import load_config, parse_overrides
    from galearn.gan import run_train
    from galearn.gan.loop import LEGACY_SETTINGS, _validate
    from galearn.gan.spaces import targeted_morphometry_groups

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_sky_level_match=2.0, g_match_reference="class",
                              sky_noise="measured")
    assert LEGACY_SETTINGS["g_sky_level_match"] == 0.0
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert ckpt["config"]["g_sky_level_match"] == 2.0
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match="g_sky_level_match"):  # frozen on resume
        run_train(ws, dataclasses.replace(cfg, steps=6, g_sky_level_match=0.0), resume=True, progress=False)
    for bad in ({"g_sky_level_match": -1.0}, {"g_sky_level_match": True}, {"g_match_reference": "batch"},
                {"sky_noise": "learnt"}):
        with pytest.raises(BadValueError, match="g_sky_level_match"):
            _validate(dataclasses.replace(cfg, **bad))
    assert targeted_morphometry_groups({"g_sky_level_match": 2.0}) == ["pixel percentiles"]
    assert LEGACY_SETTINGS["g_sky_level_side"] == "both"
    _validate(dataclasses.replace(cfg, g_sky_level_side="below"))
    with pytest.raises(BadValueError, match="g_sky_level_side must be one of both, below"):
        _validate(dataclasses.replace(cfg, g_sky_level_side="above"))
    with pytest.raises(BadValueError, match="g_sky_level_side = below .* no effect without"):
        _validate(dataclasses.replace(cfg, g_sky_level_side="below", g_sky_level_match=0.0))
    with pytest.raises(BadValueError, match="g_sky_level_side"):  # frozen on resume
        run_train(ws, dataclasses.replace(cfg, steps=6, g_sky_level_side="below"), resume=True, progress=False)
    got = load_config(None, parse_overrides(["gan.g_sky_level_match=2", "gan.g_match_reference=class"])).gan
    assert got.g_sky_level_match == 2.0


def test_sky_level_match_moves_g_s_sky_levels(tmp_path):
    """The term reaches G: a step of G's optimiser on the term alone changes G's noiseless sky levels toward the
    real ones; the generator keeps the levels of a training forward with their graph, not of an evaluation one."""
    from galearn.gan.loop import build_networks
    from galearn.gan.loss import ClassReference, GanLoss, sky_level_penalty

    cfg = dataclasses.replace(TINY, g_sky_level_match=1.0, g_match_reference="class", sky_noise="measured")
    G, D, _ = build_networks(2, 3, 32, cfg)
    G.sky.set({"sigma": np.full(3, 0.01), "softening": np.zeros(3), "norm": np.ones(3)})
    rng = np.random.default_rng(2)
    stamps = rng.uniform(0, 1, size=(40, 3, 32, 32)).astype("f4")
    y = np.repeat([0, 1], 20)
    ref = ClassReference(stamps * 2 - 1, y, 2, sky_levels=0.3 + 0.01 * rng.normal(size=(40, 3)))
    loss = GanLoss(G, D, "", reference=ref, sky_level_match=1.0)
    assert G.keep_ring_level
    gen = torch.Generator().manual_seed(0)
    z, yb = torch.randn(8, cfg.z_dim, generator=gen), torch.from_numpy(np.tile([0, 1], 4))
    G.eval()
    with torch.no_grad():
        G(z, yb, torch.Generator().manual_seed(1))
    assert G.last_ring_level is None
    G.train()
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    before = None
    for _ in range(5):
        opt.zero_grad()
        G(z, yb, torch.Generator().manual_seed(1))
        penalty = sky_level_penalty(G.last_ring_level, ref.sorted_sky_level(yb), G.sky.sigma)
        before = float(penalty.detach()) if before is None else before
        penalty.backward()
        opt.step()
    fake = G(z, yb, torch.Generator().manual_seed(1))
    after = sky_level_penalty(G.last_ring_level, ref.sorted_sky_level(yb), G.sky.sigma)
    assert float(after.detach()) < before
    # GanLoss.g_loss adds the term at its weight to the hinge loss
    plain = GanLoss(G, D, "", reference=ref)
    D.eval()  # no spectral-norm power iteration between the two scores
    with_term = float(loss.g_loss(yb, z, torch.Generator().manual_seed(3), fake=fake).detach())
    without = float(plain.g_loss(yb, z, torch.Generator().manual_seed(3), fake=fake).detach())
    assert with_term == pytest.approx(without + float(after.detach()), rel=1e-6)  # fp32 sums of large logits
    assert with_term - without > 1.0
    with pytest.raises(ValueError, match="sky_level_match needs a generator with a measured sky"):
        G2, D2, _ = build_networks(2, 3, 32, dataclasses.replace(TINY, sky_noise="learnt"))
        GanLoss(G2, D2, "", reference=ref, sky_level_match=1.0)


def test_rows_by_level_give_a_dark_sky_a_dark_real_stamp_s_depth():
    from galearn.gan.sky import LEVEL_NEIGHBOUR_ROWS, SCATTER_ROWS, SkyNoise

    sky = SkyNoise(3, scatter=True, by_level=True)
    sky.set({"sigma": np.full(3, 0.01), "softening": np.zeros(3), "norm": np.ones(3)})
    rows_level = np.linspace(-0.98, -0.8, SCATTER_ROWS)[:, None].repeat(3, axis=1)  # network units
    sky.set_row_levels(rows_level)
    sky.set_scatter(np.linspace(0.5, 2.0, SCATTER_ROWS)[:, None].repeat(3, axis=1))  # deeper rows at darker skies
    dark, bright = _flat_sky(np.full((64, 3), 0.015)), _flat_sky(np.full((64, 3), 0.095))  # levels -0.97, -0.81
    got_dark = sky.rows_by_level(dark, torch.Generator().manual_seed(0))
    got_bright = sky.rows_by_level(bright, torch.Generator().manual_seed(0))
    nearest_dark = np.argsort(np.abs(rows_level[:, 0] - (0.015 * 2 - 1)))[:LEVEL_NEIGHBOUR_ROWS]
    assert set(got_dark.tolist()) <= set(nearest_dark.tolist())
    assert len(set(got_dark.tolist())) > 4  # a draw among the nearest, not one row
    assert got_bright.min() > SCATTER_ROWS - 2 * LEVEL_NEIGHBOUR_ROWS
    torch.testing.assert_close(got_dark, sky.rows_by_level(dark, torch.Generator().manual_seed(0)))  # seeded
    # through the forward: the dark stamps' noise is the dark rows' (small) sigma
    noisy_dark = sky(dark, torch.Generator().manual_seed(1), clip=False)
    noisy_bright = sky(bright, torch.Generator().manual_seed(1), clip=False)
    assert float((noisy_dark - dark).std()) < 0.6 * float((noisy_bright - bright).std())
    with pytest.raises(BadValueError, match="sky_scatter_by_level"):
        SkyNoise(3, by_level=True)
    with pytest.raises(BadValueError, match="sky_scatter_by_level"):
        SkyNoise(3, scatter=True, by_level=True, row_levels=True)


@pytest.mark.parametrize("option, buffer, other", [("sky_scatter_by_level", "sky.row_level", {}),
                                                   ("sky_scatter_by_light", "sky.row_light", {"sky_scatter_by_level": True})])
def test_sky_scatter_by_a_key_trains_resumes_exactly_samples_reproducibly_and_is_checked(tmp_path, option, buffer, other):
    """gan.sky_scatter_by_level / gan.sky_scatter_by_light: the rows' keys are measured on the real stamps and kept in
    the checkpoint; the option is frozen on resume and refused without a measured, scattered sky."""
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint
    from galearn.gan.loop import LEGACY_SETTINGS, _validate

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured", **{option: True})
    assert LEGACY_SETTINGS[option] is False
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert ckpt["config"][option] is True
    keys = ckpt["G"][buffer]
    assert keys.shape[1] == 3 and float(keys.std()) > 0  # the real rows' keys, set (not the placeholder)
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match=option):  # frozen on resume
        run_train(ws, dataclasses.replace(cfg, steps=6, **{option: False}), resume=True, progress=False)
    for bad in ({option: "yes"}, {"sky_scatter": False}, {"sky_noise": "learnt"},
                {"g_pin_sky": True, "g_template": True, "g_pin_sky_to": "stamp"}, other):
        if bad:
            with pytest.raises(BadValueError, match=option):
                _validate(dataclasses.replace(cfg, **bad))
    assert load_checkpoint(ws.gan / "ckpt-000004.pt")["G_ema"][buffer].shape == keys.shape


def test_central_light_is_the_centre_above_the_ring_in_numpy_and_torch():
    from galearn.gan.sky import central_light

    x = np.full((4, 3, 32, 32), 0.05, dtype="f4")
    x[:, :, 12:20, 12:20] += np.array([0.0, 0.1, 0.2, 0.4], dtype="f4")[:, None, None, None]  # the central box
    x[:, :, :2, :2] = 0.9  # a neighbour on the ring's corner moves its median not at all
    got = central_light(x)
    np.testing.assert_allclose(got, np.array([0.0, 0.1, 0.2, 0.4])[:, None].repeat(3, axis=1), atol=1e-6)
    np.testing.assert_allclose(central_light(torch.from_numpy(x)).numpy(), got, atol=1e-6)


def test_rows_by_light_give_a_bright_galaxy_a_bright_real_stamp_s_sky():
    """gan.sky_scatter_by_light: a stamp's depth row (and with sky_correlation_groups its sky texture) is drawn among
    the rows whose real stamps' central light lies nearest its own, seeded."""
    from galearn.gan.sky import LEVEL_NEIGHBOUR_ROWS, SCATTER_ROWS, SkyNoise

    sky = SkyNoise(3, 32, scatter=True, by_light=True, groups=2)
    sky.set({"sigma": np.full(3, 0.01), "softening": np.zeros(3), "norm": np.ones(3)})
    light = np.linspace(0.0, 0.5, SCATTER_ROWS)[:, None].repeat(3, axis=1)
    sky.set_row_light(light)
    sky.set_groups((np.arange(SCATTER_ROWS) >= SCATTER_ROWS // 2).astype(int))  # bright rows: group 1
    stamps = np.full((64, 3, 32, 32), 0.05, dtype="f4")
    faint, bright = stamps.copy(), stamps.copy()
    faint[:, :, 12:20, 12:20] += 0.02
    bright[:, :, 12:20, 12:20] += 0.45
    faint, bright = torch.from_numpy(faint) * 2 - 1, torch.from_numpy(bright) * 2 - 1
    got_faint = sky.rows_by_light(faint, torch.Generator().manual_seed(0))
    got_bright = sky.rows_by_light(bright, torch.Generator().manual_seed(0))
    nearest = np.argsort(np.abs(light[:, 0] - 0.02))[:LEVEL_NEIGHBOUR_ROWS]
    assert set(got_faint.tolist()) <= set(nearest.tolist()) and len(set(got_faint.tolist())) > 4
    assert set(got_bright.tolist()) <= set(np.argsort(np.abs(light[:, 0] - 0.45))[:LEVEL_NEIGHBOUR_ROWS].tolist())
    assert bool((sky.row_group[got_bright] == 1).all()) and bool((sky.row_group[got_faint] == 0).all())
    torch.testing.assert_close(got_faint, sky.rows_by_light(faint, torch.Generator().manual_seed(0)))  # seeded
    for bad in ({"by_light": True}, {"scatter": True, "by_light": True, "by_level": True},
                {"scatter": True, "by_light": True, "row_levels": True}):
        with pytest.raises(BadValueError, match="sky_scatter_by_light"):
            SkyNoise(3, **bad)
    with pytest.raises(BadValueError, match="sky_scatter_by_light"):
        SkyNoise(3, scatter=True).set_row_light(light)

