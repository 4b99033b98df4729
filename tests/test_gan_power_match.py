"""gan.g_power_match: a G loss term pulling the generated batch's log power spectrum to the real batch's
(docs/gan-experiments.md issue 14 round 19)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY, make_workspace  # noqa: E402


def test_batch_log_power_is_the_evaluations_spectrum_averaged_over_the_batch():
    from galearn.gan.loss import batch_log_power
    from galearn.morphometry import power_bin_weights, power_spectrum

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3, 32, 32)).cumsum(axis=3)  # red-ish spectra, different per band and stamp
    x[:, 1] *= 3.0
    want = np.log10((10.0 ** power_spectrum(x)).mean(axis=0))  # (C, 8)
    got = batch_log_power(torch.from_numpy(x), torch.from_numpy(power_bin_weights(32)).float()).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-4)


def test_power_match_penalty_is_zero_on_the_real_batch_and_its_gradient_removes_excess_pixel_scale_power():
    from galearn.gan.loss import batch_log_power, power_match_penalty
    from galearn.morphometry import power_bin_weights

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[:32, :32] - 15.5
    smooth = np.exp(-(xx**2 + yy**2) / (2 * rng.uniform(2, 5, (8, 3, 1, 1)) ** 2)).astype("f4")
    real = torch.from_numpy(smooth + 0.02 * rng.normal(size=smooth.shape).astype("f4"))
    assert float(power_match_penalty(real, real)) == 0.0
    # A "generated" batch: the same galaxies with 10x the pixel noise; descend the penalty alone.
    fake = torch.from_numpy(smooth + 0.2 * rng.normal(size=smooth.shape).astype("f4")).requires_grad_(True)
    weights = torch.from_numpy(power_bin_weights(32)).float()
    start = power_match_penalty(fake, real).item()
    high_before = batch_log_power(fake.detach(), weights)[:, 4:].mean().item()
    opt = torch.optim.Adam([fake], lr=0.01)
    for _ in range(100):
        opt.zero_grad()
        power_match_penalty(fake, real).backward()
        opt.step()
    assert real.grad is None
    end = power_match_penalty(fake, real).item()
    high_after = batch_log_power(fake.detach(), weights)[:, 4:].mean().item()
    high_real = batch_log_power(real, weights)[:, 4:].mean().item()
    assert end < 0.1 * start
    assert high_after < high_before - 0.5  # the pixel-scale excess (2 dex) mostly gone
    assert abs(high_after - high_real) < 0.5


def test_g_loss_adds_the_weighted_penalty_and_needs_the_real_batch():
    from galearn.gan.loop import build_networks
    from galearn.gan.loss import GanLoss, power_match_penalty

    cfg = dataclasses.replace(TINY, discriminator="sngan", sky_noise="measured")
    G, D, _ = build_networks(2, 3, 32, cfg)
    D.eval()  # no spectral-norm power iteration between the two calls
    gen = torch.Generator().manual_seed(0)
    y = torch.tensor([0, 1, 0, 1])
    fake = torch.rand(4, 3, 32, 32) * 2 - 1
    real = torch.rand(4, 3, 32, 32) * 2 - 1
    plain = GanLoss(G, D).g_loss(y, None, torch.Generator().manual_seed(0), fake=fake)
    with_term = GanLoss(G, D, power_match=3.0).g_loss(y, None, gen, fake=fake, real=real)
    torch.testing.assert_close(with_term, plain + 3.0 * power_match_penalty(fake, real))
    with pytest.raises(ValueError, match="power_match"):
        GanLoss(G, D, power_match=3.0).g_loss(y, None, gen, fake=fake)


@pytest.mark.parametrize("discriminator, fast_step", [("sngan", False), ("sngan", True), ("projected", True)])
def test_training_with_power_match_runs_on_each_step_path(tmp_path, discriminator, fast_step):
    from galearn.gan import run_train

    ws = make_workspace(tmp_path)
    cfg = dataclasses.replace(TINY, steps=2, discriminator=discriminator, fast_step=fast_step, g_power_match=1.0,
                              d_steps=1 if discriminator == "projected" else TINY.d_steps)
    run_train(ws, cfg, progress=False)
    assert (ws.gan / "ckpt-000002.pt").exists()
