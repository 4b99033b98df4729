"""Rare kinds in the mock field (truth_rare): drawn from their own streams, nothing else changes."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("galsim")

from astropy.io import fits  # noqa: E402
from astropy.table import Table  # noqa: E402

from galearn.config import SimulateConfig  # noqa: E402
from galearn.errors import BadValueError  # noqa: E402
from galearn.mock import simulate_field  # noqa: E402
from galearn.mock.field import BANDS  # noqa: E402
from galearn.mock.rare import NONE, RARE_KINDS, assign_rare  # noqa: E402

CFG = dict(n_galaxies=60, n_stars=3, random_state=4, density_per_arcmin2=20.0, n_jobs=1)


@pytest.fixture(scope="module")
def fields(tmp_path_factory):
    out = tmp_path_factory.mktemp("mock_rare")
    with_rare = simulate_field(out / "rare", SimulateConfig(rare_fraction=0.2, **CFG), progress=False)
    without = simulate_field(out / "plain", SimulateConfig(rare_fraction=0.0, **CFG), progress=False)
    return with_rare, without


def test_rare_kinds_and_unchanged_population(fields):
    with_rare, without = fields
    a = Table.read(with_rare["catalog"], character_as_bytes=False)
    b = Table.read(without["catalog"], character_as_bytes=False)
    kinds = np.asarray(a["truth_rare"]).astype(str)
    assert set(np.unique(np.asarray(b["truth_rare"]).astype(str))) == {NONE}
    counts = {k: int(np.count_nonzero(kinds == k)) for k in RARE_KINDS}
    assert sum(counts.values()) == 12 and all(v == 2 for v in counts.values()), counts
    assert (kinds[-3:] == NONE).all()  # stars are never rare
    assert (np.asarray(a["truth_class"])[kinds == "lens"] == "elliptical").all()
    assert np.isin(np.asarray(a["truth_class"])[kinds == "ring"], ["spiral", "irregular"]).all()
    assert a.colnames == b.colnames
    for name in a.colnames:
        if name != "truth_rare":
            np.testing.assert_array_equal(np.asarray(a[name]), np.asarray(b[name]), err_msg=name)


def test_pixels_change_only_around_rare_galaxies(fields):
    with_rare, without = fields
    cat = Table.read(with_rare["catalog"], character_as_bytes=False)
    rare = np.asarray(cat["truth_rare"]).astype(str) != NONE
    x = np.asarray(cat["X_IMAGE"])[rare] - 1
    y = np.asarray(cat["Y_IMAGE"])[rare] - 1
    for band in BANDS:
        A = fits.getdata(with_rare[band])
        B = fits.getdata(without[band])
        changed = np.argwhere(A != B)  # (row, col)
        assert len(changed) > 0, band
        near = np.zeros(len(changed), bool)
        for xi, yi in zip(x, y):  # every changed pixel lies within 5.4" (90 px) of a rare galaxy
            near |= (np.abs(changed[:, 1] - xi) <= 90) & (np.abs(changed[:, 0] - yi) <= 90)
        assert near.all(), band
        # the rare signal is there: more flux around the rare galaxies
        assert A.sum() > B.sum()


def test_assign_is_seeded_and_bounded(fields):
    with_rare, _ = fields
    cat = Table.read(with_rare["catalog"], character_as_bytes=False)
    one = assign_rare(cat, 60, 0.2, 4)
    two = assign_rare(cat, 60, 0.2, 4)
    np.testing.assert_array_equal(one["kinds"], two["kinds"])
    assert (assign_rare(cat, 60, 0.0, 4)["kinds"] == NONE).all()
    with pytest.raises(BadValueError, match="rare_fraction"):
        simulate_field(with_rare["catalog"].parent / "bad", SimulateConfig(rare_fraction=0.5, **CFG))
