"""The measured sky-noise model of the generator (gan.sky_noise = "measured", gan/sky.py), and the
centring / template options (gan.d_radius, gan.g_template)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from galearn.errors import BadValueError  # noqa: E402
from test_gan import TINY, assert_resume_exact, assert_sample_reproducible  # noqa: E402

SIGMA = np.array([0.5, 1.0, 2.0])


def _real_like(n=200, size=32, seed=0, level=(0.0, 0.1, -0.2)):
    """Physical stamps: a Gaussian galaxy + per-band sky N(level_b, SIGMA_b), and their asinh stretch."""
    from galearn.imaging import AsinhStretch

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    galaxy = 40.0 * np.exp(-(xx**2 + yy**2) / (2 * 2.5**2))
    phys = galaxy[None, None] * rng.uniform(0.5, 2, (n, 1, 1, 1)) + np.asarray(level)[None, :, None, None]
    phys = phys + rng.standard_normal((n, 3, size, size)) * SIGMA[None, :, None, None]
    stretch = AsinhStretch.fit(phys, noise_sigma=SIGMA)
    d = {"method": "asinh", "softening": stretch.softening.tolist(), "maximum": stretch.maximum.tolist()}
    return stretch.forward(phys).astype("f4"), d


def test_measure_sky_recovers_the_per_band_rms_through_the_clipped_stretch():
    from galearn.gan.sky import measure_sky

    stretched, stretch = _real_like()
    assert (stretched == 0).mean() > 0.3  # the stretch clipped the sky's negative half
    sky = measure_sky(stretched, stretch)
    np.testing.assert_allclose(sky["sigma"], SIGMA, rtol=0.05)
    np.testing.assert_allclose(sky["level"], [0.0, 0.1, -0.2], atol=0.06 * SIGMA.max())
    # A linear (identity) stretch: the stretched values are the linear units.
    rng = np.random.default_rng(1)
    flat = np.clip(0.05 + 0.01 * rng.standard_normal((50, 3, 32, 32)), 0, 1).astype("f4")
    np.testing.assert_allclose(measure_sky(flat, {"method": "identity"})["sigma"], 0.01, rtol=0.05)


def test_measure_sky_takes_8bit_quantiles_between_whole_levels():
    """8-bit images hold whole levels: a sky sigma of 2.5-4 levels read off their raw quantiles is off by
    tens of percent, band by band (round 25, galaxy-zoo-dev: -28 % to +29 %); between levels it is not."""
    from galearn.gan.sky import _sky_quantiles, measure_sky, measure_sky_scatter, quantisation_step

    rng = np.random.default_rng(3)
    sigma_levels, level_levels = np.array([3.9, 3.5, 2.5]), np.array([5.0, 5.0, 3.0])
    sky = level_levels[None, :, None, None] + sigma_levels[None, :, None, None] * rng.standard_normal((300, 3, 32, 32))
    eight_bit = (np.clip(np.rint(sky), 0, 255) / 255).astype("f4")
    identity = {"method": "identity"}
    assert quantisation_step(eight_bit, identity) == pytest.approx(1 / 255)
    assert quantisation_step(eight_bit + 1e-3, identity) == 0.0  # not on the grid: continuous values
    got = measure_sky(eight_bit, identity)
    np.testing.assert_allclose(np.asarray(got["sigma"]) * 255, sigma_levels, rtol=0.03)
    np.testing.assert_allclose(np.asarray(got["level"]) * 255, level_levels, atol=0.15)
    # The raw quantiles (what measure_sky did before) miss by more than 5 % in some band.
    x, ring = eight_bit.astype("f8"), np.ones((32, 32), bool)
    ring[4:-4, 4:-4] = False
    v = np.moveaxis(x[:, :, ring], 1, 0).reshape(3, -1)
    raw, _, _ = _sky_quantiles(v, v <= 0, axis=1)
    assert np.abs(raw * 255 / sigma_levels - 1).max() > 0.05
    # Per stamp as well: one depth everywhere, every ratio near 1 (448 ring pixels a stamp).
    ratios = measure_sky_scatter(eight_bit, identity, got, rows=300)
    assert np.abs(np.median(ratios, axis=0) - 1).max() < 0.05


def test_sky_per_stamp_sees_a_sky_painted_under_the_noise():
    """gan evaluate's `sky`: a generator that adds smooth structure and a darker level under the measured noise
    shows as a larger per-stamp sigma, a wider, lower level and more pixels at black than the real stamps."""
    from galearn.gan.evaluate import sky_comparison
    from galearn.gan.sky import sky_per_stamp

    rng = np.random.default_rng(5)
    n, size = 200, 32
    real = np.clip(0.02 + 0.01 * rng.standard_normal((n, 3, size, size)), 0, 1)
    per = sky_per_stamp(real, {"method": "identity"})
    assert per["level"].shape == per["sigma"].shape == per["clipped"].shape == (n, 3)
    np.testing.assert_allclose(np.median(per["sigma"], axis=0), 0.01, rtol=0.1)
    np.testing.assert_allclose(np.median(per["level"], axis=0), 0.02, atol=0.002)
    yy = np.linspace(-1, 1, size)[None, None, :, None]
    painted = (0.01 + 0.01 * rng.standard_normal((n, 1, 1, 1))  # a darker level, different in each stamp,
               + 0.015 * yy * rng.standard_normal((n, 1, 1, 1))  # a gradient across each sky
               + 0.01 * rng.standard_normal((n, 3, size, size)))
    out = sky_comparison({"real": real, "generated": np.clip(painted, 0, 1)}, {"method": "identity"}, ["u", "g", "r"])
    gen, ref = out["generated"], out["real"]
    assert all(g[1] > 1.2 * r[1] for g, r in zip(gen["sigma"], ref["sigma"]))  # medians, per band
    assert all(g[2] - g[0] > 2 * (r[2] - r[0]) for g, r in zip(gen["level"], ref["level"]))  # 5-95 % range
    assert min(gen["clipped_fraction"]) > 1.5 * max(ref["clipped_fraction"])
    assert set(gen["band_correlation"]) == {"u-g", "u-r", "g-r"}  # independent noise per band in both sets
    assert max(abs(v) for s in (gen, ref) for v in s["band_correlation"].values()) < 0.1


def test_sky_noise_is_seeded_and_has_the_measured_rms():
    from galearn.gan.sky import SkyNoise, measure_sky

    stretched, stretch = _real_like()
    sky = measure_sky(stretched, stretch)
    module = SkyNoise(3)
    module.set(sky)
    h = torch.full((100, 3, 32, 32), -1.0)  # a noiseless empty sky (stretched 0, physical 0)
    a = module(h, torch.Generator().manual_seed(5))
    b = module(h, torch.Generator().manual_seed(5))
    c = module(h, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1 and a.max() <= 1
    # The generated sky, measured like a real one, has the real stamps' rms per band.
    again = measure_sky(((a + 1) / 2).numpy(), stretch)
    np.testing.assert_allclose(again["sigma"], sky["sigma"], rtol=0.05)
    # Gradients reach the noiseless image (where the noisy pixel is not clipped).
    h = torch.zeros(2, 3, 32, 32, requires_grad=True)
    module(h, torch.Generator().manual_seed(0)).sum().backward()
    assert h.grad.abs().sum() > 0


def test_training_with_the_measured_sky_template_and_radius_resumes_exactly(tmp_path):
    from galearn.errors import BadValueError
    from galearn.gan import run_train

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured", d_radius=True, g_template=True)
    ws_a, a = assert_resume_exact(tmp_path, cfg)
    info = json.loads((ws_a.gan / "config.json").read_text())
    assert "template" in a["G"] and a["D"]["features.0.weight_orig"].shape[1] == 4  # 3 bands + the radius map
    assert len(info["sky"]["sigma"]) == 3 and all(s > 0 for s in info["sky"]["sigma"])
    np.testing.assert_allclose(a["G_ema"]["sky.sigma"].numpy(), info["sky"]["sigma"], rtol=1e-6)
    with pytest.raises(BadValueError, match="sky_noise"):
        run_train(ws_a, dataclasses.replace(cfg, sky_noise="learnt", steps=6), resume=True, progress=False)
    # The library is sampled with the checkpoint's sky: seeded, identical twice.
    assert_sample_reproducible(ws_a, cfg)


def test_sky_noise_option_is_checked():
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate

    with pytest.raises(BadValueError, match="gan.sky_noise"):
        _validate(dataclasses.replace(TINY, sky_noise="none"))


def test_template_starts_at_the_class_median_and_radius_map_is_centred():
    from galearn.gan.loop import build_networks, init_output_bias

    cfg = dataclasses.replace(TINY, g_template=True, d_radius=True, sky_noise="measured")
    G, D, G_ema = build_networks(2, 3, 32, cfg)
    stamps, _ = _real_like(n=40)
    y = np.arange(40) % 2
    init_output_bias(G, G_ema, stamps, y)
    np.testing.assert_allclose(G_ema.template[1].detach().numpy(), 2 * np.median(stamps[y == 1], axis=0) - 1, atol=1e-6)
    assert float(G.to_img.bias.detach().abs().max()) == 0.0
    # The template's brightest pixel is the centre (the real stamps are centred).
    peak = np.unravel_index(int(G.template[0, 0].argmax()), (32, 32))
    assert abs(peak[0] - 15.5) <= 1 and abs(peak[1] - 15.5) <= 1
    r = D.radius[0, 0].numpy()
    assert r.shape == (32, 32) and abs(r.mean()) < 1e-6 and r[0, 0] == r.max() and r[15, 15] == r[16, 16] == r.min()
    assert "radius" not in D.state_dict()  # fixed, rebuilt, not trained


def test_generator_output_starts_at_the_template_and_grows_from_there(tmp_path):
    """gan.g_out_scale = 0: G's own image is exactly 0 before training (samples = template + sky), non-zero
    after one step; old checkpoints (no g_out_scale in their config) resume and sample as scale 1."""
    from galearn.errors import BadValueError
    from galearn.gan import run_sample, run_train
    from galearn.gan.checkpoint import load_checkpoint, save_checkpoint
    from galearn.gan.loop import build_networks, init_output_bias

    cfg = dataclasses.replace(TINY, g_template=True, g_out_scale=0.0, sky_noise="measured")
    G, _, G_ema = build_networks(2, 3, 32, cfg)
    stamps, _ = _real_like(n=40)
    y = np.arange(40) % 2
    init_output_bias(G, G_ema, stamps, y)
    for net in (G, G_ema):
        assert float(net.to_img.weight.detach().abs().max()) == 0.0
        net.eval()
        out = net(torch.randn(4, 8), torch.tensor([0, 1, 0, 1]))
        torch.testing.assert_close(out, net.template[torch.tensor([0, 1, 0, 1])].clamp(-1, 1), rtol=0, atol=1e-6)
    default, _, _ = build_networks(2, 3, 32, dataclasses.replace(cfg, g_out_scale=1.0))
    assert float(default.to_img.weight.detach().abs().max()) > 0.01
    # Training moves the output weights off 0 (and resumes exactly with them).
    ws, ckpt = assert_resume_exact(tmp_path, dataclasses.replace(cfg, steps=4, checkpoint_every=2))
    assert float(ckpt["G"]["to_img.weight"].abs().max()) > 0
    assert float(ckpt["G_ema"]["to_img.weight"].abs().max()) > 0
    # A checkpoint written before the option existed was trained at scale 1: resumable as such, not as 0.
    path = ws.gan / "ckpt-000004.pt"
    old = load_checkpoint(path)
    old["config"] = {k: v for k, v in old["config"].items() if k != "g_out_scale"}
    save_checkpoint(path, old)
    with pytest.raises(BadValueError, match="g_out_scale"):
        run_train(ws, dataclasses.replace(cfg, steps=6), resume=True, progress=False)
    run_train(ws, dataclasses.replace(cfg, steps=6, g_out_scale=1.0), resume=True, progress=False)
    run_sample(ws, dataclasses.replace(cfg, n_per_class=2), progress=False)
    with pytest.raises(BadValueError, match="g_out_scale"):
        from galearn.gan.loop import _validate

        _validate(dataclasses.replace(TINY, g_out_scale=-0.5))


def test_template_warp_measures_the_real_spread_and_draws_it():
    """gan.g_template_warp: measure_shapes finds the flux / size / shape spread of the real stamps around the class
    template; TemplateWarp with zero parameters is the template itself, and its flux / size / shear act as named."""
    from galearn.gan.template import TemplateWarp, _luminance, _moments, measure_shapes

    rng = np.random.default_rng(0)
    n, size = 300, 32
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    log_f = rng.normal(0.0, 0.5, n)
    log_s = rng.normal(0.0, 0.2, n)
    r = 2.0 * np.exp(log_s)[:, None, None]
    img = 0.5 * np.exp(log_f)[:, None, None] * np.exp(-(xx**2 + yy**2)[None] / (2 * r**2)) * (2.0 / r) ** 2
    stamps = np.repeat(img[:, None], 3, axis=1).astype("f4")
    y = np.zeros(n, dtype=int)
    template = np.median(stamps, axis=0)[None]
    shapes = measure_shapes(stamps, y, template)
    # Surface brightness (flux / size^2 here: 0.5 exp(log_f) / r^2 * 4 / r^2 * r^2) and size spreads recovered.
    assert 0.35 < shapes["std"][0] < 0.9 and 0.12 < shapes["std"][1] < 0.3
    assert shapes["std"][2] < 0.05 and shapes["std"][3] < 0.05  # round sources: no distortion
    warp = TemplateWarp(1, 8)
    t = torch.from_numpy(template * 2 - 1)
    z = torch.zeros(2, 8)
    torch.testing.assert_close(warp(t, z, torch.tensor([0, 0])), t.expand(2, -1, -1, -1), rtol=0, atol=1e-5)
    lum0 = _luminance(((t + 1) / 2).numpy())
    f0, s0, _, _ = _moments(lum0, size / 8)
    with torch.no_grad():
        warp.bias[0] = torch.tensor([np.log(2.0), np.log(1.3), 0.4, 0.0])
    out = ((warp(t, z[:1], torch.tensor([0])).detach() + 1) / 2).numpy()
    f1, s1, e1, e2 = _moments(_luminance(out), size / 8)
    # Surface brightness x2 and size x1.3: windowed flux x ~2 * 1.3^2.
    assert 2.4 < f1[0] / f0[0] < 3.6 and 1.1 < s1[0] / s0[0] < 1.5 and 0.25 < abs(e1[0]) < 0.55 and abs(e2[0]) < 0.05
    # Seeded: the weights are drawn with the measured spread, the class means copied.
    warp.set(shapes, seed=4)
    again = TemplateWarp(1, 8)
    again.set(shapes, seed=4)
    assert torch.equal(warp.weight, again.weight)
    torch.testing.assert_close(warp.bias, torch.tensor(shapes["mean"], dtype=torch.float32))


def test_training_with_the_drawn_template_resumes_exactly_and_old_checkpoints_load(tmp_path):
    from galearn.errors import BadValueError
    from galearn.gan import run_sample, run_train
    from galearn.gan.checkpoint import load_checkpoint, save_checkpoint
    from galearn.gan.loop import _validate

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_template=True, g_template_warp=True, g_out_scale=0.0)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    info = json.loads((ws.gan / "config.json").read_text())
    assert len(info["template_shapes"]["std"]) == 4 and all(s >= 0 for s in info["template_shapes"]["std"])
    assert "warp.weight" in ckpt["G_ema"] and not torch.equal(ckpt["G"]["warp.weight"], ckpt["G"]["warp.weight"] * 0)
    run_sample(ws, dataclasses.replace(cfg, n_per_class=2), progress=False)
    # A checkpoint from before the option (no key in its config, no warp in its state) samples as without it.
    plain = dataclasses.replace(cfg, g_template_warp=False, g_out_scale=1.0)
    run_train(ws, plain, progress=False)
    old = load_checkpoint(ws.gan / "ckpt-000004.pt")
    old["config"] = {k: v for k, v in old["config"].items() if k not in ("g_template_warp", "g_out_scale")}
    save_checkpoint(ws.gan / "ckpt-000004.pt", old)
    run_sample(ws, dataclasses.replace(plain, n_per_class=2), progress=False)
    with pytest.raises(BadValueError, match="g_template_warp"):
        run_train(ws, dataclasses.replace(cfg, steps=6, g_out_scale=1.0), resume=True, progress=False)
    with pytest.raises(BadValueError, match="g_template_warp needs"):
        _validate(dataclasses.replace(TINY, g_template=False, g_template_warp=True))


def _uneven_depth(n=240, size=32, seed=0):
    """:func:`_real_like` stamps whose sky sigma is SIGMA x 0.5, 1 or 2 (one factor per stamp, all bands)."""
    from galearn.imaging import AsinhStretch

    rng = np.random.default_rng(seed)
    depth = np.array([0.5, 1.0, 2.0])[np.arange(n) % 3]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    galaxy = 40.0 * np.exp(-(xx**2 + yy**2) / (2 * 2.5**2))
    phys = galaxy[None, None] * rng.uniform(0.5, 2, (n, 1, 1, 1))
    phys = phys + rng.standard_normal((n, 3, size, size)) * SIGMA[None, :, None, None] * depth[:, None, None, None]
    stretch = AsinhStretch.fit(phys, noise_sigma=SIGMA)
    d = {"method": "asinh", "softening": stretch.softening.tolist(), "maximum": stretch.maximum.tolist()}
    return stretch.forward(phys).astype("f4"), d, depth


def test_sky_scatter_recovers_each_stamps_depth():
    from galearn.gan.sky import measure_sky, measure_sky_scatter

    stretched, stretch, depth = _uneven_depth()
    sky = measure_sky(stretched, stretch)
    ratios = measure_sky_scatter(stretched, stretch, sky, rows=len(depth))  # every stamp once, in order
    assert ratios.shape == (len(depth), 3) and ratios.dtype == np.float32
    sigma = ratios * np.asarray(sky["sigma"])[None]
    got = sigma / SIGMA[None]  # each stamp's own sigma over its band's: its depth factor (448 ring pixels each)
    for d in (0.5, 1.0, 2.0):
        np.testing.assert_allclose(np.median(got[depth == d], axis=0), d, rtol=0.1)
    assert np.mean(np.abs(got / depth[:, None] - 1) < 0.3) > 0.95
    # Seeded rows; fewer stamps than rows are drawn with replacement.
    again = measure_sky_scatter(stretched, stretch, sky, rows=64, random_state=4)
    np.testing.assert_array_equal(again, measure_sky_scatter(stretched, stretch, sky, rows=64, random_state=4))
    assert measure_sky_scatter(stretched[:10], stretch, sky, rows=64).shape == (64, 3)
    # One depth everywhere: every ratio near 1.
    even, stretch_even = _real_like()
    flat = measure_sky_scatter(even, stretch_even, measure_sky(even, stretch_even))
    assert np.abs(np.median(flat, axis=0) - 1).max() < 0.05 and np.quantile(flat, 0.95) < 1.25


def test_scattered_sky_noise_draws_the_real_depths_and_is_seeded():
    from galearn.gan.sky import SCATTER_ROWS, SkyNoise, measure_sky, measure_sky_scatter

    stretched, stretch, depth = _uneven_depth()
    sky = measure_sky(stretched, stretch)
    plain, scattered = SkyNoise(3), SkyNoise(3, scatter=True)
    for m in (plain, scattered):
        m.set(sky)
    h = torch.full((300, 3, 32, 32), -1.0)
    # All ratios 1 (the placeholder): the plain module's noise, number for number.
    torch.testing.assert_close(scattered(h, torch.Generator().manual_seed(2)), plain(h, torch.Generator().manual_seed(2)),
                               rtol=0, atol=0)
    scattered.set_scatter(measure_sky_scatter(stretched, stretch, sky, rows=SCATTER_ROWS))
    a = scattered(h, torch.Generator().manual_seed(5))
    drawn = scattered.last_scales  # the rows this forward used, one per stamp (the library's censored sky reads them)
    assert drawn.shape == (300, 3) and bool((drawn[:, None, :] == scattered.scales[None]).all(-1).any(-1).all())
    torch.testing.assert_close(a, scattered(h, torch.Generator().manual_seed(5)), rtol=0, atol=0)
    # Measured stamp by stamp like the real ones, the generated skies have the real stamps' three depths.
    fake = ((a + 1) / 2).numpy()
    got = measure_sky_scatter(fake, stretch, sky, rows=len(fake)) * np.asarray(sky["sigma"])[None] / SIGMA[None]
    for d in (0.5, 1.0, 2.0):
        share = (np.abs(got[:, 1] / d - 1) < 0.2).mean()
        assert 0.2 < share < 0.47, (d, share)
    with pytest.raises(BadValueError, match="sky_scatter"):
        plain.set_scatter(np.ones((SCATTER_ROWS, 3)))


def test_training_with_sky_scatter_stores_the_real_ratios(tmp_path):
    from galearn.gan.sky import SCATTER_ROWS

    cfg = dataclasses.replace(TINY, steps=2, checkpoint_every=2, sky_noise="measured", sky_scatter=True)
    ws_a, a = assert_resume_exact(tmp_path, dataclasses.replace(cfg, steps=4))
    info = json.loads((ws_a.gan / "config.json").read_text())
    assert set(info["sky"]["sigma_ratio_quantiles"]) == {"0.05", "0.5", "0.95"}
    scales = a["G_ema"]["sky.scales"]
    assert scales.shape == (SCATTER_ROWS, 3) and float(scales.std()) > 0  # measured, not the placeholder
    torch.testing.assert_close(scales, a["G"]["sky.scales"])


def _compressed_8bit(n=160, size=48, seed=0, sky_sigma=0.02, knee=0.2):
    """8-bit identity-stretched stamps (``value / 255``): broad Gaussian galaxies of random peak 0.2-0.9 on a sky
    at 0.02, whose pixel noise is ``sky_sigma / sqrt(1 + (level / knee)^2)``, as an asinh-like colour composite
    compresses it under bright light; returns the stamps and that gain function of the level."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    shape = np.exp(-(xx**2 + yy**2) / (2 * 8.0**2))
    level = 0.02 + rng.uniform(0.2, 0.9, (n, 1, 1, 1)) * shape[None, None] * np.array([1.0, 0.8, 0.6])[None, :, None, None]
    level = np.broadcast_to(level, (n, 3, size, size))

    def gain(v):
        return 1.0 / np.sqrt(1.0 + (v / knee) ** 2)

    noisy = level + sky_sigma * gain(level) * rng.standard_normal(level.shape)
    return (np.rint(np.clip(noisy, 0, 1) * 255) / 255).astype("f4"), gain


def test_noise_gain_under_the_galaxy_is_measured_from_8bit_stamps():
    """measure_noise_gain: the pixel noise's fall under bright light (an asinh-like composite) is recovered
    from 8-bit stamps within 15 % of the constructed gain, relative to the first level bin; a sky with no
    galaxy keeps gain 1; in physical units with photon noise the gain rises."""
    from galearn.gan.sky import NOISE_GAIN_BINS, measure_noise_gain, measure_sky

    stamps, gain = _compressed_8bit()
    sky = measure_sky(stamps)
    levels, gains = measure_noise_gain(stamps, None, sky)
    assert levels.shape == gains.shape == (3, NOISE_GAIN_BINS)
    assert np.all(np.diff(levels, axis=1) > 0) and np.allclose(gains[:, 0], 1.0)
    expected = gain(levels) / gain(levels[:, :1])
    bright = levels > 0.25
    assert bright.sum() >= 6
    np.testing.assert_allclose(gains[bright], expected[bright], rtol=0.15)
    assert gains[0, -1] < 0.6  # noise at the brightest light about half the sky's

    blank = np.rint(np.clip(0.02 + 0.02 * np.random.default_rng(1).standard_normal((50, 3, 32, 32)), 0, 1) * 255) / 255
    _, flat = measure_noise_gain(blank, None, measure_sky(blank))
    assert np.all(flat == 1.0)

    stretched, stretch = _real_like()  # no photon noise: flat; with it (variance + 0.5 x light), rising
    rng = np.random.default_rng(2)
    size = stretched.shape[-1]
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    light = 400.0 * np.exp(-(xx**2 + yy**2) / (2 * 5.0**2))[None, None] * rng.uniform(0.5, 2, (200, 1, 1, 1))
    phys = light + rng.standard_normal((200, 3, size, size)) * np.sqrt(SIGMA[None, :, None, None] ** 2 + 0.5 * light)
    from galearn.imaging import AsinhStretch

    fit = AsinhStretch.fit(phys, noise_sigma=SIGMA)
    d = {"method": "asinh", "softening": fit.softening.tolist(), "maximum": fit.maximum.tolist()}
    x = fit.forward(phys).astype("f4")
    _, rising = measure_noise_gain(x, d, measure_sky(x, d))
    assert np.all(rising[:, -1] > 3.0), rising


def test_sky_noise_gain_scales_the_noise_with_the_noiseless_level_and_resumes(tmp_path):
    """SkyNoise with a noise gain: the placeholder draws exactly the plain sky; once set, a flat stamp at a bright
    level gets the gain's noise, one at the sky level the sky's; gan.sky_noise_gain trains with the measured gain
    (gan/config.json records what G_ema holds), resumes exactly and samples reproducibly; it is refused where the
    sky has no gain."""
    from galearn.gan.loop import build_networks
    from galearn.gan.sky import NOISE_GAIN_BINS, SkyNoise

    sky = {"sigma": [0.02] * 3, "softening": [0.0] * 3, "norm": [1.0] * 3}
    gained, plain = SkyNoise(3, level_gain=True), SkyNoise(3)
    for s in (gained, plain):
        s.set(sky)
    bright = torch.full((32, 3, 32, 32), -1.0 + 2 * 0.5)
    dark = torch.full((32, 3, 32, 32), -1.0 + 2 * 0.1)
    assert torch.equal(gained(bright, torch.Generator().manual_seed(0)), plain(bright, torch.Generator().manual_seed(0)))
    levels = np.tile(np.linspace(0.1, 0.6, NOISE_GAIN_BINS), (3, 1))
    gains = np.tile(np.linspace(1.0, 0.5, NOISE_GAIN_BINS), (3, 1))
    gained.set_noise_gain(levels, gains)
    for h, g in ((bright, float(np.interp(0.5, levels[0], gains[0]))), (dark, 1.0)):
        sd = ((gained(h, torch.Generator().manual_seed(0)) - h) / 2).std().item()
        assert abs(sd / (0.02 * g) - 1) < 0.03, (sd, g)
    with pytest.raises(BadValueError, match="levels must increase"):
        gained.set_noise_gain(levels[:, ::-1], gains)
    with pytest.raises(BadValueError, match="sky_noise_gain = false"):
        plain.set_noise_gain(levels, gains)

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured", sky_noise_gain=True)
    G, _, _ = build_networks(2, 3, 32, cfg)
    assert G.sky.level_gain
    ws, ckpt = assert_resume_exact(tmp_path / "gain", cfg)
    recorded = json.loads((ws.gan / "config.json").read_text())["sky"]["noise_gain"]
    np.testing.assert_allclose(ckpt["G_ema"]["sky.gain"].numpy(), recorded["gain"], atol=1e-3)
    np.testing.assert_allclose(ckpt["G_ema"]["sky.gain_level"].numpy(), recorded["level"], rtol=1e-3, atol=1e-5)
    assert_sample_reproducible(ws, cfg)


def _field_with_neighbours(n=120, size=48, seed=0):
    """Physical stamps on an asinh stretch: a bright central galaxy and 0-3 point-like neighbours (Gaussian sigma
    1.2 px, flux 300 in every band) at known offsets; returns the stretched stamps, stretch, counts and offsets."""
    from galearn.imaging import AsinhStretch

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    phys = np.zeros((n, 3, size, size)) + 40.0 * np.exp(-(xx**2 + yy**2) / (2 * 3.0**2))[None, None]
    counts = rng.integers(0, 4, n)
    offsets = []
    for i in range(n):
        turn = rng.uniform(0, 2 * np.pi)
        for j in range(counts[i]):  # a third of a turn apart: separate sources
            r, a = rng.uniform(15, 20), turn + 2 * np.pi * j / 3 + rng.uniform(-0.3, 0.3)
            dx, dy = r * np.cos(a), r * np.sin(a)
            offsets.append((i, dx, dy))
            phys[i] += 300.0 / (2 * np.pi * 1.2**2) * np.exp(-((xx - dx) ** 2 + (yy - dy) ** 2) / (2 * 1.2**2))
    phys += rng.standard_normal(phys.shape) * SIGMA[None, :, None, None]
    stretch = AsinhStretch.fit(phys, noise_sigma=SIGMA)
    d = {"method": "asinh", "softening": stretch.softening.tolist(), "maximum": stretch.maximum.tolist()}
    return stretch.forward(phys).astype("f4"), d, counts, offsets


def test_neighbours_are_measured_and_drawn_as_in_the_real_stamps(tmp_path, monkeypatch):
    """measure_neighbours finds the constructed neighbours away from the central galaxy (counts per stamp, flux
    per band within 25 %, distance from the centre within 0.5 px, size near their sigma); render_neighbours draws
    a stamp's real count of real sources at their distance with their flux; gan.g_neighbours trains with them
    (gan/config.json records them), resumes exactly and samples reproducibly, and needs a measured sky."""
    from galearn.gan.loop import build_networks
    from galearn.gan.neighbours import NEIGHBOUR_COUNT_ROWS, measure_neighbours, render_neighbours
    from galearn.gan.sky import linearise, measure_sky

    stretched, stretch, counts, offsets = _field_with_neighbours()
    sky = measure_sky(stretched, stretch)
    got_counts, sources = measure_neighbours(linearise(stretched, stretch)[0], sky["level"], sky["sigma"])
    np.testing.assert_array_equal(got_counts, counts)
    assert len(sources) == len(offsets)
    np.testing.assert_allclose(sources[:, :3], 300.0, rtol=0.25)
    true_r = np.sort([np.hypot(dx, dy) for _, dx, dy in offsets])
    np.testing.assert_allclose(np.sort(np.hypot(sources[:, 4], sources[:, 5])), true_r, atol=0.5)
    assert 0.8 < np.median(sources[:, 3]) < 1.4

    one = torch.from_numpy(np.array([[300.0, 300.0, 300.0, 1.2, 15.0, 0.0]], dtype="f4"))
    image = render_neighbours(torch.ones(NEIGHBOUR_COUNT_ROWS, dtype=torch.long), one, 1, (8, 3, 48, 48),
                              torch.Generator().manual_seed(0), torch.device("cpu"), torch.float32)
    np.testing.assert_allclose(image.sum(dim=(2, 3)).numpy(), 300.0, rtol=0.01)
    yy, xx = torch.meshgrid(torch.arange(48.0) - 23.5, torch.arange(48.0) - 23.5, indexing="ij")
    w = image[:, 0]
    r = torch.hypot((w * xx).sum((1, 2)) / w.sum((1, 2)), (w * yy).sum((1, 2)) / w.sum((1, 2)))
    np.testing.assert_allclose(r.numpy(), 15.0, atol=0.05)

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, sky_noise="measured", g_neighbours=True)
    G, _, _ = build_networks(2, 3, 32, cfg)
    assert G.sky.neighbours
    # the tiny test field's stamps hold none: the measured neighbours of the constructed field stand in
    monkeypatch.setattr("galearn.gan.neighbours.measure_neighbours", lambda *a, **k: (got_counts, sources * [1, 1, 1, 1, 0.5, 0.5]))
    ws, ckpt = assert_resume_exact(tmp_path / "neighbours", cfg)
    recorded = json.loads((ws.gan / "config.json").read_text())["sky"]["neighbours"]
    assert recorded["sources"] == len(sources) and int(ckpt["G_ema"]["sky.neighbour_sources"]) == min(len(sources), 512)
    assert abs(recorded["per_stamp_mean"] - got_counts.mean()) < 1e-3
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match="g_neighbours needs a measured"):
        build_networks(2, 3, 32, dataclasses.replace(TINY, sky_noise="learnt", g_neighbours=True))


def test_pixel_level_sky_measures_read_a_seeded_subset_of_a_large_training_set():
    """The noise gain and the neighbours read at most MEASURED_STAMPS_MAX stamps: a seeded, sorted draw."""
    from galearn.gan.loop import MEASURED_STAMPS_MAX, _measured_subset

    stamps = np.arange(MEASURED_STAMPS_MAX + 500, dtype="f4")[:, None, None, None]
    a, b = _measured_subset(stamps, 3), _measured_subset(stamps, 3)
    assert len(a) == MEASURED_STAMPS_MAX and np.array_equal(a, b) and np.all(np.diff(a.ravel()) > 0)
    assert not np.array_equal(a, _measured_subset(stamps, 4))
    assert _measured_subset(stamps[:10], 3) is not None and len(_measured_subset(stamps[:10], 3)) == 10


def test_sky_floor_keeps_every_noiseless_pixel_at_or_above_its_stamps_sky(tmp_path, monkeypatch):
    """gan.g_sky_floor: the noiseless stamp handed to the sky noise has no pixel below its own outer-ring median
    (per stamp and band; without the option G's texture dips below it); it trains, resumes exactly, samples
    reproducibly, and needs a measured sky."""
    from galearn.gan.loop import build_networks
    from galearn.gan.template import ring_median

    def noiseless(G) -> torch.Tensor:
        seen = {}
        monkeypatch.setattr(G.sky, "forward", lambda h, *a, **k: seen.setdefault("h", h))
        G.eval()
        with torch.no_grad():
            G(torch.randn(8, G.z_dim, generator=torch.Generator().manual_seed(1)), torch.arange(8) % 2)
        return seen["h"]

    cfg = dataclasses.replace(TINY, sky_noise="measured", g_sky_floor=True)
    for floor in (False, True):
        torch.manual_seed(0)
        G, _, _ = build_networks(2, 3, 32, dataclasses.replace(cfg, g_sky_floor=floor))
        with torch.no_grad():  # a G with texture of both signs, as after training
            G.to_img.weight.normal_(0.0, 0.5)
        h = noiseless(G)
        below = (h < ring_median(h) - 1e-6).float().mean().item()
        assert (below == 0.0) if floor else (below > 0.1)
    cfg = dataclasses.replace(cfg, steps=4, checkpoint_every=2)
    ws, _ = assert_resume_exact(tmp_path / "floor", cfg)
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match="g_sky_floor needs a measured"):
        build_networks(2, 3, 32, dataclasses.replace(TINY, sky_noise="learnt", g_sky_floor=True))
