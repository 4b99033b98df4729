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

__all__ = ["central_crop", "prepare_batch", "band_mapping"]


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
        Band names of axis C, mapped to the network's channels by
        :func:`band_mapping`: for 3 channels to (R, G, B) in wavelength
        order, reddest to R (e.g. F160W -> R, F850LP -> G, F435W -> B; an
        R, G, B image stays as it is, see :func:`galearn.imaging.rgb_order`);
        for 1 channel (greyscale networks) the mean of the bands.
    backbone : Backbone
        Supplies the channel count, the normalisation (mean, std) and the device.
    input_size : int or None
        Side (pixels) the stamps are resized to (bilinear, antialiased);
        None keeps the native size.
    crop : float
        Central fraction of the stamp side kept before resizing (1: all).

    Returns
    -------
    torch.Tensor
        ``(N, backbone.in_chans, input_size, input_size)`` float32 on
        ``backbone.device``, channels-last.
    """
    x = torch.as_tensor(np.asarray(stamps, dtype=np.float32) if not torch.is_tensor(stamps) else stamps)
    if x.ndim != 4:
        raise BadValueError(f"stamps must be (N, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != len(bands):
        raise BadValueError(f"stamps have {x.shape[1]} channels but {len(bands)} bands were named: {bands}")
    in_chans = int(getattr(backbone, "in_chans", 3))
    band_mapping(bands, in_chans)  # checks the channel count
    x = x.to(backbone.device, dtype=torch.float32, non_blocking=True)
    x = torch.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0).clamp_(0.0, 1.0)
    x = x.mean(dim=1, keepdim=True) if in_chans == 1 else x[:, rgb_order(list(bands))]
    if crop != 1.0:
        x = central_crop(x, crop)
    if input_size is not None and int(input_size) != x.shape[-1]:
        size = int(input_size)
        if size < 16:
            raise BadValueError(f"input_size must be >= 16 pixels, got {input_size}")
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
    mean = torch.tensor(backbone.mean, device=x.device, dtype=x.dtype).view(1, in_chans, 1, 1)
    std = torch.tensor(backbone.std, device=x.device, dtype=x.dtype).view(1, in_chans, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


def band_mapping(bands: list[str], in_chans: int = 3) -> str:
    """The rule that maps the stamp's bands to a network's ``in_chans`` input channels, in words.

    3 channels: the reddest, middle and bluest band to R, G, B
    (:func:`galearn.imaging.rgb_order`; with fewer bands some repeat).
    1 channel: the mean of all bands (after the stretch).

    Raises
    ------
    BadValueError
        Any other channel count.
    """
    bands = list(bands)
    if in_chans == 3:
        r, g, b = (bands[i] for i in rgb_order(bands))
        return f"RGB: R={r}, G={g}, B={b} (reddest band to R)"
    if in_chans == 1:
        return f"mean of the bands {', '.join(bands)} (after the stretch) as the one channel"
    raise BadValueError(
        f"the backbone takes {in_chans} input channels; galearn maps bands to 3 (RGB) or 1 (mean of the bands)"
    )
