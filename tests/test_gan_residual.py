"""G's residual restricted to the class template's colours (gan.g_residual = "luminance") and the noiseless
sky level pinned to the template's (gan.g_pin_sky): docs/gan-experiments.md, issue 14 round 4."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY, assert_resume_exact  # noqa: E402
from test_gan_sky import _real_like  # noqa: E402


def _generator(**kw):
    from galearn.gan.loop import build_networks, init_output_bias

    cfg = dataclasses.replace(TINY, g_template=True, **{"sky_noise": "measured", **kw})
    G, _, G_ema = build_networks(2, 3, 32, cfg)
    stamps, _ = _real_like(n=40)
    y = np.arange(40) % 2
    init_output_bias(G, G_ema, stamps, y)
    return G, stamps, y


def test_template_colours_are_the_templates_light_per_band():
    from galearn.gan.template import template_colours

    size = 32
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    blob = np.exp(-(xx**2 + yy**2) / 8.0)
    t = np.stack([0.1 + blob[None] * np.array([0.1, 0.3, 0.5])[:, None, None],  # sky 0.1 per band + a coloured source
                  np.full((3, size, size), 0.2)])  # no light above the sky: equal weights
    c = template_colours(t)
    np.testing.assert_allclose(c[0], np.array([0.1, 0.3, 0.5]) / 0.3, rtol=1e-3)
    np.testing.assert_allclose(c[1], 1.0)


def test_luminance_residual_keeps_the_band_ratios_of_the_class_colour():
    G, stamps, y = _generator(g_residual="luminance", sky_noise="learnt")
    assert G.to_img.out_channels == 1 and G.colour.shape == (2, 3)
    # The colours are the class templates' (light above the ring median, mean 1 over bands).
    from galearn.gan.template import template_colours

    np.testing.assert_allclose(G.colour.numpy(), template_colours((G.template.detach().numpy() + 1) / 2), rtol=1e-6)
    with torch.no_grad():
        G.out_noise.weight.zero_()  # no pixel noise: the output is template + residual exactly (before the clip)
        G.template.zero_()  # a zero template, so nothing is clipped and out = residual
        G.colour.copy_(torch.tensor([[0.5, 1.0, 1.5], [1.2, 1.0, 0.8]]))
    G.eval()
    yy = torch.tensor([0, 1, 1, 0])
    out = G(torch.randn(4, TINY.z_dim), yy).detach()
    assert float(out.abs().max()) > 1e-3
    inside = out.abs().amax(dim=1) < 0.99  # pixels clipped in no band
    for i, k in enumerate(yy.tolist()):
        colour = G.colour[k]
        lum = out[i] / colour[:, None, None]  # the same map in every band
        torch.testing.assert_close(lum[0][inside[i]], lum[1][inside[i]], rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(lum[2][inside[i]], lum[1][inside[i]], rtol=1e-4, atol=1e-6)


def test_pinned_sky_keeps_the_ring_median_at_the_templates():
    from galearn.gan.template import ring_median

    from galearn.gan.sky import measure_sky, stretched_level

    G, stamps, _ = _generator(g_pin_sky=True, g_template_warp=True, sky_noise="measured")
    _, stretch = _real_like(n=40)
    sky = measure_sky(stamps, stretch)
    # The level in stretched units: asinh(level / a) / asinh(max / a) of the fitted linear level.
    np.testing.assert_allclose(stretched_level(sky), np.arcsinh(np.array(sky["level"]) / np.array(sky["softening"]))
                               / np.array(sky["norm"]), rtol=1e-5)
    with torch.no_grad():
        G.sky_level.copy_(torch.from_numpy(2 * stretched_level(sky) - 1))
    noiseless = []
    G.sky.register_forward_hook(lambda m, args, out: noiseless.append(args[0].detach()))
    with torch.no_grad():
        G.to_img.bias.add_(0.4)  # G's own output raises the sky everywhere ...
        G.warp.bias[:, 1] = 0.8  # ... and the drawn template is scaled up (wider wings)
    G.eval()
    yy = torch.tensor([0, 1, 0])
    G(torch.randn(3, TINY.z_dim), yy)
    # ... but the noiseless stamps' outer ring stays at the measured sky level.
    level = G.sky_level.view(1, 3, 1, 1).expand(3, -1, -1, -1)
    torch.testing.assert_close(ring_median(noiseless[0]), level, rtol=0, atol=1e-6)
    # Without the pin the same generator's sky is raised.
    free, _, _ = _generator(g_template_warp=True, sky_noise="measured")
    free.load_state_dict({k: v for k, v in G.state_dict().items() if k != "sky_level"})
    noiseless.clear()
    free.sky.register_forward_hook(lambda m, args, out: noiseless.append(args[0].detach()))
    free.eval()
    free(torch.randn(3, TINY.z_dim), yy)
    assert float((ring_median(noiseless[0]) - level).min()) > 0.2


def test_envelope_keeps_gs_output_off_the_sky():
    from galearn.gan.template import ring_median

    G, _, _ = _generator(g_envelope=True, g_template_warp=True, sky_noise="measured")
    noiseless = []
    G.sky.register_forward_hook(lambda m, args, out: noiseless.append(args[0].detach()))
    with torch.no_grad():
        G.to_img.bias.add_(0.4)  # G's own output raises every pixel by 0.4 ...
    G.eval()
    z, yy = torch.randn(3, TINY.z_dim), torch.tensor([0, 1, 0])
    G(z, yy)
    base = G.warp(G.template, z, yy).detach()
    light = (base - ring_median(base)).clamp(min=0).sum(dim=1)  # (N, H, W)
    diff = noiseless[0] - base
    # ... but only where the drawn template has light: not on its sky, up to 0.4 + G's map at its peak.
    sky = light == 0
    assert bool(sky.any()) and float(diff.permute(1, 0, 2, 3)[:, sky].abs().max()) == 0.0
    peak = light.flatten(1).argmax(dim=1)
    assert float(diff.flatten(2)[torch.arange(3), :, peak].abs().min()) > 0.05


def test_luminance_and_pinned_sky_resume_exactly_and_old_checkpoints_sample(tmp_path):
    from galearn.errors import BadValueError
    from galearn.gan import run_sample, run_train
    from galearn.gan.checkpoint import load_checkpoint, save_checkpoint
    from galearn.gan.loop import _validate

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_template=True, g_template_warp=True,
                              g_residual="luminance", g_pin_sky=True, g_envelope=True)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert ckpt["G"]["to_img.weight"].shape[0] == 1 and ckpt["G_ema"]["colour"].shape == (2, 3)
    from galearn.gan.sky import stretched_level

    info = json.loads((ws.gan / "config.json").read_text())  # the pinned level is the measured one
    np.testing.assert_allclose(ckpt["G_ema"]["sky_level"].numpy(), 2 * stretched_level(info["sky"]) - 1, rtol=1e-6)
    run_sample(ws, dataclasses.replace(cfg, n_per_class=2), progress=False)
    with pytest.raises(BadValueError, match="g_residual"):
        run_train(ws, dataclasses.replace(cfg, steps=6, g_residual="bands"), resume=True, progress=False)
    with pytest.raises(BadValueError, match="g_pin_sky"):
        run_train(ws, dataclasses.replace(cfg, steps=6, g_pin_sky=False), resume=True, progress=False)
    # A checkpoint from before the options (no keys in its config) resumes and samples as bands / unpinned.
    with pytest.raises(BadValueError, match="g_envelope"):
        run_train(ws, dataclasses.replace(cfg, steps=6, g_envelope=False), resume=True, progress=False)
    plain = dataclasses.replace(cfg, g_residual="bands", g_pin_sky=False, g_envelope=False)
    run_train(ws, plain, progress=False)
    old = load_checkpoint(ws.gan / "ckpt-000004.pt")
    old["config"] = {k: v for k, v in old["config"].items() if k not in ("g_residual", "g_pin_sky", "g_envelope")}
    save_checkpoint(ws.gan / "ckpt-000004.pt", old)
    run_sample(ws, dataclasses.replace(plain, n_per_class=2), progress=False)
    run_train(ws, dataclasses.replace(plain, steps=5), resume=True, progress=False)
    with pytest.raises(BadValueError, match="g_residual"):
        _validate(dataclasses.replace(TINY, g_residual="colour"))
    for bad in ({"g_residual": "luminance"}, {"g_pin_sky": True}, {"g_envelope": True}):
        with pytest.raises(BadValueError, match="needs gan.g_template"):
            _validate(dataclasses.replace(TINY, g_template=False, **bad))


def test_config_round_trip_of_the_new_options(tmp_path):
    from galearn.config import RunConfig, load_config

    cfg = RunConfig()
    assert cfg.gan.g_residual == "bands" and cfg.gan.g_pin_sky is False and cfg.gan.g_envelope is False  # off by default (docs/gan-experiments.md round 4)
    cfg = dataclasses.replace(cfg, gan=dataclasses.replace(cfg.gan, g_residual="luminance", g_pin_sky=True))
    path = tmp_path / "cfg.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again.gan.g_residual == "luminance" and again.gan.g_pin_sky is True
    from galearn.config import parse_overrides

    assert load_config(None, parse_overrides(["gan.g_pin_sky=true", "gan.g_residual=luminance"])).gan.g_pin_sky is True
    with pytest.raises(Exception, match="g_pin_sky"):
        load_config(None, parse_overrides(["gan.g_pin_sky=3"]))
