"""The learning rates' linear decay (gan.lr_decay_start / gan.lr_decay_end)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from test_gan import TINY, assert_resume_exact, make_workspace  # noqa: E402
from test_gan_projected import _networks, _stamps  # noqa: E402


def test_learning_rates_fall_linearly_to_zero_and_then_the_networks_stop_moving():
    from galearn.gan.loop import lr_scale_at, train_step

    assert [lr_scale_at(s, 0, 0) for s in (0, 10**6)] == [1.0, 1.0]
    cfg = dataclasses.replace(TINY, d_steps=1, lr_decay_start=2, lr_decay_end=4)
    nets = _networks(cfg)
    stamps, y = _stamps()
    expected = [1.0, 1.0, 1.0, 0.5, 0.0, 0.0]
    for step, scale in enumerate(expected):
        before = {name: [p.detach().clone() for p in nets[name].parameters()] for name in ("G", "D")}
        train_step(step, stamps=stamps, y_all=y, cfg=cfg, device=torch.device("cpu"), **nets)
        assert nets["opt_G"].param_groups[0]["lr"] == pytest.approx(cfg.lr_g * scale)
        assert nets["opt_D"].param_groups[0]["lr"] == pytest.approx(cfg.lr_d * scale)
        for name, params in before.items():
            moved = any(not torch.equal(a, b) for a, b in zip(params, nets[name].parameters()))
            assert moved == (scale > 0), (step, name)


def test_resume_is_exact_across_the_decay(tmp_path):
    # The decay starts before the checkpoint at step 2 and ends after it: the schedule is a function of the step.
    from galearn.errors import BadValueError
    from galearn.gan import run_train

    cfg = dataclasses.replace(TINY, lr_decay_start=1, lr_decay_end=5)
    ws, ckpt = assert_resume_exact(tmp_path, cfg)
    assert (ckpt["config"]["lr_decay_start"], ckpt["config"]["lr_decay_end"]) == (1, 5)
    # Another schedule is another run: resuming with it is refused, the checkpoint kept.
    with pytest.raises(BadValueError, match="lr_decay_end"):
        run_train(ws, dataclasses.replace(cfg, lr_decay_end=8, steps=6), resume=True, progress=False)
    assert sorted(p.name for p in ws.gan.glob("ckpt-*.pt"))[-1] == "ckpt-000004.pt"


@pytest.mark.parametrize("start, end", [(5, 3), (4, 4), (3, 0), (-1, 4)])
def test_a_bad_schedule_is_refused_with_the_options_named(tmp_path, capsys, start, end):
    from galearn.cli import main

    ws = make_workspace(tmp_path, n=20)
    code = main(["gan", "train", "-w", str(ws.root), f"gan.lr_decay_start={start}", f"gan.lr_decay_end={end}"])
    err = capsys.readouterr().err
    assert code == 2 and "lr_decay" in err and "Traceback" not in err
    assert not list(ws.gan.glob("ckpt-*.pt"))
