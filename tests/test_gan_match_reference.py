"""gan.g_match_reference = "class": the matching terms compare each generated batch with its classes over the whole
training set (mean power spectrum, pixel quantiles) instead of the step's real batch; gan.g_stamp_power_match: the
distribution of the stamps' own spectra (docs/gan-experiments.md issue 14 round 21); gan.g_colour_power_match: the same of their
colour maps, every pair of bands' difference (round 30); gan.g_profile_match: the distribution of the stamps' own
light profiles (round 33); gan.g_joint_match: the joint distribution of each stamp's spectrum and profile (round 35)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from galearn.errors import BadValueError

torch = pytest.importorskip("torch")

from test_gan import TINY, assert_resume_exact, assert_sample_reproducible, make_workspace  # noqa: E402


def _two_classes(seed: int = 0):
    """Two classes that differ in sky level and in texture (smooth vs white noise), network units."""
    rng = np.random.default_rng(seed)
    smooth = -0.9 + 0.05 * np.cumsum(rng.normal(size=(20, 3, 32, 32)), axis=-1) / 4
    noisy = -0.6 + 0.1 * rng.normal(size=(12, 3, 32, 32))
    x = np.concatenate([smooth, noisy]).clip(-1, 1).astype("f4")  # real stamps lie in [-1, 1]
    return x, np.repeat([0, 1], [20, 12])


def test_class_reference_is_each_class_over_the_training_set():
    from galearn.gan.loss import ClassReference, _bin_weights, batch_log_power, pixel_match_penalty

    x, y = _two_classes()
    ref = ClassReference(x, y, 2, chunk=7)  # chunks that do not divide the classes
    t, yt = torch.from_numpy(x), torch.from_numpy(y)
    weights = _bin_weights(32, torch.device("cpu"))
    for k in (0, 1):
        members = t[yt == k]
        # the expected spectrum of a batch of one class: that class's mean spectrum
        torch.testing.assert_close(ref.log_power(torch.tensor([k, k, k])), batch_log_power(members, weights),
                                   rtol=0, atol=1e-5)
        # the class's own stamps against its quantiles: next to nothing (quantile sampling only)
        target = ref.sorted_pixels(yt[yt == k])
        assert target.shape == (3, members[:, 0].numel())
        assert float(pixel_match_penalty(members, target_sorted=target)) < 0.01
    # a batch's target is the mixture of its classes: a mixed batch is near its mixed reference, far from one class's
    mixed = torch.cat([t[:4], t[20:24]])
    near = float(pixel_match_penalty(mixed, target_sorted=ref.sorted_pixels(torch.tensor([0] * 4 + [1] * 4))))
    far = float(pixel_match_penalty(mixed, target_sorted=ref.sorted_pixels(torch.zeros(8, dtype=torch.long))))
    assert near < 0.1 < far
    empty = ClassReference(x, y, 3)  # class 2 has no training stamps: the whole set stands in for it
    torch.testing.assert_close(empty.log_power(torch.tensor([2])), batch_log_power(t, weights), rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="sorted target"):
        pixel_match_penalty(mixed, target_sorted=ref.sorted_pixels(torch.tensor([0, 1])))


def test_stamp_log_power_is_the_evaluations_spectrum_and_its_penalty_counts_in_real_spreads():
    from galearn.gan.loss import ClassReference, _bin_weights, stamp_log_power, stamp_power_penalty
    from galearn.morphometry import power_spectrum

    x, y = _two_classes(2)
    t = torch.from_numpy(x)
    weights = _bin_weights(32, torch.device("cpu"))
    np.testing.assert_allclose(stamp_log_power(t, weights).numpy(), power_spectrum((x + 1) / 2) + np.log10(4.0),
                               atol=2e-4)  # [-1, 1] units: twice the [0, 1] amplitude, 4x the power
    real = t[:16]
    assert float(stamp_power_penalty(real, real)) == 0.0
    # every stamp 2x brighter (sky included): each log spectrum + log10(4), i.e. that over each row's spread
    logs = stamp_log_power(real, weights).reshape(16, -1)
    want = (np.log10(4.0) / logs.std(dim=0)).mean()
    torch.testing.assert_close(stamp_power_penalty(2 * real, real), want, rtol=1e-4, atol=1e-5)
    ref = ClassReference(x, y, 2)
    target = ref.sorted_stamp_power(torch.tensor([0, 0, 1]))
    assert target.shape == (3 * weights.shape[1], 3) and bool((target.diff(dim=1) >= 0).all())
    own = float(stamp_power_penalty(t[20:26], target_sorted=ref.sorted_stamp_power(torch.ones(6, dtype=torch.long))))
    other = float(stamp_power_penalty(t[20:26], target_sorted=ref.sorted_stamp_power(torch.zeros(6, dtype=torch.long))))
    assert own < 0.5 < 2 < other  # white noise against its own class, and against the smooth class
    with pytest.raises(ValueError, match="does not match"):
        stamp_power_penalty(t[:4], target_sorted=target)


def test_stamp_profile_is_the_evaluations_profile_and_its_penalty_counts_in_real_spreads():
    from galearn.gan.loss import ClassReference, profile_match_penalty, stamp_profile
    from galearn.morphometry import radial_profile

    x, y = _two_classes(3)
    t = torch.from_numpy(x)
    np.testing.assert_allclose(stamp_profile(t).numpy(), radial_profile(x), atol=1e-5)
    real = t[:16]
    assert float(profile_match_penalty(real, real)) == 0.0
    # every stamp brighter by 0.1 (sky included): each annulus + 0.1, i.e. 0.1 over each row's spread (at 32 pixels
    # two of the 8 annuli hold no pixel centre: 0 in every stamp, no distance)
    prof = stamp_profile(real).reshape(16, -1)
    spread = prof.std(dim=0)
    assert int((spread == 0).sum()) == 2 * 3
    want = torch.where(spread > 0, 0.1 / spread.clamp(min=0.01), torch.zeros(())).mean()
    torch.testing.assert_close(profile_match_penalty(real + 0.1, real), want, rtol=1e-4, atol=1e-5)
    # a galaxy more concentrated than the real ones costs, though the stamps' mean brightness is the same
    yy, xx = np.mgrid[:32, :32] - 15.5
    r = np.hypot(yy, xx)
    wide, compact = np.exp(-r / 6.0), np.exp(-r / 2.0)
    compact *= wide.sum() / compact.sum()
    wide_t = torch.from_numpy(np.broadcast_to(wide - 0.5, (8, 3, 32, 32)).astype("f4")).contiguous()
    compact_t = torch.from_numpy(np.broadcast_to(compact - 0.5, (8, 3, 32, 32)).astype("f4")).contiguous()
    assert float(compact_t.mean()) == pytest.approx(float(wide_t.mean()), abs=1e-5)
    assert float(profile_match_penalty(compact_t, wide_t)) > 10
    ref = ClassReference(x, y, 2)
    target = ref.sorted_stamp_profile(torch.tensor([0, 0, 1]))
    assert target.shape == (3 * 8, 3) and bool((target.diff(dim=1) >= 0).all())
    own = float(profile_match_penalty(t[20:26], target_sorted=ref.sorted_stamp_profile(torch.ones(6, dtype=torch.long))))
    other = float(profile_match_penalty(t[20:26], target_sorted=ref.sorted_stamp_profile(torch.zeros(6, dtype=torch.long))))
    assert own < 0.5 < 2 < other  # the brighter noisy class against its own profiles, and against the smooth class's
    fake = t[20:26].clone().requires_grad_(True)
    profile_match_penalty(fake, target_sorted=ref.sorted_stamp_profile(torch.zeros(6, dtype=torch.long))).backward()
    assert bool(torch.isfinite(fake.grad).all()) and float(fake.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="does not match"):
        profile_match_penalty(t[:4], target_sorted=target)
    with pytest.raises(ValueError, match="give the real batch"):
        profile_match_penalty(t[:4])


def test_colour_power_penalty_sees_colour_structure_the_per_band_spectra_cannot():
    from galearn.gan.loss import ClassReference, band_differences, colour_power_penalty, stamp_power_penalty

    rng = np.random.default_rng(5)
    light = 0.3 * rng.normal(size=(16, 1, 32, 32)).astype("f4")
    grey = torch.from_numpy(np.repeat(light, 3, axis=1))  # the same texture in every band: no colour structure
    idx = [[0, 1, 2], [1, 2, 0], [2, 0, 1]]  # each band's texture from another stamp: the same per-band statistics
    light_t = torch.from_numpy(light[:, 0])
    coloured = torch.stack([light_t[(np.arange(16) + 5 * b) % 16] for b in range(3)], dim=1)
    d = band_differences(coloured)
    assert d.shape == (16, 3, 32, 32)
    torch.testing.assert_close(d[:, 1], coloured[:, 0] - coloured[:, 2])
    # the per-band spectra cannot tell the two batches apart (the same stamps, shuffled between bands) ...
    assert float(stamp_power_penalty(coloured, grey)) < 0.05
    # ... the colour maps' spectra can: the grey batch has none
    assert float(colour_power_penalty(grey, grey)) == 0.0
    assert float(colour_power_penalty(coloured, grey)) > 10 * float(colour_power_penalty(grey[:8].repeat(2, 1, 1, 1), grey))
    x = torch.cat([grey, coloured]).numpy()
    y = np.repeat([0, 1], 16)
    ref = ClassReference(x, y, 2, colours=True)
    target = ref.sorted_colour_power(torch.tensor([0, 0, 1]))
    assert target.shape == (3 * 8, 3) and bool((target.diff(dim=1) >= 0).all())
    own = float(colour_power_penalty(coloured, target_sorted=ref.sorted_colour_power(torch.ones(16, dtype=torch.long))))
    other = float(colour_power_penalty(coloured, target_sorted=ref.sorted_colour_power(torch.zeros(16, dtype=torch.long))))
    assert own < 0.5 < 10 < other
    fake = coloured.clone().requires_grad_(True)
    colour_power_penalty(fake, target_sorted=ref.sorted_colour_power(torch.zeros(16, dtype=torch.long))).backward()
    assert bool(torch.isfinite(fake.grad).all()) and float(fake.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="colours=True"):
        ClassReference(x, y, 2).sorted_colour_power(torch.tensor([0]))


def _tiny_networks_and_stamps(y: torch.Tensor):
    """A tiny SNGAN G and D (D in eval mode) and G's stamps for classes ``y``, detached, from seeded latents."""
    from galearn.gan.loop import build_networks
    from galearn.gan.loss import GanLoss

    G, D, _ = build_networks(2, 3, 32, dataclasses.replace(TINY, discriminator="sngan", sky_noise="measured"))
    D.eval()
    fake = GanLoss(G, D).run_G(torch.randn(len(y), TINY.z_dim, generator=torch.Generator().manual_seed(0)), y,
                               torch.Generator().manual_seed(1)).detach()
    return G, D, fake


def test_joint_match_sees_how_the_numbers_move_together_which_the_per_number_terms_cannot():
    from galearn.gan.loss import (ClassReference, GanLoss, joint_match_penalty, profile_match_penalty,
                                  random_directions, stamp_power_penalty, stamp_spectrum_profile, stamp_profile)
    from galearn.gan.loss import _bin_weights, stamp_log_power

    rng = np.random.default_rng(5)
    n = 64
    amplitude = np.exp(rng.uniform(np.log(0.02), np.log(0.5), size=(n, 1, 1, 1)))  # textures from faint to strong
    light = (amplitude * rng.normal(size=(n, 1, 32, 32))).astype("f4")
    grey = torch.from_numpy(np.repeat(light, 3, axis=1))  # every band of a stamp as strong as the others
    light_t = torch.from_numpy(light[:, 0])
    shuffled = torch.stack([light_t[(np.arange(n) + 17 * b) % n] for b in range(3)], dim=1)  # bands from other stamps
    features = stamp_spectrum_profile(grey)
    assert features.shape == (n, 48)
    torch.testing.assert_close(features[:, :24], stamp_log_power(grey, _bin_weights(32, grey.device)).flatten(1))
    torch.testing.assert_close(features[:, 24:], stamp_profile(grey).flatten(1))
    directions = random_directions(48, 64, torch.Generator().manual_seed(0))
    assert directions.shape == (48, 64)
    torch.testing.assert_close(directions.norm(dim=0), torch.ones(64))
    # each band's spectra and profiles are the same numbers in both batches: the per-number terms read 0 ...
    assert float(stamp_power_penalty(shuffled, grey)) == 0.0 and float(profile_match_penalty(shuffled, grey)) == 0.0
    # ... the joint term sees that the bands no longer move together
    assert float(joint_match_penalty(grey, grey, directions=directions)) == 0.0
    assert float(joint_match_penalty(shuffled, grey, directions=directions)) > 0.3
    # against the classes of a reference: the shuffled class's own vectors, not the grey class's
    x, y_all = torch.cat([grey, shuffled]).numpy(), np.repeat([0, 1], n)
    ref = ClassReference(x, y_all, 2, chunk=50, joint=True)  # the vectors built in uneven chunks
    torch.testing.assert_close(ref.joint.mean(dim=0), torch.zeros(48), atol=1e-4, rtol=0)
    torch.testing.assert_close(ref.joint * ref.joint_scale + ref.joint_centre, stamp_spectrum_profile(torch.from_numpy(x)))
    with pytest.raises(ValueError, match="joint=True"):
        ClassReference(x, y_all, 2).sorted_joint(torch.tensor([0]), directions)

    def against(k: int, batch=shuffled[:32]) -> torch.Tensor:
        y = torch.full((len(batch),), k, dtype=torch.long)
        return joint_match_penalty(batch, directions=directions, centre=ref.joint_centre, scale=ref.joint_scale,
                                   target_sorted=ref.sorted_joint(y, directions))

    assert ref.sorted_joint(torch.tensor([0, 1, 1]), directions).shape == (64, 3)
    projected = (ref.joint @ directions).numpy()  # one stamp of class 1: its class's middle quantile, as numpy's
    np.testing.assert_allclose(ref.sorted_joint(torch.ones(1, dtype=torch.long), directions)[:, 0].numpy(),
                               np.quantile(projected[y_all == 1], 16.5 / 32, axis=0), rtol=1e-5, atol=1e-5)
    assert float(against(1)) < 0.5 * float(against(0))
    fake = shuffled[:32].clone().requires_grad_(True)
    against(0, fake).backward()
    assert bool(torch.isfinite(fake.grad).all()) and float(fake.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="centre and scale"):
        joint_match_penalty(grey, directions=directions, target_sorted=ref.sorted_joint(torch.zeros(n, dtype=torch.long), directions))
    with pytest.raises(ValueError, match="does not match"):
        joint_match_penalty(grey[:4], directions=directions, centre=ref.joint_centre, scale=ref.joint_scale,
                            target_sorted=ref.sorted_joint(torch.zeros(3, dtype=torch.long), directions))
    with pytest.raises(ValueError, match="give the real batch"):
        joint_match_penalty(grey, directions=directions)
    # in G's loss: 64 directions from the step's generator, after D's augmentations
    y = torch.tensor([0, 1, 0, 1])
    G, D, fake = _tiny_networks_and_stamps(y)
    gen = torch.Generator().manual_seed(2)
    plain = GanLoss(G, D).g_loss(y, None, gen, fake=fake)
    step_directions = random_directions(48, 64, gen)
    want = plain + 0.8 * joint_match_penalty(fake, directions=step_directions, centre=ref.joint_centre,
                                             scale=ref.joint_scale, target_sorted=ref.sorted_joint(y, step_directions))
    got = GanLoss(G, D, joint_match=0.8, reference=ref).g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    torch.testing.assert_close(got, want)
    real = grey[:4]
    gen = torch.Generator().manual_seed(2)
    plain = GanLoss(G, D).g_loss(y, None, gen, fake=fake)
    step_directions = random_directions(48, 64, gen)
    batch = GanLoss(G, D, joint_match=0.8)
    torch.testing.assert_close(batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake, real=real),
                               plain + 0.8 * joint_match_penalty(fake, real, directions=step_directions))
    with pytest.raises(ValueError, match="joint_match needs"):
        batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)


def test_joint_smoothing_is_a_smoothed_bootstrap_of_the_target_with_its_mean_and_spread(tmp_path):
    from galearn.errors import BadValueError
    from galearn.gan import run_train
    from galearn.gan.loop import _validate
    from galearn.gan.loss import (ClassReference, GanLoss, joint_match_penalty, random_directions,
                                  smooth_projections)

    projected = torch.randn(4000, 3, generator=torch.Generator().manual_seed(0)) * torch.tensor([1.0, 2.0, 0.5]) + 3.0
    assert smooth_projections(projected, 0.0, torch.Generator()) is projected  # off: the values themselves
    smoothed = smooth_projections(projected, 0.5, torch.Generator().manual_seed(1))
    torch.testing.assert_close(smoothed, smooth_projections(projected, 0.5, torch.Generator().manual_seed(1)))
    spread = projected.std(dim=0)
    assert bool(((smoothed.mean(dim=0) - projected.mean(dim=0)).abs() < 0.05 * spread).all())  # the same mean ...
    assert bool(((smoothed.std(dim=0) / spread - 1).abs() < 0.05).all())  # ... and spread
    moved = (smoothed - projected).abs().mean(dim=0) / spread  # each value moved by ~0.5 / sqrt(1.25) of a spread
    assert bool(((moved > 0.25) & (moved < 0.45)).all())
    # the class reference's quantiles: smoothed per class, reproducible from the step's generator
    rng = np.random.default_rng(3)
    x = rng.normal(size=(40, 3, 32, 32)).astype("f4") * np.exp(rng.uniform(-3, -1, size=(40, 1, 1, 1))).astype("f4")
    y_all = np.repeat([0, 1], 20)
    ref = ClassReference(x, y_all, 2, joint=True)
    directions = random_directions(48, 16, torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 1, 0])
    plain = ref.sorted_joint(y, directions)
    smooth = ref.sorted_joint(y, directions, 0.5, torch.Generator().manual_seed(4))
    assert smooth.shape == plain.shape and not torch.equal(smooth, plain)
    torch.testing.assert_close(smooth, ref.sorted_joint(y, directions, 0.5, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match="generator"):
        ref.sorted_joint(y, directions, 0.5)
    with pytest.raises(ValueError, match="generator"):
        joint_match_penalty(torch.from_numpy(x[:4]), torch.from_numpy(x[4:8]), directions=directions, smoothing=0.5)
    # in G's loss: the step's directions, then the smoothing noise, from the step's generator
    G, D, fake = _tiny_networks_and_stamps(y)
    gen = torch.Generator().manual_seed(2)
    base = GanLoss(G, D).g_loss(y, None, gen, fake=fake)
    step_directions = random_directions(48, 64, gen)
    want = base + 0.8 * joint_match_penalty(fake, directions=step_directions, centre=ref.joint_centre,
                                            scale=ref.joint_scale,
                                            target_sorted=ref.sorted_joint(y, step_directions, 0.5, gen))
    got = GanLoss(G, D, joint_match=0.8, joint_smoothing=0.5, reference=ref).g_loss(
        y, None, torch.Generator().manual_seed(2), fake=fake)
    torch.testing.assert_close(got, want)
    # a configuration key, frozen on resume, refused out of range or without the joint term
    trained = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_joint_match=1.0, g_joint_smoothing=0.5,
                                  g_match_reference="class")
    ws, ckpt = assert_resume_exact(tmp_path, trained)
    assert ckpt["config"]["g_joint_smoothing"] == 0.5
    with pytest.raises(BadValueError, match="g_joint_smoothing"):
        run_train(ws, dataclasses.replace(trained, steps=6, g_joint_smoothing=0.0), resume=True, progress=False)
    for bad in (-0.1, 5.0, True, "wide"):
        with pytest.raises(BadValueError, match="g_joint_smoothing"):
            _validate(dataclasses.replace(trained, g_joint_smoothing=bad))
    with pytest.raises(BadValueError, match="no effect without gan.g_joint_match"):
        _validate(dataclasses.replace(TINY, g_joint_smoothing=0.5))


def test_joint_target_of_a_large_class_is_a_seeded_draw_whose_quantiles_match_the_whole_class(monkeypatch):
    """At survey scale each step projects at most JOINT_MAX_ROWS stamps of a class (drawn from the step's
    generator), not the whole training set; below the cap nothing changes."""
    from galearn.gan.loss import ClassReference, random_directions

    rng = np.random.default_rng(5)
    x = rng.normal(size=(300, 3, 32, 32)).astype("f4") * np.exp(rng.uniform(-3, -1, size=(300, 1, 1, 1))).astype("f4")
    x[250:] *= 10.0  # class 1 brighter: its target differs from class 0's
    ref = ClassReference(x, np.repeat([0, 1], [250, 50]), 2, joint=True)
    directions = random_directions(48, 16, torch.Generator().manual_seed(0))
    y = torch.tensor([0, 0, 1, 1, 0, 0, 0, 1])
    whole = ref.sorted_joint(y, directions)  # no generator needed under the cap
    monkeypatch.setattr(ClassReference, "JOINT_MAX_ROWS", 120)
    with pytest.raises(ValueError, match="generator"):
        ref.sorted_joint(y, directions)
    drawn = ref.sorted_joint(y, directions, gen=torch.Generator().manual_seed(1))
    torch.testing.assert_close(drawn, ref.sorted_joint(y, directions, gen=torch.Generator().manual_seed(1)))
    assert not torch.equal(drawn, ref.sorted_joint(y, directions, gen=torch.Generator().manual_seed(2)))
    # the draw estimates the same quantiles: within a tenth of the projections' spread (another class's: far off)
    spread = (ref.joint @ directions).std(dim=0)[:, None]
    assert float(((drawn - whole).abs() / spread).median()) < 0.1
    other = ref.sorted_joint(torch.ones_like(y), directions, gen=torch.Generator().manual_seed(1))
    assert float(((other - whole).abs() / spread).median()) > 0.3


def test_g_loss_with_a_class_reference_needs_no_real_batch():
    from galearn.gan.loop import build_networks
    from galearn.gan.loss import (ClassReference, GanLoss, colour_power_penalty, pixel_match_penalty,
                                  power_match_penalty, profile_match_penalty, stamp_power_penalty)

    cfg = dataclasses.replace(TINY, discriminator="sngan", sky_noise="measured")
    G, D, _ = build_networks(2, 3, 32, cfg)
    D.eval()
    x, y_all = _two_classes(1)
    ref = ClassReference(x, y_all, 2, colours=True)
    y = torch.tensor([0, 1, 0, 1])
    z = torch.randn(4, TINY.z_dim, generator=torch.Generator().manual_seed(0))
    loss = GanLoss(G, D, power_match=2.0, pixel_match=3.0, stamp_power_match=1.5, colour_power_match=0.5,
                   profile_match=0.7, reference=ref)
    fake = loss.run_G(z, y, torch.Generator().manual_seed(1))
    unclipped = G.last_unclipped
    plain = GanLoss(G, D).g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    got = loss.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)  # no real batch
    want = (plain + 2.0 * power_match_penalty(fake, target=ref.log_power(y))
            + 3.0 * pixel_match_penalty(unclipped, target_sorted=ref.sorted_pixels(y))
            + 1.5 * stamp_power_penalty(fake, target_sorted=ref.sorted_stamp_power(y))
            + 0.5 * colour_power_penalty(fake, target_sorted=ref.sorted_colour_power(y))
            + 0.7 * profile_match_penalty(fake, target_sorted=ref.sorted_stamp_profile(y)))
    torch.testing.assert_close(got, want)
    real = torch.from_numpy(x[[0, 20, 1, 21]])
    again = loss.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake, real=real)
    assert float((got - again).detach().abs()) == 0.0  # the reference, not the batch, is the target
    # ... and it is another target than the step's batch would be
    fake = fake.detach()
    assert float(power_match_penalty(fake, real)) != float(power_match_penalty(fake, target=ref.log_power(y)))
    assert float(stamp_power_penalty(fake, real)) != float(
        stamp_power_penalty(fake, target_sorted=ref.sorted_stamp_power(y)))
    # without a reference the step's real batch is the target
    batch = GanLoss(G, D, colour_power_match=0.5)
    torch.testing.assert_close(batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake, real=real),
                               plain.detach() + 0.5 * colour_power_penalty(fake, real))
    with pytest.raises(ValueError, match="colour_power_match needs"):
        batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)
    batch = GanLoss(G, D, profile_match=0.7)
    torch.testing.assert_close(batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake, real=real),
                               plain.detach() + 0.7 * profile_match_penalty(fake, real))
    with pytest.raises(ValueError, match="profile_match needs"):
        batch.g_loss(y, None, torch.Generator().manual_seed(2), fake=fake)


def assert_match_setting_checked(tmp_path, cfg, name: str, default: str, bad: tuple, without_terms,
                                 overrides: list[str]) -> None:
    """A string setting of the matching terms (``cfg`` sets it to another value than ``default``): the default
    and the value old checkpoints read, kept in the checkpoint, resumed exactly, sampled reproducibly, frozen on
    resume, ``bad`` values refused, refused in ``without_terms`` (a config without the terms it changes), read
    from the command line (``overrides``)."""
    from galearn.config import RunConfig, load_config, parse_overrides
    from galearn.gan import run_train
    from galearn.gan.loop import LEGACY_SETTINGS, _validate

    assert getattr(RunConfig().gan, name) == LEGACY_SETTINGS[name] == default
    value = getattr(cfg, name)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert ckpt["config"][name] == value
    assert_sample_reproducible(ws, cfg)
    with pytest.raises(BadValueError, match=name):  # frozen on resume
        run_train(ws, dataclasses.replace(cfg, steps=6, **{name: default}), resume=True, progress=False)
    for b in bad:
        with pytest.raises(BadValueError, match=name):
            _validate(dataclasses.replace(cfg, **{name: b}))
    with pytest.raises(BadValueError, match="no effect without"):
        _validate(without_terms)
    assert getattr(load_config(None, parse_overrides(overrides)).gan, name) == value
    with pytest.raises(BadValueError, match=f"gan.{name}"):
        load_config(None, parse_overrides([f"gan.{name}={bad[0]}"]))


def test_class_reference_resumes_exactly_samples_reproducibly_and_is_checked(tmp_path):
    from galearn.gan.loop import _validate

    cfg = dataclasses.replace(TINY, steps=4, checkpoint_every=2, g_power_match=2.0, g_pixel_match=1.0,
                              g_match_reference="class")
    assert_match_setting_checked(tmp_path, cfg, "g_match_reference", "batch", ("whole", 1, None),
                                 dataclasses.replace(TINY, g_match_reference="class"),
                                 ["gan.g_match_reference=class", "gan.g_pixel_match=1"])
    _validate(dataclasses.replace(TINY, g_match_reference="class", g_stamp_power_match=1.0))  # any one term will do


@pytest.mark.parametrize("discriminator, fast_step, reference, distance", [
    ("sngan", False, "class", "wasserstein"), ("projected", True, "class", "wasserstein"),
    ("sngan", False, "batch", "energy"), ("projected", True, "class", "energy")])  # gan.g_match_distance: round 41
def test_training_with_each_matching_target_runs_on_each_step_path(tmp_path, discriminator, fast_step, reference,
                                                                   distance):
    from galearn.gan import run_train

    ws = make_workspace(tmp_path)
    cfg = dataclasses.replace(TINY, steps=2, discriminator=discriminator, fast_step=fast_step, g_pixel_match=1.0,
                              g_power_match=1.0, g_stamp_power_match=1.0, g_colour_power_match=1.0,
                              g_profile_match=1.0, g_joint_match=1.0, g_match_reference=reference,
                              g_match_distance=distance, sky_noise="measured",
                              d_steps=1 if discriminator == "projected" else TINY.d_steps)
    run_train(ws, cfg, progress=False)
    assert (ws.gan / "ckpt-000002.pt").exists()


def test_colour_power_match_is_refused_on_one_band(tmp_path):
    from conftest import make_stamp_workspace
    from galearn.gan import run_train

    ws = make_stamp_workspace(tmp_path / "ws", n=20, bands=("F160W",), columns={"truth_class": np.repeat(["a", "b"], 10)})
    cfg = dataclasses.replace(TINY, steps=1, g_colour_power_match=1.0)
    with pytest.raises(BadValueError, match="g_colour_power_match.*one band"):
        run_train(ws, cfg, progress=False)
    assert not list(ws.gan_checkpoints())
