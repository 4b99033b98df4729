"""GAN checkpoints: state dicts, optimiser state, step, RNG states; atomic writes.

A checkpoint ``WS/gan/ckpt-<step>.pt`` holds::

    {"G", "D", "G_ema": state_dicts, "opt_G", "opt_D": optimiser state_dicts,
     "step": int (steps done), "config": GanConfig as a dict, "version": str,
     "rng": {"torch": uint8 tensor, "numpy": [...], "python": [...]},
     "classes": [...], "bands": [...], "stamp_size": int, "condition": str,
     "n_bands": int, "seconds": float (training time so far)}

Everything is a tensor or a plain Python container, so the file loads with
``torch.load(path, weights_only=True)`` (no pickled code).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import BadValueError, MissingInputError
from ..store import atomic_path, checkpoint_path, list_checkpoints  # the store spells the file names

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "list_checkpoints", "rng_state", "set_rng_state",
           "checkpoint_path"]


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint with the highest step, or None."""
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def rng_state() -> dict:
    """torch / numpy (legacy global) / python RNG states as tensors and lists."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [int(py_state[0]), list(py_state[1]), py_state[2]],
    }


def set_rng_state(state: dict) -> None:
    """Restore the states saved by :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))


def save_checkpoint(path: Path, state: dict[str, Any], *, keep: int | None = 3) -> Path:
    """Write ``state`` atomically to ``path``; keep only the newest ``keep`` checkpoints."""
    path = Path(path)
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        torch.save(state, tmp)
    if keep is not None:
        for old in list_checkpoints(path.parent)[:-keep]:
            old.unlink(missing_ok=True)
    return path


def load_checkpoint(path: Path, *, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely (``weights_only=True``)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run `galearn gan train` first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise BadValueError(f"{path} is not a readable galearn GAN checkpoint: {exc}") from exc
