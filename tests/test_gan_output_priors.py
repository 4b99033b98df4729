"""Options of G's own output before the template and the sky noise: a fixed Gaussian blur (gan.g_blur, docs/gan-experiments.md
issue 14 round 6), a weight on its point-antisymmetric part (gan.g_asymmetry, round 7; within gan.g_asymmetry_radius,
round 31), FastGAN's skip-layer
excitation (gan.g_skip_excitation, round 8) a drawn light centroid (gan.g_drawn_centroid, round 38; its radii drawn
from the measured ones, gan.g_centroid_radii, round 40; reached by a lopsided move, gan.g_centroid_move, round 42) and a
drawn ellipticity (gan.g_drawn_ellipticity, round 39)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY, assert_resume_exact, assert_sample_reproducible, make_workspace  # noqa: E402


def test_gaussian_blur_is_scipys_gaussian_filter():
    from scipy.ndimage import gaussian_filter

    from galearn.gan.networks import gaussian_blur

    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 3, 32, 32)).astype(np.float32)
    for sigma in (0.6, 1.0, 1.7):
        got = gaussian_blur(torch.from_numpy(x), sigma).numpy()
        # torch's "reflect" padding is scipy's "mirror"; the same radius (ceil(3 sigma) taps each side).
        want = gaussian_filter(x, sigma=(0, 0, sigma, sigma), mode="mirror", truncate=np.ceil(3 * sigma) / sigma)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5)
    flat = torch.full((1, 2, 16, 16), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, 1.0), flat)


def _high_frequency_power(x: torch.Tensor) -> float:
    """Mean square of the discrete Laplacian inside the stamp (weights frequency f as f**4; no wrap-around edge)."""
    lap = x[..., 1:-1, 2:] + x[..., 1:-1, :-2] + x[..., 2:, 1:-1] + x[..., :-2, 1:-1] - 4 * x[..., 1:-1, 1:-1]
    return float((lap**2).mean())


def test_blur_smooths_gs_own_output_only():
    from galearn.gan.loop import build_networks

    cfg = dataclasses.replace(TINY, sky_noise="measured")
    G, _, _ = build_networks(2, 3, 32, cfg)
    Gb, _, _ = build_networks(2, 3, 32, dataclasses.replace(cfg, g_blur=1.0))
    Gb.load_state_dict(G.state_dict())  # the same weights: the blur adds none
    seen = {}
    for name, g in (("sharp", G), ("blurred", Gb)):
        g.sky.register_forward_hook(lambda m, args, out, name=name: seen.__setitem__(name, args[0].detach()))
        g.eval()
        torch.manual_seed(1)
        g(torch.randn(4, TINY.z_dim), torch.tensor([0, 1, 0, 1]))
    # G's noiseless stamps: the blurred one has a small fraction of the high-frequency power, the same mean light.
    assert _high_frequency_power(seen["blurred"]) < 0.2 * _high_frequency_power(seen["sharp"])
    torch.testing.assert_close(seen["blurred"].mean(dim=(2, 3)), seen["sharp"].mean(dim=(2, 3)), rtol=0, atol=0.02)


def _noiseless_stamps(**options) -> torch.Tensor:
    """G's noiseless stamps (what its sky-noise layer receives) for fixed weights, latents and classes."""
    from galearn.gan.loop import build_networks

    cfg = dataclasses.replace(TINY, sky_noise="measured")
    torch.manual_seed(0)
    G, _, _ = build_networks(2, 3, 32, dataclasses.replace(cfg, **options))
    seen = {}
    G.sky.register_forward_hook(lambda m, args, out: seen.__setitem__("x", args[0].detach()))
    G.eval()
    torch.manual_seed(1)
    G(torch.randn(4, TINY.z_dim), torch.tensor([0, 1, 0, 1]))
    return seen["x"]


def test_colour_blur_smooths_the_colour_of_gs_own_output_and_keeps_its_light():
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate

    sharp, smooth = _noiseless_stamps(), _noiseless_stamps(g_colour_blur=1.0)
    # TINY has no template: the noiseless stamp is G's own output. The same weights, the same light (band mean) ...
    torch.testing.assert_close(smooth.mean(dim=1), sharp.mean(dim=1), rtol=0, atol=1e-5)
    colour = lambda x: x - x.mean(dim=1, keepdim=True)  # noqa: E731
    # ... and a colour with a small fraction of its pixel-scale power (no band drawn a pixel apart from another)
    assert _high_frequency_power(colour(smooth)) < 0.2 * _high_frequency_power(colour(sharp))
    assert _high_frequency_power(smooth.mean(dim=1)) > 0.9 * _high_frequency_power(sharp.mean(dim=1))
    with pytest.raises(BadValueError, match="g_colour_blur"):
        _validate(dataclasses.replace(TINY, g_colour_blur=1.0, g_residual="luminance", g_template=True))


def test_asymmetry_weight_scales_only_the_point_antisymmetric_part():
    def parts(x):
        rotated = torch.flip(x, dims=(2, 3))  # 180 degrees about the stamp centre
        return 0.5 * (x + rotated), 0.5 * (x - rotated)

    free, half, none = (_noiseless_stamps(g_asymmetry=a) for a in (1.0, 0.5, 0.0))
    # TINY has no template: the noiseless stamp is G's own output.
    sym_free, anti_free = parts(free)
    assert float(anti_free.norm()) > 0.01 * float(free.norm()) > 0  # an untrained G is lopsided
    for got, weight in ((half, 0.5), (none, 0.0)):
        sym, anti = parts(got)
        torch.testing.assert_close(sym, sym_free, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(anti, weight * anti_free, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(none, torch.flip(none, dims=(2, 3)), rtol=1e-5, atol=1e-8)


def test_asymmetry_weights_per_band_scale_each_bands_antisymmetric_part(tmp_path):
    """``gan.g_asymmetry`` as a list: one weight per band (round 58), also within ``gan.g_asymmetry_radius``; a list
    of the wrong length is refused when training starts, naming the sample's bands."""
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.loop import _validate
    from galearn.gan.networks import asymmetry_weight_map, asymmetry_weights

    def parts(x):
        rotated = torch.flip(x, dims=(2, 3))
        return 0.5 * (x + rotated), 0.5 * (x - rotated)

    weights = (0.5, 0.1, 0.0)
    free, banded = _noiseless_stamps(g_asymmetry=1.0), _noiseless_stamps(g_asymmetry=weights)
    sym_free, anti_free = parts(free)
    sym, anti = parts(banded)
    torch.testing.assert_close(sym, sym_free, rtol=1e-5, atol=1e-8)
    for band, w in enumerate(weights):
        torch.testing.assert_close(anti[:, band], w * anti_free[:, band], rtol=1e-5, atol=1e-8)
    # Equal weights are the one number's prior, value for value.
    torch.testing.assert_close(_noiseless_stamps(g_asymmetry=(0.1,) * 3), _noiseless_stamps(g_asymmetry=0.1),
                               rtol=0, atol=0)
    # Within a radius: each band's own map.
    confined = _noiseless_stamps(g_asymmetry=weights, g_asymmetry_radius=0.4)
    for band, w in enumerate(weights):
        torch.testing.assert_close(parts(confined)[1][:, band],
                                   asymmetry_weight_map(32, w, 0.4)[0, 0] * anti_free[:, band], rtol=1e-5, atol=1e-7)
    assert asymmetry_weights(0.25, 3) == (0.25, 0.25, 0.25) and asymmetry_weights([0.3, 0.1], 2) == (0.3, 0.1)
    for bad in ([0.1, 1.5, 0.1], [0.1, True, 0.1], [], ["a"]):
        with pytest.raises(BadValueError, match="g_asymmetry"):
            _validate(dataclasses.replace(TINY, g_asymmetry=bad))
    ws = make_workspace(tmp_path)
    with pytest.raises(BadValueError, match=r"g_asymmetry.*list of 3.*sample\.h5 holds the bands"):
        run_train(ws, dataclasses.replace(TINY, g_asymmetry=(0.3, 0.1)), progress=False)


def test_asymmetry_radius_confines_the_prior_to_the_centre_of_the_stamp():
    """``gan.g_asymmetry_radius``: the antisymmetric part keeps g_asymmetry's weight near the centre and its own
    full value far out (neighbours), with the symmetric part untouched."""
    from galearn.errors import BadValueError
    from galearn.gan.loop import _validate
    from galearn.gan.networks import asymmetry_weight_map

    w = asymmetry_weight_map(32, 0.25, 0.4)[0, 0]
    torch.testing.assert_close(w, torch.flip(w, dims=(0, 1)))  # point-symmetric itself
    assert float(w[15:17, 15:17].max()) == 0.25 and float(w[0, 0]) == 1.0  # centre / corner (r = 1.37 half sides)
    assert float(w[16, 16 + 5]) == 0.25 and float(w[16, 31]) == 1.0  # r = 0.34 / 0.97 half sides
    mid = float(w[16, 16 + 8])  # r = 0.53: on the ramp
    assert 0.25 < mid < 1.0
    rows = w[16, 16:]  # from the centre outwards: never falls
    assert bool((rows[1:] >= rows[:-1]).all())

    def parts(x):
        rotated = torch.flip(x, dims=(2, 3))
        return 0.5 * (x + rotated), 0.5 * (x - rotated)

    free, confined = _noiseless_stamps(g_asymmetry=1.0), _noiseless_stamps(g_asymmetry=0.25, g_asymmetry_radius=0.4)
    sym_free, anti_free = parts(free)
    sym, anti = parts(confined)
    torch.testing.assert_close(sym, sym_free, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(anti, w * anti_free, rtol=1e-5, atol=1e-7)
    assert float(anti_free[..., 14:18, 14:18].abs().amax()) > 0  # the centre had antisymmetric light to scale
    for bad in ({"g_asymmetry": 1.0, "g_asymmetry_radius": 0.4}, {"g_asymmetry_radius": 3.0},
                {"g_asymmetry_radius": -0.1}, {"g_asymmetry_radius": "far"}):
        with pytest.raises(BadValueError, match="g_asymmetry_radius"):
            _validate(dataclasses.replace(TINY, **bad))


@pytest.mark.parametrize("name, value, bads", [("g_blur", 0.8, (-1.0, "wide", 9)),
                                               ("g_colour_blur", 1.0, (-1.0, "wide", 9, True)),
                                               ("g_asymmetry", 0.25, (-0.1, 1.5, True, "half")),
                                               ("g_asymmetry", (0.3, 0.1, 0.1), ((0.3, 1.5, 0.1), (0.3, None, 0.1))),
                                               ("g_asymmetry_radius", 0.4, (-0.1, 3.0, True, "far")),
                                               ("g_skip_excitation", True, ()), ("sky_scatter", True, ()),
                                               ("g_random_rotation", True, ()),
                                               ("g_drawn_centroid", True, ()),
                                               ("g_drawn_ellipticity", True, ()),
                                               ("g_upsample", "bilinear", ("cubic", 2)),
                                               ("g_template_trainable", False, ()),
                                               ("g_template_blur", 1.0, (-1.0, "wide", 9, True)),
                                               ("g_power_match", 2.0, (-1.0, "strong", True)),
                                               ("g_pixel_match", 2.0, (-1.0, "strong", True)),
                                               ("g_stamp_power_match", 2.0, (-1.0, "strong", True)),
                                               ("g_colour_power_match", 2.0, (-1.0, "strong", True)),
                                               ("g_profile_match", 2.0, (-1.0, "strong", True)),
                                               ("g_joint_match", 2.0, (-1.0, "strong", True)),
                                               ("g_mode_seeking", 1.0, (-1.0, "strong", True))])
def test_output_prior_resumes_exactly_samples_reproducibly_and_is_checked(tmp_path, name, value, bads):
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint, save_checkpoint
    from galearn.gan.loop import LEGACY_SETTINGS, _validate

    off = LEGACY_SETTINGS[name]
    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, **{name: value})
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert ckpt["config"][name] == value
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match=name):
        run_train(ws, dataclasses.replace(cfg, steps=6, **{name: off}), resume=True, progress=False)
    # A checkpoint from before the option (no key in its config) resumes with the option off.
    plain = dataclasses.replace(cfg, **{name: off})
    run_train(ws, plain, progress=False)
    old = load_checkpoint(ws.gan / "ckpt-000004.pt")
    old["config"] = {k: v for k, v in old["config"].items() if k != name}
    save_checkpoint(ws.gan / "ckpt-000004.pt", old)
    run_train(ws, dataclasses.replace(plain, steps=5), resume=True, progress=False)
    for bad in bads:
        with pytest.raises(BadValueError, match=name):
            _validate(dataclasses.replace(TINY, **{name: bad}))


@pytest.mark.parametrize("name, default, value, bad", [("g_blur", 0.0, 0.8, -1), ("g_asymmetry", 0.5, 0.25, 2),
                                                       ("g_asymmetry_radius", 0.0, 0.4, 3),
                                                       ("g_colour_blur", 0.0, 1.0, -1),
                                                       ("g_skip_excitation", False, True, "often"),
                                                       ("sky_scatter", True, False, "often"),
                                                       ("g_random_rotation", False, True, "often"),
                                                       ("g_drawn_centroid", False, True, "often"),
                                                       ("g_drawn_ellipticity", False, True, "often"),
                                                       ("g_centroid_radii", "normal", "measured", "uniform"),
                                                       ("g_centroid_move", "translate", "lopsided", "shift"),
                                                       ("g_ellipticity_draw", "normal", "measured", "skewed"),
                                                       ("g_ellipticity_trainable", True, False, "often"),
                                                       ("g_ellipticity_passes", 1, 3, 0),
                                                       ("g_ellipticity_fill", "sky", "reflection", "mirror"),
                                                       ("g_upsample", "nearest", "bilinear", "cubic"),
                                                       ("g_template_trainable", True, False, "often"),
                                                       ("g_template_blur", 0.0, 1.0, -1),
                                                       ("g_power_match", 0.0, 2.0, -1),
                                                       ("g_pixel_match", 0.0, 2.0, -1),
                                                       ("g_stamp_power_match", 0.0, 2.0, -1),
                                                       ("g_colour_power_match", 0.0, 2.0, -1),
                                                       ("g_profile_match", 0.0, 2.0, -1),
                                                       ("g_joint_match", 0.0, 2.0, -1),
                                                       ("g_mode_seeking", 0.0, 1.0, -1),
                                                       ("d_minibatch_std", 4, 0, "often"),
                                                       ("d_pixel_head", False, True, "often")])
def test_output_prior_is_a_configuration_key_with_its_range(name, default, value, bad):
    from galearn.config import RunConfig, load_config, parse_overrides
    from galearn.errors import BadValueError

    assert getattr(RunConfig().gan, name) == default  # g_blur off, g_asymmetry 0.5, no skip excitation, sky scatter on
    assert getattr(load_config(None, parse_overrides([f"gan.{name}={value}"])).gan, name) == value
    with pytest.raises(BadValueError, match=f"gan.{name}"):
        load_config(None, parse_overrides([f"gan.{name}={bad}"]))


def test_skip_excitation_gates_each_channel_of_the_high_resolution_map_from_the_low_one():
    from galearn.gan.networks import SkipExcitation

    torch.manual_seed(0)
    sle = SkipExcitation(8, 4)
    high, low = torch.randn(3, 4, 32, 32), torch.randn(3, 8, 8, 8)
    with torch.no_grad():
        gate = sle(high, low) / high
    assert gate.shape == (3, 4, 32, 32)
    assert float(gate.min()) > 0 and float(gate.max()) < 1  # a sigmoid
    torch.testing.assert_close(gate, gate[..., :1, :1].expand_as(gate))  # one weight per sample and channel
    assert float((gate[0, :, 0, 0] - gate[1, :, 0, 0]).abs().max()) > 1e-4  # from each sample's own low map


@pytest.mark.parametrize("stamp_size, gated", [(32, {32}), (64, {32, 64})])
def test_skip_excitation_is_the_plain_generator_when_every_gate_is_open(stamp_size, gated):
    from galearn.gan.loop import build_networks

    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, sky_noise="measured")
    G, _, _ = build_networks(2, 3, stamp_size, cfg)
    Gs, _, _ = build_networks(2, 3, stamp_size, dataclasses.replace(cfg, g_skip_excitation=True))
    assert G.skip_excitation is None
    assert {8 * 2 ** int(i) for i in Gs.skip_excitation} == gated  # outputs of 32 px and more
    missing, unexpected = Gs.load_state_dict(G.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("skip_excitation.") for k in missing)
    z, y = torch.randn(4, TINY.z_dim), torch.tensor([0, 1, 0, 1])
    G.eval(), Gs.eval()
    with torch.no_grad():
        for m in Gs.skip_excitation.values():  # sigmoid(40) == 1 in float32: every gate open
            m.out.weight.zero_()
            m.out.bias.fill_(40.0)
        gen = torch.Generator().manual_seed(1)
        want = G(z, y, torch.Generator().manual_seed(1))
        torch.testing.assert_close(Gs(z, y, gen), want)
        for m in Gs.skip_excitation.values():  # half open: a different image
            m.out.bias.zero_()
        assert not torch.allclose(Gs(z, y, torch.Generator().manual_seed(1)), want)


def test_random_rotation_keeps_the_light_turns_each_stamp_its_own_way_and_is_seeded():
    from galearn.gan.networks import rotate_stamps

    yy, xx = torch.meshgrid(torch.arange(32.0) - 15.5, torch.arange(32.0) - 15.5, indexing="ij")
    bar = torch.exp(-0.5 * ((xx / 5.0) ** 2 + (yy / 1.5) ** 2)).expand(64, 1, 32, 32).contiguous()  # horizontal
    a = rotate_stamps(bar, torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, rotate_stamps(bar, torch.Generator().manual_seed(0)), rtol=0, atol=0)
    torch.testing.assert_close(a.sum(dim=(1, 2, 3)), bar.sum(dim=(1, 2, 3)), rtol=0.02, atol=0)
    w = a[:, 0]
    qxx, qyy, qxy = (w * xx * xx).sum((1, 2)), (w * yy * yy).sum((1, 2)), (w * xx * yy).sum((1, 2))
    angle = 0.5 * torch.atan2(2 * qxy, qxx - qyy)  # position angle of each rotated bar, -pi/2..pi/2
    hist = torch.histc(angle, bins=4, min=-torch.pi / 2, max=torch.pi / 2)
    assert hist.min() >= 8, hist  # spread over all orientations, not one


def test_bilinear_upsampling_gives_g_less_pixel_scale_power():
    """``gan.g_upsample = bilinear``: the same weights paint smoother stamps (no 2x2 blocks to paint over)."""
    from galearn.gan.networks import Generator

    torch.manual_seed(0)
    nearest = Generator(2, 3, 32, z_dim=8, channels=8)
    bilinear = Generator(2, 3, 32, z_dim=8, channels=8, upsample="bilinear")
    bilinear.load_state_dict(nearest.state_dict())
    z, y = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 2
    power = []
    for G in (nearest, bilinear):
        G.eval()
        with torch.no_grad():
            G.out_noise.weight.zero_()  # the noiseless stamp
            x = G(z, y, torch.Generator().manual_seed(2))
        power.append(float((x[..., 1:, :] - x[..., :-1, :]).square().mean() / x.var()))  # pixel-to-pixel differences
    assert power[1] < 0.8 * power[0]


def test_a_frozen_template_stays_the_class_median_and_is_not_trained(tmp_path):
    """``gan.g_template_trainable = false``: the template keeps its start (the class median) through training."""
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint
    from galearn.gan.loop import build_networks

    for trainable in (True, False):
        cfg = dataclasses.replace(TINY, steps=3, checkpoint_every=1, g_template=True, g_template_trainable=trainable)
        ws = make_workspace(tmp_path / str(trainable), n=40)
        run_train(ws, cfg, progress=False)
        first, last = (load_checkpoint(ws.gan / f"ckpt-00000{k}.pt") for k in (1, 3))
        start = first["G"]["template"]
        assert float(start.abs().amax()) > 0.1  # set from the real stamps, not the zeros it is built with
        moved = max(float((last[key]["template"] - first[key]["template"]).abs().amax()) for key in ("G", "G_ema"))
        assert (moved > 1e-5) == trainable
        G = build_networks(2, 3, 32, dataclasses.replace(cfg, sky_noise="measured"), with_D=False)[0]
        assert any(p is G.template for p in G.parameters()) == trainable  # frozen: never in G's optimiser


def test_a_smoothed_template_keeps_the_median_stamp_and_learns_no_pixel_scale_texture(tmp_path):
    """``gan.g_template_blur``: the class templates G adds start as the unsmoothed class medians, and their learnt
    change from it has the Gaussian's low-pass spectrum (the raw parameter's pixel-scale part never reaches G's output)."""
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint
    from galearn.gan.loop import _validate, build_networks

    cfg = dataclasses.replace(TINY, steps=3, checkpoint_every=1, g_template=True, g_template_blur=1.5, lr_g=0.05)
    ws = make_workspace(tmp_path, n=40)
    run_train(ws, cfg, progress=False)
    G = build_networks(2, 3, 32, dataclasses.replace(cfg, sky_noise="measured"), with_D=False)[0]
    first, last = (load_checkpoint(ws.gan / f"ckpt-00000{k}.pt") for k in (1, 3))
    start = last["G"]["template_start"]
    assert float(start.abs().amax()) > 0.1  # the class medians, set from the real stamps
    torch.testing.assert_close(first["G"]["template_start"], start, rtol=0, atol=0)  # a buffer: never trained
    G.load_state_dict(last["G"], strict=False)
    change = (G.class_templates() - start).detach()
    raw = (G.template - start).detach()
    assert float(raw.abs().amax()) > 1e-4  # the template learnt

    def roughness(x):  # pixel-to-pixel differences over the spread
        return float((x[..., 1:, :] - x[..., :-1, :]).square().mean() / x.var())

    assert roughness(change) < 0.5 * roughness(raw)
    G.template.data.copy_(start)
    torch.testing.assert_close(G.class_templates(), start, rtol=0, atol=0)  # the median itself is not smoothed
    with pytest.raises(BadValueError, match="g_template_trainable"):
        _validate(dataclasses.replace(TINY, g_template_blur=1.0, g_template_trainable=False))


def _blobs(offsets: np.ndarray, size: int = 64, sky: float = 0.05) -> np.ndarray:
    """Stretched stamps (N, 3, size, size): an elongated Gaussian galaxy at ``offsets`` (N, 2) pixels (x, y) from the centre."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    dx, dy = xx[None] - offsets[:, 0, None, None], yy[None] - offsets[:, 1, None, None]
    light = np.exp(-0.5 * ((dx / 3.0) ** 2 + (dy / 2.0) ** 2))
    return np.clip(sky + 0.8 * light[:, None] * np.array([0.6, 0.8, 1.0])[None, :, None, None], 0, 1).astype("f4")


def _set_twice(module: type, stats: dict) -> torch.nn.Module:
    """A drawn module (3 classes, z_dim 16) set from ``stats`` at seed 5, after checking that one seed sets one draw."""
    first, again = module(3, 16), module(3, 16)
    first.set(stats, seed=5)
    again.set(stats, seed=5)
    assert torch.equal(first.weight, again.weight)
    return first


def test_drawn_centroid_measures_the_real_offsets_and_moves_each_stamp_to_its_draw():
    """gan.g_drawn_centroid: the torch centroid is the morphometry one; the class means and the within-class spread of
    the real offsets are recovered; a stamp is moved, shape unchanged, so that its centroid is the drawn offset;
    gradient reaches the drawn offset's weights and G's own output."""
    from galearn.gan.template import DrawnCentroid, measure_centroids, torch_light_centroids
    from galearn.morphometry import light_centroids, morphometry_features, morphometry_names

    rng = np.random.default_rng(3)
    y = np.repeat([0, 1], 200)
    offsets = rng.normal(0.0, [0.5, 0.8], size=(400, 2)) + np.where(y[:, None] == 0, [1.0, -0.5], [-1.5, 0.0])
    stamps = _blobs(offsets)
    measured = light_centroids(stamps)
    np.testing.assert_allclose(measured, offsets, atol=0.05)
    names = morphometry_names(3)
    np.testing.assert_allclose(np.hypot(*measured.T), morphometry_features(stamps)[:, names.index("offset")], rtol=1e-5)
    np.testing.assert_allclose(torch_light_centroids(torch.from_numpy(stamps) * 2 - 1).numpy(), measured, atol=1e-4)
    stats = measure_centroids(stamps, y, 3)
    np.testing.assert_allclose(stats["mean"][:2], [[1.0, -0.5], [-1.5, 0.0]], atol=0.12)
    np.testing.assert_allclose(stats["mean"][2], offsets.mean(0), atol=1e-2)  # no stamps: the pooled mean
    np.testing.assert_allclose(stats["std"], [0.5, 0.8], rtol=0.12)

    move = _set_twice(DrawnCentroid, stats)
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    drawn = (z @ move.weight.t()).detach().numpy()
    np.testing.assert_allclose(drawn.std(0), stats["std"], rtol=0.05)
    # Noiseless stamps wherever G put them land at the draw: the same galaxy, moved.
    x = torch.from_numpy(_blobs(np.array([[2.0, 1.0], [-0.3, 0.4]]))) * 2 - 1
    x.requires_grad_(True)
    zz, yy = z[:2], torch.tensor([0, 1])
    out = move(x, zz, yy)
    want = (zz @ move.weight.t() + move.bias[yy]).detach().numpy()
    np.testing.assert_allclose(torch_light_centroids(out.detach()).numpy(), want, atol=0.1)
    np.testing.assert_allclose(out.detach().sum(dim=(2, 3)).numpy(), x.detach().sum(dim=(2, 3)).numpy(), rtol=0.02)
    out.square().sum().backward()
    assert move.weight.grad.abs().sum() > 0 and move.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_measured_centroid_radii_give_the_draw_the_real_offsets_heavy_tails():
    """gan.g_centroid_radii = "measured": the real offsets' distances from their class mean (in units of the spread) are
    measured as quantiles; the drawn offsets keep their Gaussian directions and class means but take that distance
    distribution, heavy tails included, where the normal draw has a Rayleigh's; a stamp still lands at its draw and
    gradient still reaches the weights."""
    from scipy import stats as st

    from galearn.gan.template import N_RADIUS_QUANTILES, DrawnCentroid, measure_centroids, torch_light_centroids

    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 300)
    means = np.where(y[:, None] == 0, [1.0, -0.5], [-1.5, 0.0])
    offsets = rng.standard_t(3, size=(600, 2)) * [0.4, 0.6] + means  # heavy-tailed, as real offsets are
    stats = measure_centroids(_blobs(offsets), y, 3, radii=True)
    assert "radius_quantiles" not in measure_centroids(_blobs(offsets[:20]), y[:20], 3)
    radii = np.hypot(*((offsets - means) / stats["std"]).T)
    want = np.quantile(radii, np.linspace(0, 1, N_RADIUS_QUANTILES))
    np.testing.assert_allclose(stats["radius_quantiles"][1:-1], want[1:-1], atol=0.06)

    draw, normal = DrawnCentroid(3, 16, radii="measured"), DrawnCentroid(3, 16)
    draw.set(stats, seed=5)
    normal.set(stats, seed=5)
    assert torch.equal(draw.weight, normal.weight) and torch.equal(draw.radius_quantiles, torch.tensor(stats["radius_quantiles"], dtype=torch.float32))
    z = torch.randn(20000, 16, generator=torch.Generator().manual_seed(0))
    y0 = torch.zeros(len(z), dtype=torch.long)
    with torch.no_grad():
        got, plain = draw.offsets(z, y0) - draw.bias[0], normal.offsets(z, y0) - normal.bias[0]
    inverse = np.linalg.inv((draw.weight @ draw.weight.t()).detach().numpy())  # radii about the draw's covariance
    r_got, r_plain = (np.sqrt(np.einsum("ni,ij,nj->n", d.numpy(), inverse, d.numpy())) for d in (got, plain))
    probs = [0.1, 0.5, 0.9, 0.99]
    measured = np.interp(probs, np.linspace(0, 1, N_RADIUS_QUANTILES), stats["radius_quantiles"])
    np.testing.assert_allclose(np.quantile(r_got, probs), measured, rtol=0.05)
    assert np.quantile(r_got, 0.99) > 1.3 * np.quantile(r_plain, 0.99)  # the heavy tail
    assert st.kstest(r_plain, "rayleigh").pvalue > 1e-3  # the normal draw: Rayleigh radii
    assert st.kstest(r_got, "rayleigh").pvalue < 1e-6  # the measured draw: not
    cos = (got * plain).sum(1) / (got.norm(dim=1) * plain.norm(dim=1))
    assert float(cos.min()) > 0.9999  # same directions, other distances
    with pytest.raises(ValueError, match="radii"):
        DrawnCentroid(3, 16, radii="uniform")
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):  # the radius in float32 under bf16 autocast
        low = draw.offsets(z[:256], y0[:256]).float() - draw.bias[0]
    np.testing.assert_allclose(low.numpy(), got[:256].numpy(), rtol=0.03, atol=0.03 * max(stats["std"]))  # bf16 W z

    x = (torch.from_numpy(_blobs(np.array([[2.0, 1.0], [-0.3, 0.4]]))) * 2 - 1).requires_grad_(True)
    zz, yy = z[:2], torch.tensor([0, 1])
    out = draw(x, zz, yy)
    np.testing.assert_allclose(torch_light_centroids(out.detach()).numpy(), draw.offsets(zz, yy).detach().numpy(), atol=0.1)
    out.square().sum().backward()
    assert draw.weight.grad.abs().sum() > 0 and draw.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def _disk_with_core(n: int, size: int = 64) -> np.ndarray:
    """``n`` copies of a centred stretched stamp (3 bands): an inclined exponential disk (scale 5 px) and a compact core."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    r = np.hypot(xx, yy / 0.8)
    light = 0.7 * np.exp(-r / 5.0) + 0.3 * np.exp(-r / 1.5)
    one = np.clip(0.05 + light[None] * np.array([0.6, 0.8, 1.0])[:, None, None], 0, 1)
    return np.repeat(one[None], n, axis=0).astype("f4")


def test_lopsided_centroid_move_keeps_the_core_and_shifts_the_outskirts():
    """gan.g_centroid_move = "lopsided": the stamp's peak stays at the centre while its light centroid lands near the
    draw; at the offset it makes, the light is less asymmetric about the centre than a translated stamp's (which moves
    the peak); gradient reaches the draw's weights and G's output."""
    from galearn.gan.template import DrawnCentroid, torch_light_centroids
    from galearn.morphometry import morphometry_features, morphometry_names

    targets = torch.tensor([[0.8, 0.0], [1.5, -1.0], [-2.0, 1.5]])
    x = (torch.from_numpy(_disk_with_core(len(targets))) * 2 - 1).requires_grad_(True)
    z, y = torch.zeros(len(targets), 4), torch.arange(len(targets))
    moved = {}
    for move in ("translate", "lopsided"):
        m = DrawnCentroid(len(targets), 4, move=move)
        with torch.no_grad():
            m.bias.copy_(targets)
        out = m(x, z, y)
        moved[move] = ((out.detach() + 1) / 2).numpy()
        if move == "lopsided":
            np.testing.assert_allclose(torch_light_centroids(out.detach()).numpy(), targets.numpy(), atol=0.2)
            (out.square().sum() + (out * torch.linspace(-1, 1, 64)).sum()).backward()
            assert m.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0
    names = morphometry_names(3)
    size = x.shape[-1]
    for move, stamps in moved.items():
        peak = np.array([np.unravel_index(np.argmax(s.sum(0)), (size, size)) for s in stamps]) - (size - 1) / 2.0
        features = morphometry_features(stamps)
        per_offset = features[:, names.index("asymmetry_b1")] / features[:, names.index("offset")]
        moved[move] = (np.hypot(*peak.T), per_offset)
    assert moved["lopsided"][0].max() < 1.0 < moved["translate"][0].max()  # the core stays; a translation moves it
    assert np.all(moved["lopsided"][1] < moved["translate"][1])
    with pytest.raises(ValueError, match="move"):
        DrawnCentroid(3, 4, move="shift")


@pytest.mark.parametrize("name, value, legacy, needs", [("g_centroid_radii", "measured", "normal", "g_drawn_centroid"),
                                                          ("g_centroid_move", "lopsided", "translate", "g_drawn_centroid"),
                                                          ("g_ellipticity_draw", "measured", "normal", "g_drawn_ellipticity"),
                                                          ("g_ellipticity_trainable", False, True, "g_drawn_ellipticity"),
                                                          ("g_ellipticity_passes", 3, 1, "g_drawn_ellipticity"),
                                                          ("g_ellipticity_fill", "reflection", "sky", "g_drawn_ellipticity")])
def test_drawn_shape_settings_resume_exactly_and_need_their_draw(tmp_path, name, value, legacy, needs):
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint, save_checkpoint
    from galearn.gan.loop import _validate

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, **{needs: True, name: value})
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert ckpt["config"][name] == value
    buffer = {"g_centroid_radii": "centroid.radius_quantiles", "g_ellipticity_draw": "ellipticity.deviation_quantiles"}
    if name in buffer:
        quantiles = ckpt["G"][buffer[name]]
        assert torch.all(quantiles[..., -1] > quantiles[..., 0])  # measured on the training stamps, kept in the checkpoint
    if name == "g_ellipticity_trainable":  # frozen: after 4 steps still the real stamps' class means and spread
        stats = json.loads((ws.gan / "config.json").read_text())["ellipticity_stats"]
        for net in ("G", "G_ema"):
            np.testing.assert_allclose(ckpt[net]["ellipticity.bias"].numpy(), stats["mean"], rtol=1e-6)
            assert float(ckpt[net]["ellipticity.weight"].norm()) == pytest.approx(stats["std"], rel=1e-5)
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match=name):
        run_train(ws, dataclasses.replace(cfg, steps=6, **{name: legacy}), resume=True, progress=False)
    # A drawn-centroid checkpoint from before the option resumes with the option's first value.
    plain = dataclasses.replace(cfg, **{name: legacy})
    run_train(ws, plain, progress=False)
    old = load_checkpoint(ws.gan / "ckpt-000004.pt")
    old["config"] = {k: v for k, v in old["config"].items() if k != name}
    save_checkpoint(ws.gan / "ckpt-000004.pt", old)
    run_train(ws, dataclasses.replace(plain, steps=5), resume=True, progress=False)
    for bad in ({name: "uniform"}, {name: 2}, {name: value}):  # the last: without its drawn centroid / ellipticity
        with pytest.raises(BadValueError, match=name):
            _validate(dataclasses.replace(TINY, **bad))


def _ellipses(major: np.ndarray, minor: np.ndarray, angle: np.ndarray, offsets: np.ndarray, size: int = 64) -> np.ndarray:
    """Stretched stamps (N, 3, size, size): Gaussian galaxies of axes ``major`` x ``minor`` (pixels, sigma) with the major
    axis at ``angle`` (radians, from +x towards +y), at ``offsets`` (N, 2) pixels from the centre, on a sky of 0.05."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    dx, dy = xx[None] - offsets[:, 0, None, None], yy[None] - offsets[:, 1, None, None]
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = dx * c + dy * s, dy * c - dx * s
    light = np.exp(-0.5 * ((u / major[:, None, None]) ** 2 + (v / minor[:, None, None]) ** 2))
    return np.clip(0.05 + 0.8 * light[:, None] * np.array([0.6, 0.8, 1.0])[None, :, None, None], 0, 1).astype("f4")


def test_drawn_ellipticity_measures_the_real_shapes_and_stretches_each_stamp_to_its_draw():
    """gan.g_drawn_ellipticity: the torch moments are the morphometry ones; the class means and the within-class spread
    of atanh(ellipticity) are recovered; a stamp is stretched along its own major axis and turned about its centroid,
    flux kept, so that its ellipticity is the drawn one and its major axis at the seeded angle; gradient reaches the
    draw's weights and G's output."""
    from galearn.gan.template import DrawnEllipticity, measure_ellipticities, torch_light_moments
    from galearn.morphometry import light_centroids, morphometry_features, morphometry_names, shape_moments

    rng = np.random.default_rng(4)
    y = np.repeat([0, 1], 150)
    ratio = np.exp(np.abs(rng.normal(np.where(y == 0, 0.15, 0.6), 0.1)))  # axis ratios: rounder class 0, flatter class 1
    angle = rng.uniform(0.0, np.pi, len(y))
    stamps = _ellipses(2.5 * np.sqrt(ratio), 2.5 / np.sqrt(ratio), angle, rng.normal(0.0, 1.0, (len(y), 2)))
    ell, pa = shape_moments(stamps)
    names = morphometry_names(3)
    np.testing.assert_allclose(ell, morphometry_features(stamps)[:, names.index("ellipticity")], rtol=1e-5)
    mx, my, qxx, qyy, qxy = (t.numpy() for t in torch_light_moments(torch.from_numpy(stamps) * 2 - 1))
    np.testing.assert_allclose(np.hypot(qxx - qyy, 2 * qxy) / (qxx + qyy), ell, atol=2e-3)
    np.testing.assert_allclose(np.stack([mx, my], 1), light_centroids(stamps), atol=1e-4)
    stats = measure_ellipticities(stamps, y, 3)
    u = np.arctanh(ell)
    np.testing.assert_allclose(stats["mean"][:2], [u[y == 0].mean(), u[y == 1].mean()], rtol=1e-6)
    assert stats["mean"][0] < stats["mean"][1] - 0.3  # the flatter class is recovered as flatter
    assert stats["mean"][2] == pytest.approx(u.mean())  # no stamps: the pooled mean
    assert stats["std"] == pytest.approx(np.concatenate([u[y == k] - u[y == k].mean() for k in (0, 1)]).std())

    draw = _set_twice(DrawnEllipticity, stats)
    z = torch.randn(2000, 16, generator=torch.Generator().manual_seed(0))
    assert float((z @ draw.weight).detach().std()) == pytest.approx(stats["std"], rel=0.05)
    # Round, flat and tilted noiseless stamps wherever G put them leave with the drawn ellipticity, same place and angle.
    x = torch.from_numpy(_ellipses(np.array([2.5, 4.0, 3.0, 2.6]), np.array([2.5, 1.6, 2.4, 2.0]),
                                   np.array([0.0, 0.4, 2.0, 1.2]), np.array([[0.0, 0.0], [1.5, -1.0], [-2.0, 0.5], [0.5, 0.5]])))
    x = (x * 2 - 1).requires_grad_(True)
    zz, yy = z[:4], torch.tensor([0, 1, 1, 0])
    out = draw(x, zz, yy, torch.Generator().manual_seed(7))
    got, got_pa = shape_moments(((out.detach() + 1) / 2).numpy())
    drawn = (zz @ draw.weight + draw.bias[yy]).detach().numpy()
    np.testing.assert_allclose(got, np.tanh(np.abs(drawn)), atol=0.03)
    # The major axis at the angle drawn from the generator (a negative draw has made the minor axis the major one).
    angle = np.degrees(2 * np.pi * torch.rand(4, generator=torch.Generator().manual_seed(7)).numpy())
    miss = got_pa - angle - np.where(drawn < 0, 90.0, 0.0)
    assert np.all(np.abs((miss + 90.0) % 180.0 - 90.0) < 3.0)
    assert torch.equal(out, draw(x, zz, yy, torch.Generator().manual_seed(7)))
    np.testing.assert_allclose(torch_light_moments(out.detach())[0].numpy(), torch_light_moments(x.detach())[0].numpy(), atol=0.05)
    np.testing.assert_allclose(out.detach().sum(dim=(2, 3)).numpy(), x.detach().sum(dim=(2, 3)).numpy(), rtol=0.02)
    out.square().sum().backward()
    assert draw.weight.grad.abs().sum() > 0 and draw.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0


def test_measured_ellipticity_draw_gives_the_real_skewed_shapes():
    """gan.g_ellipticity_draw = "measured": the real atanh(ellipticity)'s deviations from their class mean (in units of
    the pooled spread) are measured as quantiles per class; the drawn values keep the Gaussian draw's order but take
    each class's own skewed distribution and spread (more nearly round galaxies than a folded Gaussian of the same mean
    and spread makes); a stamp still leaves with its drawn ellipticity, and gradient still reaches the weights."""
    from scipy.stats import spearmanr

    from galearn.gan.template import N_RADIUS_QUANTILES, DrawnEllipticity, measure_ellipticities
    from galearn.morphometry import shape_moments

    rng = np.random.default_rng(6)
    y = np.repeat([0, 1], 300)
    u_true = rng.gamma(1.5, np.where(y == 0, 0.1, 0.25), len(y)) + np.where(y == 0, 0.0, 0.2)  # atanh(e): skewed toward
    # round, as real shapes, and narrower in the rounder class
    ratio = np.exp(u_true)
    stamps = _ellipses(2.5 * np.sqrt(ratio), 2.5 / np.sqrt(ratio), rng.uniform(0.0, np.pi, len(y)), np.zeros((len(y), 2)))
    stats = measure_ellipticities(stamps, y, 3, quantiles=True)
    assert "deviation_quantiles" not in measure_ellipticities(stamps, y, 3)
    u = np.arctanh(shape_moments(stamps)[0])
    scaled = (u - np.asarray(stats["mean"])[y]) / stats["std"]
    probs = np.linspace(0, 1, N_RADIUS_QUANTILES)
    want = [np.quantile(scaled[y == 0], probs), np.quantile(scaled[y == 1], probs), np.quantile(scaled, probs)]
    np.testing.assert_allclose(stats["deviation_quantiles"], want)  # class 2 has no stamps: every stamp's

    draw, normal = DrawnEllipticity(3, 16, draw="measured"), DrawnEllipticity(3, 16)
    draw.set(stats, seed=5)
    normal.set(stats, seed=5)
    assert torch.equal(draw.weight, normal.weight) and torch.equal(draw.bias, normal.bias)
    z = torch.randn(20000, 16, generator=torch.Generator().manual_seed(0))
    levels = [0.1, 0.25, 0.5, 0.75, 0.9]
    for k in (0, 1):  # at the measured w and b each class's draw is its real distribution
        yk = torch.full((len(z),), k, dtype=torch.long)
        with torch.no_grad():
            got, plain = draw.targets(z, yk).numpy(), normal.targets(z, yk).numpy()
        real = u[y == k]
        np.testing.assert_allclose(np.quantile(got, levels), np.quantile(real, levels), atol=0.03)
        assert abs(np.median(np.tanh(np.abs(got))) - np.median(np.tanh(real))) < 0.02
        assert spearmanr(got, plain)[0] > 0.999  # the same order: the draw keeps which z is the most elongated
        if k == 0:  # the narrow round class: a Gaussian of the pooled spread, folded at 0, makes it too elongated
            assert np.median(np.tanh(np.abs(plain))) > np.median(np.tanh(real)) + 0.03
    y0 = torch.zeros(len(z), dtype=torch.long)
    with torch.no_grad():
        got = draw.targets(z, y0).numpy()
    with pytest.raises(ValueError, match="draw"):
        DrawnEllipticity(3, 16, draw="skewed")
    frozen = DrawnEllipticity(3, 16, draw="measured", trainable=False)  # gan.g_ellipticity_trainable = false
    frozen.set(stats, seed=5)
    assert not list(frozen.parameters()) and torch.equal(frozen.weight, draw.weight.detach())
    with torch.no_grad():
        np.testing.assert_array_equal(frozen.targets(z[:64], y0[:64]).numpy(), got[:64])

    x = torch.from_numpy(_ellipses(np.array([2.5, 4.0]), np.array([2.5, 1.6]), np.array([0.0, 0.4]), np.zeros((2, 2))))
    x = (x * 2 - 1).requires_grad_(True)
    zz, yy = z[:2], torch.tensor([0, 1])
    out = draw(x, zz, yy, torch.Generator().manual_seed(7))
    got2, _ = shape_moments(((out.detach() + 1) / 2).numpy())
    np.testing.assert_allclose(got2, np.tanh(np.abs(draw.targets(zz, yy).detach().numpy())), atol=0.03)
    out.square().sum().backward()
    assert draw.weight.grad.abs().sum() > 0 and draw.bias.grad.abs().sum() > 0 and x.grad.abs().sum() > 0



def test_later_ellipticity_passes_stretch_what_the_first_left_short():
    """gan.g_ellipticity_passes: the moments inside a quarter side of a large elongated galaxy do not follow one
    stretch exactly (its light crosses the aperture), so one pass leaves it short of the drawn ellipticity; measuring
    the stretched stamp again and stretching the rest brings it there, in one resampling, with the gradient kept."""
    from galearn.gan.template import DrawnEllipticity
    from galearn.morphometry import shape_moments

    n = 6
    x = torch.from_numpy(_ellipses(np.array([7.0, 8.0, 9.0, 6.0, 7.0, 5.0]), np.array([3.5, 3.0, 4.0, 2.0, 5.0, 2.5]),
                                   np.linspace(0.0, 2.0, n), np.zeros((n, 2)))) * 2 - 1
    z, y = torch.randn(n, 8, generator=torch.Generator().manual_seed(1)), torch.zeros(n, dtype=torch.long)
    errors, outputs = {}, {}
    for passes in (1, 2, 3):
        draw = DrawnEllipticity(1, 8, passes=passes)
        draw.set({"mean": [0.15], "std": 0.1}, seed=0)  # nearly round targets for these elongated galaxies
        xin = x.clone().requires_grad_(True)
        out = draw(xin, z, y, torch.Generator().manual_seed(2))
        got = shape_moments(((out.detach() + 1) / 2).numpy())[0]
        errors[passes] = np.abs(got - np.tanh(np.abs(draw.targets(z, y).detach().numpy())))
        outputs[passes] = out.detach()
        out.square().sum().backward()
        assert draw.weight.grad.abs().sum() > 0 and draw.bias.grad.abs().sum() > 0 and xin.grad.abs().sum() > 0
        sky = outputs[passes][:, :, :2, :2]  # one resampling: the empty corners keep the sky, the flux is kept
        np.testing.assert_allclose(sky.numpy(), x[:, :, :2, :2].numpy(), atol=1e-3)
    assert errors[1].max() > 0.1 and errors[3].max() < 0.02 and errors[2].max() < errors[1].max()
    np.testing.assert_allclose(outputs[3].sum(dim=(1, 2, 3)).numpy(), x.sum(dim=(1, 2, 3)).numpy(), rtol=0.02)
    with pytest.raises(ValueError, match="passes"):
        DrawnEllipticity(1, 8, passes=0)


def test_reflection_fill_continues_the_edge_where_the_sky_fill_steps():
    """gan.g_ellipticity_fill: a turned stamp reads beyond its cut-out in the corners. Filled with the ring median,
    a stamp whose edge differs from that median (a sky gradient here, G's uneven edge in training) shows a step, the
    rotated box; mirrored at the edge, the fill continues the stamp, no larger a step than its own gradient."""
    from galearn.gan.template import DrawnEllipticity

    n, size = 4, 48
    ramp = torch.linspace(-0.6, 0.6, size)
    x = (ramp[None, None, None, :] + 0.5 * ramp[None, None, :, None]).expand(n, 3, size, size).clone()
    z, y = torch.randn(n, 8, generator=torch.Generator().manual_seed(3)), torch.zeros(n, dtype=torch.long)
    own = max(float(x.diff(dim=-1).abs().max()), float(x.diff(dim=-2).abs().max()))
    steps = {}
    for fill in ("sky", "reflection"):
        draw = DrawnEllipticity(1, 8, fill=fill)
        draw.set({"mean": [0.3], "std": 0.1}, seed=0)
        out = draw(x, z, y, torch.Generator().manual_seed(4)).detach()
        steps[fill] = max(float(out.diff(dim=-1).abs().max()), float(out.diff(dim=-2).abs().max()))
    assert steps["sky"] > 8 * own  # the box's edge
    assert steps["reflection"] < 3 * own  # stretched by at most e^0.75, turned: no step
    with pytest.raises(ValueError, match="fill"):
        DrawnEllipticity(1, 8, fill="mirror")
