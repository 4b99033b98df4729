"""Correlated sky noise of the generator (gan.sky_noise = "measured-correlated", gan/sky.py): the autocorrelation
measured on the real stamps' outer ring, the seeded Gaussian random field drawn with it, resume and validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY, assert_resume_exact, assert_sample_reproducible  # noqa: E402

SIGMA = np.array([0.5, 1.0, 2.0])
SMOOTH = 1.0  # Gaussian filter of the correlated bands (pixels): correlation exp(-d^2 / (4 SMOOTH^2))


def _correlated_sky(n=300, size=32, seed=0):
    """Physical stamps: a Gaussian galaxy on a sky N(0, SIGMA_b), white in band 0, smoothed in bands 1-2;
    returns the asinh-stretched stamps and the stretch description."""
    from scipy.ndimage import gaussian_filter

    from galearn.imaging import AsinhStretch

    rng = np.random.default_rng(seed)
    pad = 6
    white = rng.standard_normal((n, 3, size + 2 * pad, size + 2 * pad))
    white[:, 1:] = gaussian_filter(white[:, 1:], (0, 0, SMOOTH, SMOOTH))
    field = white[:, :, pad:-pad, pad:-pad]
    field = field / field.std(axis=(0, 2, 3), keepdims=True)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    galaxy = 40.0 * np.exp(-(xx**2 + yy**2) / (2 * 2.5**2))
    phys = galaxy[None, None] * rng.uniform(0.5, 2, (n, 1, 1, 1)) + field * SIGMA[None, :, None, None]
    stretch = AsinhStretch.fit(phys, noise_sigma=SIGMA)
    d = {"method": "asinh", "softening": stretch.softening.tolist(), "maximum": stretch.maximum.tolist()}
    return stretch.forward(phys).astype("f4"), d


def _lag_corr(x: np.ndarray, dy: int, dx: int) -> float:
    h, w = x.shape[-2:]
    a = x[..., : h - dy, : w - dx].ravel()
    b = x[..., dy:, dx:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def test_measured_correlation_recovers_a_constructed_field_through_the_clipped_stretch():
    from galearn.gan.sky import measure_sky_correlation

    stretched, _ = _correlated_sky()
    assert (stretched == 0).mean() > 0.3  # the stretch clipped the sky's negative half
    rho = measure_sky_correlation(stretched)
    size = stretched.shape[-1]
    assert rho.shape == (3, 2 * size - 1, 2 * size - 1) and rho.dtype == np.float32
    c = size - 1
    for dy, dx in [(0, 1), (1, 0), (1, 1), (0, 2), (2, 1)]:
        expected = np.exp(-(dy * dy + dx * dx) / (4 * SMOOTH**2))
        for b in (1, 2):
            assert abs(rho[b, c + dy, c + dx] - expected) < 0.05, (b, dy, dx, rho[b, c + dy, c + dx], expected)
            assert rho[b, c - dy, c - dx] == pytest.approx(rho[b, c + dy, c + dx], abs=1e-6)  # symmetric
        assert abs(rho[0, c + dy, c + dx]) < 0.03  # the white band stays white
    assert rho[:, c, c].tolist() == [1.0, 1.0, 1.0]
    # A constant ring (no sky to measure) gives white noise, not an error.
    flat = np.zeros((4, 3, 16, 16), dtype="f4")
    assert np.count_nonzero(measure_sky_correlation(flat)) == 3


def test_correlated_noise_draw_is_seeded_and_has_the_measured_correlation():
    from galearn.gan.sky import SkyNoise, measure_sky, measure_sky_correlation

    stretched, stretch = _correlated_sky()
    rho = measure_sky_correlation(stretched)
    module = SkyNoise(3, 32)
    module.set(measure_sky(stretched, stretch))
    module.set_correlation(rho)
    unit = module.draw((200, 3, 32, 32), torch.Generator().manual_seed(5), torch.device("cpu"), torch.float32)
    again = module.draw((200, 3, 32, 32), torch.Generator().manual_seed(5), torch.device("cpu"), torch.float32)
    other = module.draw((200, 3, 32, 32), torch.Generator().manual_seed(6), torch.device("cpu"), torch.float32)
    assert torch.equal(unit, again) and not torch.equal(unit, other)
    np.testing.assert_allclose(unit.var(dim=(0, 2, 3)).numpy(), 1.0, rtol=0.05)
    u = unit.numpy()
    assert abs(_lag_corr(u[:, 0], 0, 1)) < 0.03
    for b in (1, 2):
        assert abs(_lag_corr(u[:, b], 0, 1) - np.exp(-0.25)) < 0.1
        assert abs(_lag_corr(u[:, b], 2, 0) - np.exp(-1.0)) < 0.1
    # The generated empty sky, measured like a real one, has the real sky's correlation and rms.
    h = torch.full((300, 3, 32, 32), -1.0)
    noisy = ((module(h, torch.Generator().manual_seed(1)) + 1) / 2).numpy()
    back = measure_sky_correlation(noisy)
    np.testing.assert_allclose(back[:, 31, 32], rho[:, 31, 32], atol=0.08)
    np.testing.assert_allclose(measure_sky(noisy, stretch)["sigma"], SIGMA, rtol=0.1)
    # A white-noise module has no spectrum to set.
    from galearn.errors import BadValueError

    with pytest.raises(BadValueError, match="white"):
        SkyNoise(3).set_correlation(rho)


def test_training_with_the_correlated_sky_resumes_exactly_and_samples_reproducibly(tmp_path):
    from galearn.errors import BadValueError
    from galearn.gan import run_train

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured-correlated", g_template=True,
                              d_radius=True)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    info = json.loads((ws.gan / "config.json").read_text())
    assert set(info["sky"]["correlation_x"]) >= {"1", "2", "4"}
    amp = ckpt["G_ema"]["sky.amplitude"]
    assert amp.shape == (3, 64, 33) and torch.equal(amp, ckpt["G"]["sky.amplitude"])
    assert not torch.equal(amp, torch.ones_like(amp))  # set from the measured correlation, not the placeholder
    with pytest.raises(BadValueError, match="sky_noise"):
        run_train(ws, dataclasses.replace(cfg, sky_noise="measured", steps=6), resume=True, progress=False)
    assert_sample_reproducible(ws, cfg)


def test_white_measured_sky_keeps_its_state_and_the_option_is_checked():
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate, build_networks

    white, _, _ = build_networks(2, 3, 32, dataclasses.replace(TINY, sky_noise="measured"))
    assert "sky.sigma" in white.state_dict() and "sky.amplitude" not in white.state_dict()  # old checkpoints load
    corr, _, _ = build_networks(2, 3, 32, dataclasses.replace(TINY, sky_noise="measured-correlated"))
    assert corr.sky.correlated and "sky.amplitude" in corr.state_dict()
    with pytest.raises(BadValueError, match="gan.sky_noise must be one of auto, measured, measured-correlated, learnt"):
        _validate(dataclasses.replace(TINY, sky_noise="correlated"))


def test_sky_penalty_measures_the_noiseless_ring_against_the_real_sky_and_resumes(tmp_path):
    """gan.g_sky_penalty: the mean squared deviation (in sky sigmas) of the noiseless stamp's outer ring from the
    measured sky level is 0 for a flat ring at that level, 1 for a ring one sigma off; G's loss carries it."""
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate, build_networks
    from galearn.gan.sky import SkyNoise, measure_sky, stretched_level

    stretched, stretch = _correlated_sky(n=100)
    sky = measure_sky(stretched, stretch)
    module = SkyNoise(3)
    module.set(sky)
    level = torch.tensor(sky["level"], dtype=torch.float32)
    flat = torch.from_numpy(2.0 * stretched_level(sky) - 1.0).view(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    assert float(module.ring_deviation(flat, level)) < 1e-6
    # One sigma above the level everywhere (linear units -> stretched -> network units).
    a, nrm = np.asarray(sky["softening"]), np.asarray(sky["norm"])
    up = np.arcsinh((np.asarray(sky["level"]) + np.asarray(sky["sigma"])) / a) / nrm
    shifted = torch.from_numpy((2.0 * up - 1.0).astype("f4")).view(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    assert float(module.ring_deviation(shifted, level)) == pytest.approx(1.0, rel=1e-3)
    # Only the ring counts: a bright centre costs nothing.
    centre = flat.clone()
    centre[..., 8:24, 8:24] = 0.9
    assert float(module.ring_deviation(centre, level)) < 1e-6

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_template=True, sky_noise="measured", g_sky_penalty=0.5)
    G, _, G_ema = build_networks(2, 3, 32, cfg)
    assert G.sky_penalty == 0.5 and "sky_ring_level" in G.state_dict()
    G.train()
    G(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]), torch.Generator().manual_seed(0))
    assert G.last_sky_penalty is not None and G.last_sky_penalty.requires_grad
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    info = json.loads((ws.gan / "config.json").read_text())
    np.testing.assert_allclose(ckpt["G_ema"]["sky_ring_level"].numpy(), info["sky"]["level"], rtol=1e-6)
    with pytest.raises(BadValueError, match="g_sky_penalty"):
        from galearn.gan import run_train

        run_train(ws, dataclasses.replace(cfg, g_sky_penalty=0.0, steps=6), resume=True, progress=False)
    with pytest.raises(BadValueError, match="gan.g_sky_penalty must be a number >= 0"):
        _validate(dataclasses.replace(cfg, g_sky_penalty=-1.0))
    with pytest.raises(BadValueError, match="g_sky_penalty needs gan.sky_noise"):
        _validate(dataclasses.replace(cfg, sky_noise="learnt"))


def test_sky_penalty_against_each_stamps_own_ring_costs_structure_not_level(tmp_path):
    """gan.g_sky_reference = stamp: the ring is held to its own median, so a flat ring at ANY level costs nothing
    (real skies differ from stamp to stamp) and a gradient across it still costs; resume is exact."""
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate, build_networks
    from galearn.gan.sky import SkyNoise, measure_sky, stretched_level

    stretched, stretch = _correlated_sky(n=100)
    sky = measure_sky(stretched, stretch)
    module = SkyNoise(3)
    module.set(sky)
    level = torch.tensor(sky["level"], dtype=torch.float32)
    a, nrm = np.asarray(sky["softening"]), np.asarray(sky["norm"])
    up = np.arcsinh((np.asarray(sky["level"]) + 2 * np.asarray(sky["sigma"])) / a) / nrm
    brighter = torch.from_numpy((2.0 * up - 1.0).astype("f4")).view(1, 3, 1, 1).expand(2, 3, 32, 32).clone()
    assert float(module.ring_deviation(brighter, level)) == pytest.approx(4.0, rel=1e-3)  # against the measured level
    own = module.ring_median(brighter)
    assert own.shape == (2, 3) and float(module.ring_deviation(brighter, own)) < 1e-6  # against its own median
    flat = torch.from_numpy(2.0 * stretched_level(sky) - 1.0).view(1, 3, 1, 1).expand(2, 3, 32, 32)
    ramp = flat + 0.3 * torch.linspace(-1, 1, 32).view(1, 1, 32, 1)
    assert float(module.ring_deviation(ramp, module.ring_median(ramp))) > 0.5  # about one sigma rms

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_template=True, sky_noise="measured", g_sky_penalty=0.5,
                              g_sky_reference="stamp")
    G, _, _ = build_networks(2, 3, 32, cfg)
    assert G.sky_reference == "stamp"
    G.train()
    G(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]), torch.Generator().manual_seed(0))
    assert G.last_sky_penalty is not None and G.last_sky_penalty.requires_grad
    assert_resume_exact(tmp_path, cfg)
    with pytest.raises(BadValueError, match="g_sky_reference = stamp .* needs gan.g_sky_penalty > 0"):
        _validate(dataclasses.replace(cfg, g_sky_penalty=0.0))
    with pytest.raises(BadValueError, match="g_sky_reference"):
        _validate(dataclasses.replace(cfg, g_sky_reference="ring"))


def test_sky_pinned_per_stamp_to_the_level_of_the_real_stamp_its_depth_comes_from(tmp_path):
    """gan.g_pin_sky_to = stamp: each generated stamp's noiseless ring median is one real stamp's own sky level,
    the same row (all bands) its sky sigma comes from; the levels are measured per real stamp; resume is exact."""
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate, build_networks
    from galearn.gan.sky import SCATTER_ROWS
    from galearn.gan.template import ring_median

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_template=True, sky_noise="measured",
                              sky_scatter=True, g_pin_sky=True, g_pin_sky_to="stamp")
    G, _, _ = build_networks(2, 3, 32, cfg)
    G.eval()
    levels = np.stack([np.linspace(-0.9, -0.5, SCATTER_ROWS) + 0.1 * b for b in range(3)], axis=1)  # a row per level
    G.sky.set_row_levels(levels)  # sigma still 0: no noise, the output is the pinned noiseless stamp
    with torch.no_grad():
        out = G(torch.randn(16, 8), torch.tensor([0, 1] * 8), torch.Generator().manual_seed(0))
    got = ring_median(out)[:, :, 0, 0].numpy()
    row = np.abs(got[:, :1] - levels[None, :, 0]).argmin(axis=1)
    np.testing.assert_allclose(got, levels[row], atol=1e-5)  # every band from the same real stamp's row
    assert len(set(row.tolist())) > 8
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    measured = ckpt["G_ema"]["sky.row_level"]
    assert measured.shape == (SCATTER_ROWS, 3) and bool((measured.std(dim=0) > 0).all())
    spread = json.loads((ws.gan / "config.json").read_text())["sky"]["row_level_quantiles"]
    assert all(lo < hi for lo, hi in zip(spread["0.05"], spread["0.95"]))  # recorded, linear units
    assert_sample_reproducible(ws, cfg)
    for bad in ({"g_pin_sky": False}, {"sky_scatter": False}, {"sky_noise": "learnt"}):
        with pytest.raises(BadValueError, match="g_pin_sky_to = stamp .* needs"):
            _validate(dataclasses.replace(cfg, **bad))
    with pytest.raises(BadValueError, match="g_pin_sky_to must be"):
        _validate(dataclasses.replace(cfg, g_pin_sky_to="ring"))


def test_stamps_of_different_sky_level_do_not_read_as_a_correlated_sky():
    """White skies whose level differs from stamp to stamp (by 1 sigma rms): no correlation at any lag.

    Pooled over all stamps, the low pixels cluster in the low-level stamps, which
    reads as a correlation of about 0.5 at every lag; the estimate is per stamp.
    """
    from galearn.gan.sky import measure_sky_correlation
    from galearn.imaging import AsinhStretch

    rng = np.random.default_rng(0)
    level = rng.normal(0.0, 1.0, (240, 1, 1, 1)) * SIGMA[None, :, None, None]
    phys = level + rng.standard_normal((240, 3, 32, 32)) * SIGMA[None, :, None, None]
    stretched = AsinhStretch.fit(phys, noise_sigma=SIGMA).forward(phys).astype("f4")
    rho = measure_sky_correlation(stretched)
    lags = rho[:, 31, 32:40]  # lags 1..8 along x
    assert np.abs(lags).max() < 0.06, lags


def test_auto_sky_picks_the_correlated_model_only_for_a_sky_correlated_at_short_lags():
    """gan.sky_noise = auto: correlated for pixel-scale noise correlation (JPEG, drizzle), white otherwise --
    also when the ring holds galaxy light, which correlates the ring at every lag alike."""
    from galearn.gan.sky import choose_sky_noise, measure_sky_correlation, short_range_correlation
    from galearn.imaging import AsinhStretch

    correlated, _ = _correlated_sky()  # bands 1, 2 smoothed: the median band is correlated
    rho = measure_sky_correlation(correlated)
    short = short_range_correlation(rho)
    assert abs(short[0]) < 0.05 and (short[1:] > 0.5).all(), short
    assert choose_sky_noise(rho) == "measured-correlated"
    assert choose_sky_noise(rho[:1].repeat(3, axis=0)) == "measured"  # three white bands
    # White noise plus a neighbour's broad light (8 px Gaussian, 1-3 sigma, anywhere on the stamp): the ring is
    # correlated at every lag alike (lag 1 would pass a plain lag-1 threshold), the noise is white.
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32]
    cy, cx = rng.uniform(0, 32, (2, 240, 1, 1, 1))
    halo = rng.uniform(1, 3, (240, 1, 1, 1)) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * 8.0**2))
    phys = (halo + rng.standard_normal((240, 3, 32, 32))) * SIGMA[None, :, None, None]
    rho = measure_sky_correlation(AsinhStretch.fit(phys, noise_sigma=SIGMA).forward(phys).astype("f4"))
    assert rho[:, 31, 32].min() > 0.15 and rho[:, 31, 40].min() > 0.1, rho[:, 31, 32:41]
    assert choose_sky_noise(rho) == "measured"


def test_auto_sky_is_resolved_from_the_training_stamps_recorded_and_kept_on_resume(tmp_path):
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint
    from galearn.gan.loop import build_networks, resolve_sky_noise
    from test_gan import make_workspace

    cfg = dataclasses.replace(TINY, steps=2, checkpoint_every=2, sky_noise="auto")
    ws = make_workspace(tmp_path / "auto", n=40)
    run_train(ws, cfg, progress=False)
    ckpt = load_checkpoint(ws.gan / "ckpt-000002.pt")
    info = json.loads((ws.gan / "config.json").read_text())
    chosen = ckpt["config"]["sky_noise"]
    assert chosen == "measured" and info["sky"]["noise_model"] == chosen  # white synthetic sky
    # The same as asking for the chosen model outright, bit for bit.
    ws_b = make_workspace(tmp_path / "explicit", n=40)
    run_train(ws_b, dataclasses.replace(cfg, sky_noise=chosen), progress=False)
    other = load_checkpoint(ws_b.gan / "ckpt-000002.pt")
    for key in ("G", "D", "G_ema"):
        for name, value in ckpt[key].items():
            assert torch.equal(value, other[key][name]), (key, name)
    # Resuming with auto keeps what auto chose; with the other model, it is refused.
    run_train(ws, dataclasses.replace(cfg, steps=4), resume=True, progress=False)
    assert load_checkpoint(ws.gan / "ckpt-000004.pt")["config"]["sky_noise"] == chosen
    with pytest.raises(BadValueError, match="sky_noise"):
        run_train(ws, dataclasses.replace(cfg, steps=6, sky_noise="measured-correlated"), resume=True, progress=False)
    # Networks cannot be built before the choice is made.
    with pytest.raises(BadValueError, match="resolve"):
        build_networks(2, 3, 32, cfg)
    stamps, _ = _correlated_sky(n=60)
    resolved, rho = resolve_sky_noise(cfg, stamps, ["a", "b", "c"])
    assert resolved.sky_noise == "measured-correlated" and rho.shape == (3, 63, 63)
    assert resolve_sky_noise(resolved, stamps) == (resolved, None)


def test_noise_correlation_keeps_the_short_range_noise_and_drops_the_broad_plateau():
    from galearn.gan.sky import noise_correlation

    size = 16
    dy, dx = np.meshgrid(np.arange(1 - size, size), np.arange(1 - size, size), indexing="ij")
    r = np.hypot(dy, dx)
    noise = np.exp(-(r**2) / 4.0)  # SMOOTH = 1 px noise correlation: 0.78 at lag 1, 0.02 at lag 4
    plateau = 0.08 * np.exp(-r / 12.0)  # galaxy light in the ring: slow, at every lag
    rho = np.stack([noise, noise + plateau * (1 - noise), np.where(r == 0, 1.0, plateau)]).astype("f4")
    part = noise_correlation(rho)
    c = size - 1
    assert part.shape == rho.shape and part.dtype == np.float32 and part[:, c, c].tolist() == [1.0, 1.0, 1.0]
    assert (part[:, r >= 4] == 0).all()  # nothing beyond 4 pixels
    np.testing.assert_allclose(part[0, c, c + 1], np.exp(-0.25) - np.exp(-4.0), atol=0.02)  # the noise, kept
    np.testing.assert_allclose(part[1, c, c + 1:c + 4], part[0, c, c + 1:c + 4], atol=0.03)  # plateau removed
    assert part[2, c, c + 1:c + 4].max() < 0.02  # a plateau alone: only its slope within 4 pixels is left


def test_grouped_sky_separates_white_from_smooth_skies_and_each_stamp_draws_its_own_texture():
    """gan.sky_correlation_groups: real stamps grouped by their own sky's smoothness; a generated stamp draws the
    kernel of the real stamp whose depth it draws, so smooth and white skies both appear, as in the real sample."""
    from scipy.ndimage import gaussian_filter

    from galearn.errors import BadValueError
    from galearn.gan.sky import SCATTER_ROWS, SkyNoise, measure_grouped_sky_correlation, sky_smoothness

    rng = np.random.default_rng(3)
    n, size = 120, 32
    sky = rng.standard_normal((n, 3, size, size))
    smooth = np.arange(n) % 2 == 1
    sky[smooth] = gaussian_filter(sky[smooth], (0, 0, 1.5, 1.5))
    sky /= sky.std(axis=(2, 3), keepdims=True)
    stretched = np.clip(0.2 + 0.05 * sky, 0, 1).astype("f4")
    smoothness = sky_smoothness(stretched)
    assert smoothness[smooth].min() > smoothness[~smooth].max()
    group, rho = measure_grouped_sky_correlation(stretched, 2)
    np.testing.assert_array_equal(group, smooth.astype(int))  # group 0: the least correlated skies
    c = size - 1
    assert rho.shape == (2, 3, 2 * size - 1, 2 * size - 1)
    assert np.all(np.abs(rho[0, :, c, c + 1]) < 0.05) and np.all(rho[1, :, c, c + 1] > 0.5)

    module = SkyNoise(3, size, scatter=True, groups=2)
    module.set({"sigma": [0.05] * 3, "softening": [0.0] * 3, "norm": [1.0] * 3})
    module.set_correlation(rho)
    module.set_groups(np.arange(SCATTER_ROWS) % 2)
    h = torch.full((400, 3, size, size), -0.2)
    out = module(h, torch.Generator().manual_seed(2))
    assert torch.equal(out, module(h, torch.Generator().manual_seed(2)))  # seeded
    per_stamp = sky_smoothness(((out + 1) / 2).numpy(), border=size // 2)
    ranked = np.sort(per_stamp)
    assert ranked[:120].max() < 0.2 and ranked[-120:].min() > 0.5  # both textures drawn, none in between
    with pytest.raises(BadValueError, match="correlation groups"):
        module.set_correlation(rho[0])
    with pytest.raises(BadValueError, match="sky_scatter"):
        SkyNoise(3, size, groups=2)
    with pytest.raises(BadValueError, match="sky_correlation_groups"):
        measure_grouped_sky_correlation(stretched[:1], 2)


def test_training_with_grouped_sky_kernels_resumes_exactly_and_the_option_is_checked(tmp_path):
    from galearn.config import RunConfig, load_config, parse_overrides
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate

    assert RunConfig().gan.sky_correlation_groups == 0
    assert load_config(None, parse_overrides(["gan.sky_correlation_groups=4"])).gan.sky_correlation_groups == 4
    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured-correlated", g_template=True,
                              sky_scatter=True, sky_correlation_groups=2)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    amp, row_group = ckpt["G_ema"]["sky.amplitude"], ckpt["G_ema"]["sky.row_group"]
    assert amp.shape == (2, 3, 64, 33) and not torch.equal(amp[0], amp[1])
    assert set(row_group.tolist()) == {0, 1}
    info = json.loads((ws.gan / "config.json").read_text())
    assert len(info["sky"]["group_noise_correlation_x1"]) == 2
    assert_sample_reproducible(ws, cfg)
    for bad in (-1, 17, 1.5, True):
        with pytest.raises(BadValueError, match="sky_correlation_groups"):
            _validate(dataclasses.replace(TINY, sky_correlation_groups=bad))
    with pytest.raises(BadValueError, match="sky_scatter"):
        _validate(dataclasses.replace(TINY, sky_correlation_groups=2, sky_scatter=False))


def _two_group_correlations(size: int) -> np.ndarray:
    """Noise correlations ``(2, 3, 2 size - 1, 2 size - 1)``: group 0 white, group 1 a Gaussian of sigma 1.5 pixels."""
    c = size - 1
    yy, xx = np.mgrid[-c:c + 1, -c:c + 1]
    rho = np.zeros((2, 3, 2 * size - 1, 2 * size - 1))
    rho[0, :, c, c] = 1.0
    rho[1] = np.exp(-(yy ** 2 + xx ** 2) / (4 * 1.5 ** 2))[None]  # white noise smoothed by a sigma-1.5 Gaussian
    return rho


def test_smooth_light_filters_a_smooth_sky_group_s_light_and_leaves_the_whitest_alone():
    """gan.sky_smooth_light: each group's transfer beyond group 0's, 1 at k = 0; a flat stamp stays flat, a point's
    light is kept but spread in the smooth group and untouched in the white one."""
    from galearn.errors import BadValueError
    from galearn.gan.sky import SkyNoise, light_transfer, noise_amplitude

    size = 32
    rho = _two_group_correlations(size)
    transfer = light_transfer(np.stack([noise_amplitude(r) for r in rho]))
    assert transfer.shape == (2, 3, 2 * size, size + 1)
    np.testing.assert_allclose(transfer[0], 1.0, atol=1e-5)
    assert transfer[1, :, 0, 0] == pytest.approx(1.0) and transfer[1].min() >= 0 and transfer[1].max() <= 1.0 + 1e-6
    assert transfer[1, :, size, size].max() < 0.1  # the highest frequencies of the smooth group's light go

    module = SkyNoise(3, size, scatter=True, groups=2, smooth_light=True)
    module.set({"sigma": [0.05] * 3, "softening": [0.0] * 3, "norm": [1.0] * 3})
    module.set_correlation(rho)
    torch.testing.assert_close(module.light_transfer, torch.from_numpy(transfer))
    flat = torch.full((2, 3, size, size), 0.3)
    torch.testing.assert_close(module.smooth_as_sky(flat, torch.tensor([0, 1])), flat)
    point = flat.clone()
    point[:, :, 16, 16] += 1.0
    out = module.smooth_as_sky(point, torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], point[0], atol=1e-5, rtol=0)  # the whitest group: unchanged
    assert float(out[1, :, 16, 16].max()) < 0.5 + 0.3  # the smooth group: spread ...
    torch.testing.assert_close((out[1] - 0.3).sum(dim=(-2, -1)), torch.ones(3), atol=1e-3, rtol=0)  # ... flux kept
    with pytest.raises(BadValueError, match="sky_smooth_light"):
        SkyNoise(3, size, scatter=True, smooth_light=True)


def test_training_with_smooth_light_resumes_exactly_and_the_option_is_checked(tmp_path):
    from galearn.config import RunConfig
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.loop import LEGACY_SETTINGS, _validate

    assert RunConfig().gan.sky_smooth_light is False and LEGACY_SETTINGS["sky_smooth_light"] is False
    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured-correlated", g_template=True,
                              sky_scatter=True, sky_correlation_groups=2, sky_smooth_light=True)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    transfer = ckpt["G_ema"]["sky.light_transfer"]
    assert transfer.shape == (2, 3, 64, 33) and float(transfer[1].min()) < 0.99  # measured, not the placeholder
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match="sky_smooth_light"):  # frozen on resume
        run_train(ws, dataclasses.replace(cfg, steps=6, sky_smooth_light=False), resume=True, progress=False)
    for bad in ({"sky_smooth_light": "yes"}, {"sky_correlation_groups": 0}):
        with pytest.raises(BadValueError, match="sky_smooth_light"):
            _validate(dataclasses.replace(cfg, **bad))


def _grey_sky(rho_bands, *, n=200, size=64, level=1.2, sigma_levels=3.5, neighbours=False, seed=1):
    """8-bit stamps (values k / 255) of a sky ``level`` sigmas above black, its noise correlated between bands by
    ``rho_bands``; with ``neighbours``, a bright blob in the outer ring of every stamp, redder in one band."""
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(np.asarray(rho_bands, dtype="f8"))
    z = np.einsum("bc,nchw->nbhw", chol, rng.standard_normal((n, 3, size, size)))
    if neighbours:
        yy, xx = np.mgrid[:size, :size]
        blob = 20.0 * np.exp(-((xx - 3) ** 2 + (yy - size / 2) ** 2) / 4.0)
        z = z + blob[None, None] * np.array([1.0, 0.5, 0.2])[None, :, None, None]
    return np.rint(np.clip((level + z) * sigma_levels, 0, 255)) / 255.0


def test_band_correlation_of_the_sky_is_measured_through_the_clip_and_past_neighbours():
    """measure_sky_band_correlation: a grey (JPEG-like) sky's correlation between bands is recovered from 8-bit
    stamps, well above black within 0.02, 1.2 sigma above it (a quarter of the ring clipped in part) within 0.1;
    independent bands read as uncorrelated; neighbouring galaxies in the ring do not move it."""
    from galearn.gan.sky import measure_sky_band_correlation

    rho = np.array([[1.0, 0.9, 0.8], [0.9, 1.0, 0.9], [0.8, 0.9, 1.0]])
    upper = np.triu_indices(3, 1)
    high = measure_sky_band_correlation(_grey_sky(rho, level=5.0))
    np.testing.assert_allclose(high[upper], rho[upper], atol=0.02)
    low = measure_sky_band_correlation(_grey_sky(rho))
    np.testing.assert_allclose(low[upper], rho[upper], atol=0.1)
    crowded = measure_sky_band_correlation(_grey_sky(rho, neighbours=True))
    np.testing.assert_allclose(crowded[upper], low[upper], atol=0.03)
    independent = measure_sky_band_correlation(_grey_sky(np.eye(3)))
    assert np.abs(independent[upper]).max() < 0.05, independent
    assert np.all(np.linalg.eigvalsh(low) > 0) and np.allclose(np.diag(low), 1.0)


def test_sky_noise_correlated_between_bands_as_measured(tmp_path, monkeypatch):
    """gan.sky_band_correlation: the generator's sky noise has the real sky's correlation between bands, measured
    at training and kept in G's state (gan/config.json records it; applied only from 0.3 in some pair of bands,
    else the bands stay independent); the identity placeholder draws exactly the independent noise; resume is
    exact and sampling reproducible."""
    from galearn.errors import BadValueError
    from galearn.gan.loop import build_networks
    from galearn.gan.sky import SKY_BAND_CORRELATION_MIN, SkyNoise, measure_sky_band_correlation

    rho = np.array([[1.0, 0.97, 0.95], [0.97, 1.0, 0.97], [0.95, 0.97, 1.0]])
    sky = {"sigma": [0.014] * 3, "softening": [0.0] * 3, "norm": [1.0] * 3}
    flat = torch.full((64, 3, 64, 64), -1.0 + 2 * 0.06)
    mixed, plain = SkyNoise(3, band_correlated=True), SkyNoise(3)
    for s in (mixed, plain):
        s.set(sky)
    assert torch.equal(mixed(flat, torch.Generator().manual_seed(0)), plain(flat, torch.Generator().manual_seed(0)))
    mixed.set_band_correlation(rho)
    got = measure_sky_band_correlation(((mixed(flat, torch.Generator().manual_seed(0)) + 1) / 2).numpy())
    np.testing.assert_allclose(got[np.triu_indices(3, 1)], rho[np.triu_indices(3, 1)], atol=0.03)
    with pytest.raises(BadValueError, match="independent between bands"):
        plain.set_band_correlation(rho)

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured", sky_band_correlation=True)
    G, _, _ = build_networks(2, 3, 32, cfg)
    assert G.sky.band_correlated
    # the tiny mock's sky is independent between bands (separate exposures): measured, recorded, not applied
    ws, ckpt = assert_resume_exact(tmp_path / "mock", cfg)
    recorded_sky = json.loads((ws.gan / "config.json").read_text())["sky"]
    assert np.abs(np.array(recorded_sky["band_correlation"]) - np.eye(3)).max() < SKY_BAND_CORRELATION_MIN
    assert recorded_sky["band_correlation_applied"] is False
    assert torch.equal(ckpt["G_ema"]["sky.band_mix"], torch.eye(3))
    # a grey sky (as measured on a colour JPEG): applied, kept in G's state, resumed and sampled exactly
    monkeypatch.setattr("galearn.gan.sky.measure_sky_band_correlation", lambda stamps, stretch=None: rho)
    ws, ckpt = assert_resume_exact(tmp_path / "grey", cfg)
    mix = ckpt["G_ema"]["sky.band_mix"]
    recorded_sky = json.loads((ws.gan / "config.json").read_text())["sky"]
    assert recorded_sky["band_correlation_applied"] is True
    np.testing.assert_allclose((mix @ mix.T).numpy(), recorded_sky["band_correlation"], atol=1e-3)
    np.testing.assert_allclose(recorded_sky["band_correlation"], rho, atol=1e-4)
    assert_sample_reproducible(ws, cfg)
