"""Network input of a backbone: stretched stamps -> resized, normalised RGB tensors.

Shared by feature extraction (:mod:`galearn.features.extract`) and
self-supervised adaptation (:mod:`galearn.features.adapt`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import BadValueError
from ..imaging import rgb_order
from .backbones import Backbone

__all__ = ["central_crop", "prepare_batch"]


def central_crop(x: torch.Tensor, fraction: float) -> torch.Tensor:
    """The central ``fraction`` of the side of ``x`` (..., H, W), rounded to whole pixels (at least 4)."""
    h, w = x.shape[-2:]
    ch, cw = max(4, int(round(h * fraction))), max(4, int(round(w * fraction)))
    if ch >= h and cw >= w:
        return x
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top : top + ch, left : left + cw]


def prepare_batch(
    stamps: np.ndarray | torch.Tensor,
    bands: list[str],
    backbone: Backbone,
    *,
    input_size: int | None = None,
    crop: float = 1.0,
) -> torch.Tensor:
    """Stretched stamps -> normalised network input.

    Parameters
    ----------
    stamps : array (N, C, H, W)
        Stretched stamps, float, roughly 0..1 (values are clipped to 0..1).
    bands : list of str
        Band names of axis C; mapped to the network's (R, G, B) in wavelength
        order, reddest to R (e.g. F160W -> R, F850LP -> G, F435W -> B; an
        R, G, B image stays as it is), see :func:`galearn.imaging.rgb_order`.
    backbone : Backbone
        Supplies the normalisation (mean, std) and the device.
    input_size : int or None
        Side (pixels) the stamps are resized to (bilinear, antialiased);
        None keeps the native size.
    crop : float
        Central fraction of the stamp side kept before resizing (1: all).

    Returns
    -------
    torch.Tensor
        ``(N, 3, input_size, input_size)`` float32 on ``backbone.device``,
        channels-last.
    """
    x = torch.as_tensor(np.asarray(stamps, dtype=np.float32) if not torch.is_tensor(stamps) else stamps)
    if x.ndim != 4:
        raise BadValueError(f"stamps must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != len(bands):
        raise BadValueError(f"stamps have {x.shape[1]} channels but {len(bands)} bands were named: {bands}")
    x = x.to(backbone.device, dtype=torch.float32, non_blocking=True)
    x = x[:, rgb_order(list(bands))]
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    if crop != 1.0:
        x = central_crop(x, crop)
    if input_size is not None and int(input_size) != x.shape[-1]:
        size = int(input_size)
        if size < 16:
            raise BadValueError(f"input_size must be >= 16 pixels, got {input_size}")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    mean = torch.tensor(backbone.mean, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    std = torch.tensor(backbone.std, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)
