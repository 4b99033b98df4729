"""gan.g_pixel_match: a G loss term pulling the generated batch's per-band pixel-value distribution to the real
batch's, seeing through the clip to black (docs/gan-experiments.md issue 14 round 20)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY, make_workspace  # noqa: E402


def _sky_stamps(rng, n: int, level: float) -> torch.Tensor:
    """Stretched-like stamps in network units: a faint sky of ``level`` (0..1) with noise, clipped below at 0."""
    x = level + 0.02 * rng.normal(size=(n, 3, 16, 16))
    return torch.from_numpy(x.astype("f4")) * 2 - 1


def test_pixel_match_penalty_is_zero_on_the_real_batch_and_in_units_of_its_spread():
    from galearn.gan.loss import pixel_match_penalty

    rng = np.random.default_rng(0)
    real = _sky_stamps(rng, 8, 0.05).clamp(-1, 1)
    assert float(pixel_match_penalty(real, real)) == 0.0
    shifted = real + 0.5 * real.transpose(0, 1).reshape(3, -1).std(dim=1).view(1, 3, 1, 1)
    torch.testing.assert_close(pixel_match_penalty(shifted, real), torch.tensor(0.5))
    with pytest.raises(ValueError, match="differ in shape"):
        pixel_match_penalty(real[:4], real)


def test_pixel_match_gradient_lifts_a_sky_hidden_at_black():
    """A generated sky too dark by 2 sigma is half clipped to -1 (black): the clip has no gradient, the penalty's
    straight-through one does, and descending it brings the black fraction down to the real one."""
    from galearn.gan.loss import pixel_match_penalty

    rng = np.random.default_rng(1)
    real = _sky_stamps(rng, 8, 0.03).clamp(-1, 1)  # about 7 % black, like the real galaxy-zoo-dev stamps
    sky = torch.full((8, 3, 1, 1), -1.0 + 2 * (0.03 - 0.04), requires_grad=True)  # noiseless level, too dark
    noise = torch.from_numpy(0.04 * rng.normal(size=(8, 3, 16, 16)).astype("f4"))

    def black(x: torch.Tensor) -> float:
        return float((x.clamp(-1, 1) <= -1).float().mean())

    assert black(sky + noise) > 0.4 > 0.15 > black(real)
    plain = (sky + noise).clamp(-1, 1)
    (g_plain,) = torch.autograd.grad(plain[plain <= -1].sum(), sky)
    assert float(g_plain.abs().sum()) == 0.0  # what D's gradient sees of the black pixels: nothing
    opt = torch.optim.Adam([sky], lr=0.005)
    for _ in range(60):
        opt.zero_grad()
        pixel_match_penalty(sky + noise, real).backward()
        opt.step()
    assert real.grad is None
    assert black(sky + noise) < 0.15
    torch.testing.assert_close(sky.detach().mean(), torch.tensor(-1.0 + 2 * 0.03), atol=0.02, rtol=0)


def test_g_loss_adds_the_weighted_penalty_of_the_unclipped_forward_and_needs_the_real_batch():
    from galearn.gan.loop import build_networks
    from galearn.gan.loss import GanLoss, pixel_match_penalty

    cfg = dataclasses.replace(TINY, discriminator="sngan", sky_noise="measured")
    G, D, _ = build_networks(2, 3, 32, cfg)
    D.eval()  # no spectral-norm power iteration between the calls
    y = torch.tensor([0, 1, 0, 1])
    z = torch.randn(4, TINY.z_dim, generator=torch.Generator().manual_seed(0))
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    loss = GanLoss(G, D, pixel_match=3.0)
    assert G.keep_unclipped
    fake = loss.run_G(z, y, torch.Generator().manual_seed(1))
    unclipped = G.last_unclipped
    torch.testing.assert_close(unclipped.clamp(-1, 1), fake)
    plain = GanLoss(G, D).g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    with_term = loss.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake, real=real)
    torch.testing.assert_close(with_term, plain + 3.0 * pixel_match_penalty(unclipped, real))
    with pytest.raises(ValueError, match="pixel_match"):
        loss.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    G.eval()
    G.last_unclipped = None
    G(z, y, torch.Generator().manual_seed(1))
    assert G.last_unclipped is None  # sampling keeps nothing


@pytest.mark.parametrize("discriminator, fast_step, sky_noise",
                         [("sngan", False, "measured"), ("sngan", True, "learnt"), ("projected", True, "measured")])
def test_training_with_pixel_match_runs_on_each_step_path(tmp_path, discriminator, fast_step, sky_noise):
    from galearn.gan import run_train

    ws = make_workspace(tmp_path)
    cfg = dataclasses.replace(TINY, steps=2, discriminator=discriminator, fast_step=fast_step, g_pixel_match=1.0,
                              sky_noise=sky_noise, d_steps=1 if discriminator == "projected" else TINY.d_steps)
    run_train(ws, cfg, progress=False)
    assert (ws.gan / "ckpt-000002.pt").exists()


@pytest.mark.parametrize("softening", [0.0, 0.05])
def test_sky_noise_unclipped_output_clips_to_the_clipped_one_with_the_same_noise(softening):
    """Linear and asinh stretches: the unclipped stamps are the clipped ones before the clip (negative sky kept)."""
    from galearn.gan.sky import SkyNoise

    sky = SkyNoise(3)
    norm = float(np.arcsinh(1.0 / softening)) if softening else 1.0
    sky.set({"sigma": [0.02] * 3, "softening": [softening] * 3, "norm": [norm] * 3})
    h = torch.full((4, 3, 16, 16), -0.98)  # a faint noiseless sky: about half its noisy pixels fall below 0
    clipped = sky(h, torch.Generator().manual_seed(3))
    unclipped = sky(h, torch.Generator().manual_seed(3), clip=False)
    torch.testing.assert_close(unclipped.clamp(-1, 1), clipped, rtol=0, atol=1e-6)
    assert float((unclipped < -1).float().mean()) > 0.2
