"""gan.balancing: repeated minority cuts, the reweighted comparator, paired gains."""

from __future__ import annotations

import numpy as np
import pytest

from galearn.errors import BadValueError
from galearn.gan.evaluate import balancing_metrics


def _two_classes(n_a: int, n_b: int, seed: int, shift: float = 0.35, dim: int = 20):
    rng = np.random.default_rng(seed)
    f = np.concatenate([rng.normal(0, 1, (n_a, dim)), rng.normal(0, 1, (n_b, dim)) + shift])
    return f, np.array(["a"] * n_a + ["b"] * n_b)


def test_realistic_minority_stamps_help_and_junk_does_not():
    f_train, y_train = _two_classes(200, 60, 0)
    f_test, y_test = _two_classes(100, 100, 1)
    good, y_good = _two_classes(0, 300, 2)  # new draws from the true minority distribution
    m = balancing_metrics(f_train, y_train, f_test, y_test, good, y_good, n_repeats=6, random_state=0)
    assert m["n_repeats"] == 6 and len(m["per_repeat"]["with_gan"]) == 6
    assert m["minority_class"] == "b" and m["n_train_minority_real"] == 20
    assert m["n_train_minority_generated"] == 180
    assert m["balanced_accuracy_with_gan"] > m["balanced_accuracy_reweighted"] > m["balanced_accuracy_real_only"] + 0.03
    gain = m["gain_with_gan_over_real_only"]
    assert gain["mean"] > 2 * gain["standard_error"] and gain["fraction_of_repeats_better"] >= 0.8
    assert set(m["std_over_repeats"]) == {"real_only", "reweighted", "with_gan"}

    junk = np.random.default_rng(3).normal(0, 1, (300, 20)) - 3.0  # "minority" stamps unlike the minority
    bad = balancing_metrics(f_train, y_train, f_test, y_test, junk, np.full(300, "b"), n_repeats=6, random_state=0)
    assert bad["balanced_accuracy_with_gan"] < m["balanced_accuracy_with_gan"] - 0.05
    # same seed, same numbers
    again = balancing_metrics(f_train, y_train, f_test, y_test, good, y_good, n_repeats=6, random_state=0)
    assert again["per_repeat"] == m["per_repeat"]


def test_equal_classes_name_a_minority_and_a_different_majority():
    f_train, y_train = _two_classes(80, 80, 0)
    f_test, y_test = _two_classes(40, 40, 1)
    gen, y_gen = _two_classes(100, 100, 2)
    m = balancing_metrics(f_train, y_train, f_test, y_test, gen, y_gen, n_repeats=2, random_state=0)
    assert m["minority_class"] == "a" and m["majority_class"] == "b"
    assert m["n_train_majority"] == 80 and m["n_train_minority_real"] == 8 and m["n_train_minority_generated"] == 72


def test_bad_repeats_refused():
    f, y = _two_classes(20, 10, 0)
    with pytest.raises(BadValueError, match="n_repeats"):
        balancing_metrics(f, y, f, y, f, y, n_repeats=0)
