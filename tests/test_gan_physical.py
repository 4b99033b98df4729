"""Physical stamps of the GAN library: the censored sky (stretched 0) gets its negative noise back."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from galearn.errors import BadValueError
from galearn.imaging import AsinhStretch, stretch_noise_sigma

BANDS = ["F435W", "F850LP", "F160W"]
SIGMA = np.array([0.004, 0.0035, 0.01])  # per-band sky noise (physical units per pixel)


def noisy_stamps(n: int = 40, size: int = 32, seed: int = 0) -> np.ndarray:
    """Exponential discs plus Gaussian sky noise of ``SIGMA`` per band, float32 (N, 3, size, size)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    r = np.hypot(xx, yy)[None]
    re = rng.uniform(1.5, 4.0, n)[:, None, None]
    flux = 10 ** rng.uniform(-1.5, -0.5, n)[:, None, None]
    prof = flux * np.exp(-1.68 * r / re)
    out = prof[:, None] * np.array([0.5, 1.0, 2.0])[None, :, None, None]
    out = out + rng.normal(0.0, 1.0, out.shape) * SIGMA[None, :, None, None]
    return out.astype("f4")


def test_round_trip_restores_the_negative_sky_of_real_stamps():
    physical = noisy_stamps()
    stretch = AsinhStretch.fit(physical, noise_sigma=SIGMA)
    stretched = stretch.forward(physical)
    plain = stretch.inverse(stretched)
    fixed = stretch.inverse(stretched, censored_noise_sigma=SIGMA, random_state=[0, 1])

    censored = stretched == 0
    assert np.array_equal(censored, physical <= 0)
    assert plain.min() >= 0  # the problem: the plain inverse has no negative sky at all
    # uncensored pixels are the plain inverse; censored ones are negative draws
    np.testing.assert_array_equal(fixed[~censored], plain[~censored])
    assert np.all(fixed[censored] <= 0) and np.mean(fixed[censored] < 0) > 0.99
    for b in range(len(BANDS)):
        orig, new = physical[:, b][censored[:, b]], fixed[:, b][censored[:, b]]
        assert abs(new.std() / orig.std() - 1) < 0.1, (b, orig.std(), new.std())
        assert abs(new.mean() / orig.mean() - 1) < 0.1, (b, orig.mean(), new.mean())
        # the whole sky (pixels far from the source) has the band's noise again, not ~0.58 of it
        sky = np.concatenate([fixed[:, b, :4].ravel(), fixed[:, b, -4:].ravel()])
        assert abs(sky.std() / SIGMA[b] - 1) < 0.1
        assert plain[:, b, :4].std() / SIGMA[b] < 0.7

    # without the local level: pure-sky half-normal draws, more negative on the sources' outskirts
    pure = stretch.inverse(stretched, censored_noise_sigma=SIGMA, random_state=[0, 1], censored_smoothing_pixels=0)
    assert np.all(pure[censored] < 0)
    yy, xx = np.mgrid[:32, :32] - 15.5
    near = censored & (np.hypot(yy, xx) < 6)  # on the discs, where the local level mu > 0
    assert pure[near].mean() < fixed[near].mean()

    # seeded: same seed, same stamps; another seed, other draws; works on one stamp (C, H, W)
    again = stretch.inverse(stretched, censored_noise_sigma=SIGMA, random_state=[0, 1])
    np.testing.assert_array_equal(again, fixed)
    other = stretch.inverse(stretched, censored_noise_sigma=SIGMA, random_state=[0, 2])
    assert not np.array_equal(other, fixed)
    one = stretch.inverse(stretched[0], censored_noise_sigma=SIGMA, random_state=5)
    assert one.shape == stretched[0].shape and np.all(one[stretched[0] == 0] <= 0)

    with pytest.raises(BadValueError, match="censored_noise_sigma"):
        stretch.inverse(stretched, censored_noise_sigma=SIGMA[:2], random_state=0)
    with pytest.raises(BadValueError, match="censored_noise_sigma"):
        stretch.inverse(stretched, censored_noise_sigma=np.array([0.004, 0.0, 0.01]), random_state=0)


def test_censored_sky_can_have_each_stamps_own_depth():
    """``censored_noise_sigma (N, C)``: each stamp's censored pixels get its own sigma (gan.sky_scatter)."""
    physical = noisy_stamps(n=40)
    depth = np.where(np.arange(40) % 2 == 0, 0.5, 2.0)
    physical = physical * depth[:, None, None, None].astype("f4")  # sources scale too: only the ratio matters here
    stretch = AsinhStretch.fit(physical, noise_sigma=SIGMA)
    stretched = stretch.forward(physical)
    per_stamp = depth[:, None] * SIGMA[None, :]
    fixed = stretch.inverse(stretched, censored_noise_sigma=per_stamp, random_state=[0, 1])
    censored = stretched == 0
    for d in (0.5, 2.0):
        rows = depth == d
        for b in range(len(BANDS)):
            orig = physical[rows, b][censored[rows, b]]
            new = fixed[rows, b][censored[rows, b]]
            assert abs(new.std() / orig.std() - 1) < 0.12, (d, b, orig.std(), new.std())
    # one row of per-stamp sigmas equal to the band sigmas: the (C,) result, draw for draw
    same = stretch.inverse(stretched, censored_noise_sigma=np.repeat(SIGMA[None], 40, axis=0), random_state=[0, 1])
    np.testing.assert_array_equal(same, stretch.inverse(stretched, censored_noise_sigma=SIGMA, random_state=[0, 1]))
    with pytest.raises(BadValueError, match="censored_noise_sigma"):
        stretch.inverse(stretched, censored_noise_sigma=per_stamp[:10], random_state=0)


def test_stretch_noise_sigma_prefers_the_stored_value():
    d = AsinhStretch(softening=[0.02, 0.04, 0.06], maximum=[1.0, 1.0, 1.0]).to_dict()
    np.testing.assert_allclose(stretch_noise_sigma(d), [0.01, 0.02, 0.03])  # softening / 2 (default)
    np.testing.assert_allclose(stretch_noise_sigma({**d, "softening_sigmas": 4.0}), [0.005, 0.01, 0.015])
    np.testing.assert_allclose(stretch_noise_sigma({**d, "noise_sigma": [0.011, 0.019, 0.031]}), [0.011, 0.019, 0.031])
    with pytest.raises(BadValueError):
        stretch_noise_sigma({"method": "minmax"})


def test_library_physical_sky_is_uncensored_and_the_same_seed_gives_the_same_library(tmp_path):
    pytest.importorskip("torch")
    from astropy.table import Table

    from galearn.config import GanConfig
    from galearn.gan import run_sample, run_train
    from galearn.store import Workspace, open_sample, write_sample

    physical = noisy_stamps(n=24)
    stretch = AsinhStretch.fit(physical, noise_sigma=SIGMA)
    d = {**stretch.to_dict(), "noise_sigma": SIGMA.tolist(), "softening_sigmas": 2.0}
    ws = Workspace(tmp_path / "ws")
    cat = Table({"ID": np.arange(24) + 1, "truth_class": np.where(np.arange(24) % 3 == 0, "a", "b")})
    write_sample(ws.sample, stretch.forward(physical), cat, physical=physical, bands=BANDS, kind="mock",
                 pixel_scale_arcsec=0.06, stretch=d, columns={"id": "ID"})
    cfg = GanConfig(steps=2, batch_size=8, z_dim=8, channels=4, checkpoint_every=2, grid_every=2, random_state=3)
    run_train(ws, cfg, progress=False)

    run_sample(ws, dataclasses.replace(cfg, n_per_class=6), progress=False)
    lib = open_sample(ws.library)
    st, ph = lib.read("stretched"), lib.read("physical")
    floor = st == 0
    assert floor.any() and np.all(ph[floor] <= 0) and np.mean(ph[floor] < 0) > 0.99
    np.testing.assert_allclose(ph[~floor], stretch.inverse(st)[~floor], rtol=1e-6)
    assert "7003" in lib.extra["physical"] and "stored noise_sigma" in lib.extra["physical"]
    assert "sky_scatter" in lib.extra["physical"]  # the default: each stamp's censored sky at its drawn depth

    run_sample(ws, dataclasses.replace(cfg, n_per_class=6), progress=False)
    again = open_sample(ws.library)
    np.testing.assert_array_equal(again.read("stretched"), st)
    np.testing.assert_array_equal(again.read("physical"), ph)
    run_sample(ws, dataclasses.replace(cfg, n_per_class=6, random_state=4), progress=False)
    assert not np.array_equal(open_sample(ws.library).read("physical"), ph)
