"""Generator and projection discriminator for multi-band galaxy stamps.

Both networks work on ``(N, C, H, W)`` tensors with ``H == W`` a power of two
>= 32 and any number of bands ``C``. Images live in ``[-1, 1]`` inside the
networks; :func:`to_stretched` / :func:`from_stretched` convert to and from the
stretched ``0..1`` range of :mod:`galearn.survey.stretch`.

* :class:`Generator`: latent ``z`` -> linear -> ``(ch_0, 4, 4)`` -> up-sampling
  blocks (nearest x2, 3x3 conv with reflect padding, conditional BatchNorm whose gain and bias come
  from a class embedding, ReLU) -> 3x3 conv -> ``tanh``.
* :class:`Discriminator`: strided 4x4 convolutions with spectral normalisation
  and LeakyReLU down to 4x4, global sum pooling, then the projection output of
  Miyato & Koyama (2018): ``psi(h) + <embed(y), h>``.

Channel widths: the block at resolution ``r`` has ``channels * min(8, stamp_size // r)``
feature maps, so ``channels`` is the width of the highest-resolution block.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from ..errors import BadValueError

__all__ = ["Generator", "Discriminator", "to_stretched", "from_stretched", "check_stamp_size", "n_parameters"]


def check_stamp_size(stamp_size: int) -> int:
    """Return the number of x2 resolution steps between 4x4 and ``stamp_size``.

    Raises :class:`BadValueError` unless ``stamp_size`` is a power of two >= 32.
    """
    size = int(stamp_size)
    if size < 32 or size & (size - 1):
        raise BadValueError(f"GAN stamp size must be a power of two >= 32 pixels, got {stamp_size}")
    return int(math.log2(size)) - 2


def _widths(stamp_size: int, channels: int) -> list[int]:
    # Width at resolutions 4, 8, ..., stamp_size.
    n = check_stamp_size(stamp_size)
    res = [4 * 2**i for i in range(n + 1)]
    return [int(channels * min(8, stamp_size // r)) for r in res]


def to_stretched(x: torch.Tensor) -> torch.Tensor:
    """Network range ``[-1, 1]`` -> stretched range ``[0, 1]``."""
    return (x + 1.0) * 0.5


def from_stretched(x: torch.Tensor) -> torch.Tensor:
    """Stretched range ``[0, 1]`` -> network range ``[-1, 1]``."""
    return x * 2.0 - 1.0


def n_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine parameters, then a per-class gain and bias."""

    def __init__(self, num_features: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(n_classes, num_features)
        self.bias = nn.Embedding(n_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class _GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int) -> None:
        super().__init__()
        # Reflect padding: zero padding after every x2 up-sampling gives G a border
        # signal at each resolution; at 16x16 it surfaced as a bright square frame
        # 64/16 = 4 pixels inside the stamp edge (docs/gan.md).
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")
        self.bn = ConditionalBatchNorm2d(c_out, n_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.relu(self.bn(self.conv(x), y))


class Generator(nn.Module):
    """Class-conditional generator: ``(z (N, z_dim), y (N,) int64) -> (N, C, H, W)`` in ``[-1, 1]``.

    Parameters
    ----------
    n_classes : int
        Number of condition classes.
    n_bands : int
        Output channels ``C``.
    stamp_size : int
        Output side ``H == W`` (pixels), a power of two >= 32.
    z_dim : int
        Latent dimension.
    channels : int
        Width of the highest-resolution block (the 4x4 block has 8x this).
    """

    def __init__(self, n_classes: int, n_bands: int, stamp_size: int = 64, *, z_dim: int = 128, channels: int = 32) -> None:
        super().__init__()
        self.n_classes, self.n_bands, self.stamp_size, self.z_dim = int(n_classes), int(n_bands), int(stamp_size), int(z_dim)
        widths = _widths(stamp_size, channels)
        self.fc = nn.Linear(z_dim, widths[0] * 16)
        self.bn0 = ConditionalBatchNorm2d(widths[0], n_classes)
        self.blocks = nn.ModuleList(_GBlock(a, b, n_classes) for a, b in zip(widths[:-1], widths[1:]))
        self.to_img = nn.Conv2d(widths[-1], n_bands, 3, padding=1, padding_mode="reflect")
        self._w0 = widths[0]

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self._w0, 4, 4)
        h = F.relu(self.bn0(h, y))
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.to_img(h))


class Discriminator(nn.Module):
    """Projection discriminator with spectral normalisation: ``(x, y) -> (N,)`` logits.

    Parameters
    ----------
    n_classes, n_bands, stamp_size, channels
        As for :class:`Generator` (``channels`` is the width of the first,
        highest-resolution block).
    """

    def __init__(self, n_classes: int, n_bands: int, stamp_size: int = 64, *, channels: int = 32) -> None:
        super().__init__()
        widths = _widths(stamp_size, channels)[::-1]  # stamp_size/2 ... 4
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(n_bands, widths[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.linear = spectral_norm(nn.Linear(widths[-1], 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, widths[-1]))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.features(x).sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)
