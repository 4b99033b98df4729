"""gan.g_match_distance = "energy": the per-stamp matching terms (stamp spectra, colour spectra, light profiles and
their joint projections) compare each class's generated values with the real ones by the energy distance, whose
expectation is least at the real distribution; sorted matching of a 16-stamp batch favours too narrow a spread
(docs/gan-experiments.md issue 14 round 41)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY  # noqa: E402
from test_gan_match_reference import _two_classes, assert_match_setting_checked  # noqa: E402


def _normal_quantiles(q: int) -> torch.Tensor:
    from scipy.stats import norm

    return torch.tensor(norm.ppf((np.arange(q) + 0.5) / q), dtype=torch.float32)


def test_energy_distance_is_least_at_the_real_spread_where_sorted_matching_is_not():
    """Two classes, unit spread, 16 stamps a batch: the expected sorted (mixture-quantile) Wasserstein-1 distance is
    least for generated values narrower than the real ones; the energy distance's at the real spread. Common random
    numbers over 4000 batches, so the comparison of spreads is exact, not noisy."""
    from galearn.gan.loss import _energy_distance, _sorted_w1

    q, n, reps = 32, 16, 4000
    t = _normal_quantiles(q)
    class_quantiles = torch.stack([t, t + 3.0])  # (K, Q), each ascending
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(2, (n,), generator=gen)
    base = torch.randn(reps, n, generator=gen)  # rows: independent batches of the same classes
    targets = class_quantiles.reshape(1, -1).expand(reps, -1)
    target_y = torch.arange(2).repeat_interleave(q)
    mixture = torch.sort(class_quantiles[y].reshape(-1)).values[q // 2::q].expand(reps, -1)  # the N mixture quantiles
    spreads = (0.7, 0.8, 0.9, 1.0, 1.1, 1.2, 1.3)
    energy, sorted_w1 = [], []
    for s in spreads:
        values = base * s + 3.0 * y
        energy.append(float(_energy_distance(values, y, targets, target_y, min_spread=0.01)))
        sorted_w1.append(float(_sorted_w1(values, mixture)))
    assert spreads[int(np.argmin(energy))] == 1.0
    assert spreads[int(np.argmin(sorted_w1))] < 1.0  # the bias the energy distance removes
    # both classes shifted by two spreads: about what the sorted distance reads, so a weight pulls about as hard
    shifted = base + 3.0 * y + 2.0
    ratio = float(_energy_distance(shifted, y, targets, target_y, min_spread=0.01)) / float(_sorted_w1(shifted, mixture))
    assert 0.8 < ratio < 1.2


def test_energy_distance_compares_each_class_with_its_own_and_repels_only_within_a_class():
    from galearn.gan.loss import _energy_distance

    t = _normal_quantiles(32)
    target, target_y = torch.cat([t, t + 3.0])[None], torch.arange(2).repeat_interleave(32)
    values = torch.tensor([[-0.5, 0.4, 1.0, 1.8, 3.5]], requires_grad=True)
    y = torch.tensor([0, 0, 0, 1, 1])
    _energy_distance(values, y, target, target_y, min_spread=0.01).backward()
    assert (values.grad != 0).all()
    # the classes swapped: each stamp is now compared with the other class's values, and the distance grows
    swapped = float(_energy_distance(values.detach(), 1 - y, target, target_y, min_spread=0.01))
    assert swapped > float(_energy_distance(values.detach(), y, target, target_y, min_spread=0.01)) + 1.0
    # a stamp alone in its class has no partner to be repelled by: it is left out
    values.grad = None
    lonely = torch.tensor([0, 0, 0, 0, 1])
    _energy_distance(values, lonely, target, target_y, min_spread=0.01).backward()
    assert float(values.grad[0, 4]) == 0.0 and (values.grad[0, :4] != 0).all()
    # ... unless every stamp is alone: then each is pulled toward its class, none is repelled
    values.grad = None
    _energy_distance(values[:, 3:], torch.tensor([0, 1]), target, target_y, min_spread=0.01).backward()
    assert (values.grad[0, 3:] != 0).all()
    # no gradient reaches the target; its spread sets the units
    assert not target.requires_grad
    doubled = float(_energy_distance(values.detach() * 2, y, target * 2, target_y, min_spread=0.01))
    assert doubled == pytest.approx(float(_energy_distance(values.detach(), y, target, target_y, min_spread=0.01)),
                                    rel=1e-5)


def test_g_loss_with_the_energy_distance_against_the_classes_and_against_the_batch():
    from galearn.gan.loop import build_networks
    from galearn.gan.loss import (ClassReference, GanLoss, colour_power_penalty, joint_match_penalty,
                                  pixel_match_penalty, profile_match_penalty, random_directions, stamp_power_penalty)

    cfg = dataclasses.replace(TINY, discriminator="sngan", sky_noise="measured")
    torch.manual_seed(0)  # the networks' initial weights
    G, D, _ = build_networks(2, 3, 32, cfg)
    D.eval()
    x, y_all = _two_classes(1)
    ref = ClassReference(x, y_all, 2, colours=True, joint=True)
    y = torch.tensor([0, 1, 0, 1])
    z = torch.randn(4, TINY.z_dim, generator=torch.Generator().manual_seed(0))
    weights = dict(pixel_match=3.0, stamp_power_match=1.5, colour_power_match=0.5, profile_match=0.7, joint_match=2.0)
    loss = GanLoss(G, D, reference=ref, match_distance="energy", **weights)
    fake = loss.run_G(z, y, torch.Generator().manual_seed(1))
    unclipped = G.last_unclipped
    plain = GanLoss(G, D).g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    got = loss.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    directions = random_directions(2 * 3 * 8, 64, torch.Generator().manual_seed(2))
    energy = dict(distance="energy", y=y)
    want = (plain + 3.0 * pixel_match_penalty(unclipped, target_sorted=ref.sorted_pixels(y))  # pixels stay sorted
            + 1.5 * stamp_power_penalty(fake, target=ref.class_values("power"), **energy)
            + 0.5 * colour_power_penalty(fake, target=ref.class_values("colour"), **energy)
            + 0.7 * profile_match_penalty(fake, target=ref.class_values("profile"), **energy)
            + 2.0 * joint_match_penalty(fake, directions=directions, centre=ref.joint_centre, scale=ref.joint_scale,
                                        target=ref.joint_class_values(directions), **energy))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=0.0)  # the same sum, added in another order
    wasserstein = GanLoss(G, D, reference=ref, **weights).g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    assert float((got - wasserstein).detach().abs()) > 1e-4  # another distance
    # without a reference: each class of the step's real batch
    real = torch.from_numpy(x[[0, 20, 1, 21]])
    batch = GanLoss(G, D, profile_match=0.7, match_distance="energy")
    torch.testing.assert_close(batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake, real=real),
                               plain + 0.7 * profile_match_penalty(fake, real, **energy))
    with pytest.raises(ValueError, match="classes"):
        profile_match_penalty(fake, real, distance="energy")
    with pytest.raises(ValueError, match="match_distance"):
        GanLoss(G, D, match_distance="sorted")


def test_match_distance_trains_resumes_exactly_and_is_checked(tmp_path):
    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_stamp_power_match=1.0, g_joint_match=1.0,
                              g_match_reference="class", g_match_distance="energy")
    assert_match_setting_checked(  # the pixel and mean-spectrum terms stay sorted: energy alone with them does nothing
        tmp_path, cfg, "g_match_distance", "wasserstein", ("sorted", 1, None),
        dataclasses.replace(TINY, g_match_distance="energy", g_pixel_match=1.0, g_power_match=1.0),
        ["gan.g_match_distance=energy", "gan.g_profile_match=1"])
