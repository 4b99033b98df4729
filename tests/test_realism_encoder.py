"""The ``self-supervised`` realism space: an encoder learnt from the real training stamps alone."""

from __future__ import annotations

import dataclasses
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from galearn.config import GanConfig, RunConfig  # noqa: E402
from galearn.features.adapt import AugmentSettings, augment_views  # noqa: E402

from test_realism import _evaluation_workspace, _fresh_real, pooled_features  # noqa: E402


def test_exact_views_hold_the_stamps_own_pixels():
    x = torch.rand(6, 3, 16, 16)
    exact = AugmentSettings(right_angles=True, whole_pixels=True, max_shift=0.0, scale=(1.0, 1.0),
                            blur_sigma=(0.0, 0.0), noise_sigma=(0.0, 0.0))
    views = augment_views(x, exact, torch.Generator().manual_seed(0))
    symmetries = [torch.rot90(v, k, dims=(-2, -1)) for v in (x, x.flip(-1)) for k in range(4)]
    for i in range(len(x)):  # each view is one of the 8 symmetries of its stamp, pixel for pixel
        assert min(float((views[i] - s[i]).abs().max()) for s in symmetries) < 1e-5
    shifted = augment_views(x, dataclasses.replace(exact, max_shift=0.2), torch.Generator().manual_seed(1))
    for i in range(len(x)):  # shifted by whole pixels: every value is one of the stamp's own
        gap = (shifted[i].reshape(3, -1, 1) - x[i].reshape(3, 1, -1)).abs().min(dim=-1).values
        assert float(gap.max()) < 1e-5
    free = augment_views(x, dataclasses.replace(exact, right_angles=False), torch.Generator().manual_seed(0))
    assert min(float((free[0] - s[0]).abs().max()) for s in symmetries) > 1e-3  # an arbitrary angle interpolates
    assert "right_angles" not in AugmentSettings().to_dict()  # galearn adapt's fingerprints are those of before


def _evaluate(ws, space="self-supervised", seed=0):
    from galearn.gan import run_evaluate

    cfg = dataclasses.replace(RunConfig(), gan=GanConfig(eval_morphology_n=0, condition="truth_class",
                                                         realism_space=space, random_state=seed, realism_draws=3))
    return run_evaluate(ws, cfg, feature_fn=pooled_features, progress=False)


def test_self_supervised_space_sits_at_the_baseline_for_real_and_far_for_shuffled_pixels(tmp_path):
    import json

    from galearn.store import Workspace

    ws = _evaluation_workspace(tmp_path / "real", _fresh_real(False))
    m = _evaluate(ws)
    settings = m["realism_space_settings"]
    train = json.loads(Workspace(ws.root).gan_split.read_text())["train"]
    # learnt from the training rows but those of the baseline, which it never sees (like the held-out and generated)
    assert m["realism_space"] == "self-supervised" and settings["trained_on_n"] == len(train) - settings["baseline_pool_n"]
    assert m["n_eval"] <= settings["baseline_pool_n"] <= len(train) // 2 + 2
    assert settings["dim"] == 3 * 96 and settings["steps"] == [settings["encoder"]["epochs"]] * 3  # < 128 stamps: 1 step / epoch
    assert m["fid"] < 2.0 * m["fid_real_baseline"], m
    assert m["precision"] > 0.6 and m["recall"] > 0.6
    # kept in the workspace and reused: not trained again, the same numbers
    encoders = [ws.gan_realism_encoder(k) for k in range(3)]
    stamps = [e.stat().st_mtime_ns for e in encoders]
    again = _evaluate(ws)
    assert [e.stat().st_mtime_ns for e in encoders] == stamps and again["fid"] == m["fid"]
    # trained again from scratch with the same seed: the same encoder
    os.remove(encoders[1])
    assert _evaluate(ws)["fid"] == pytest.approx(m["fid"], rel=1e-6)

    shuffled = _evaluation_workspace(tmp_path / "shuffled", _fresh_real(True))
    s = _evaluate(shuffled)
    assert s["fid"] > 10 * s["fid_real_baseline"] and s["precision"] < 0.5, s  # measured 63x, 0.31
