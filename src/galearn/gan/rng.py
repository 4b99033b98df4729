"""Seeded random draws shared by the generator and its sky noise."""

from __future__ import annotations

import torch

__all__ = ["seeded_draw"]


def seeded_draw(draw, *args, gen: torch.Generator | None, device: torch.device, **kwargs) -> torch.Tensor:
    """``draw(*args, **kwargs)`` (``torch.randn`` / ``rand`` / ``randint``) on ``device``: from ``gen`` (seeded,
    drawn on the generator's own device, then moved) or, without one, torch's global RNG."""
    if gen is None:
        return draw(*args, device=device, **kwargs)
    return draw(*args, generator=gen, device=gen.device, **kwargs).to(device)
