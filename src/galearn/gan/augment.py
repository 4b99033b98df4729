"""Differentiable augmentation for the discriminator (DiffAugment, Zhao et al. 2020).

The same random transformation family is applied to real and generated
stamps, inside :meth:`galearn.gan.loss.GanLoss.run_D`, so the generator
cannot learn the augmentation. Policies (comma-separated names):

``flip``
    random horizontal and vertical flips (a true symmetry of galaxy images);
``rot90``
    random multiples of 90 degrees (a true symmetry);
``translation``
    random integer circular shifts (per-stamp ``torch.roll``) of up to 1/16
    of the stamp side in x and y; no fill value, so no artificial edge.
``translation32``
    the same, up to 1/32 of the side (2 pixels at 64): real galaxies sit at
    the stamp centre, and a large shift lets G place sources off-centre.
``translation-half``
    ``translation`` applied to each stamp with probability 1/2: D also
    sees unshifted stamps, so where the light sits (the real centroids'
    scatter, 0.5 px on the galaxy-zoo-dev stamps) is not hidden from it.
    Integer shifts with probability below 1 do not leak (Karras et al.
    2020, ADA): G is not taught to shift its galaxies.
``cutout``
    one square of half the stamp side, at a random centre (clipped at the
    border), set to the stamp's own per-band median -- its sky level, so the
    hole is a patch of blank sky rather than DiffAugment's mid-grey square.
    Hides part of every galaxy from D, a regulariser against a D that
    separates a few hundred real stamps too easily -- but it LEAKS: applied
    to every stamp, G learns to paint the noiseless hole (flat dark squares
    in up to 7.5 % of 30-CPU-minute libraries, docs/gan-experiments.md round 15). Kept
    to repeat those runs; not part of ``auto``.

There is deliberately no colour/brightness policy: band ratios (colours) are
what the UVJ evaluation depends on, so they must not be augmented away.

Every function takes a ``torch.Generator`` so the augmentation of a step is
a function of the step's seed (exact resume).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import BadValueError

__all__ = ["POLICIES", "AUTO_POLICY", "parse_policy", "resolve_policy", "diff_augment"]


def _draw_int(low: int, high: int, shape: tuple, gen: torch.Generator, device: torch.device) -> torch.Tensor:
    # Drawn on the CPU generator whatever the device (the same draws on CPU and CUDA: exact resume).
    return torch.randint(low, high, shape, generator=gen, device="cpu").to(device)


def _pixel_grid(h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column index of every pixel, each ``(1, H, W)``."""
    gy, gx = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return gy[None], gx[None]


def _flip(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    fx = torch.rand(n, generator=gen, device="cpu").to(x.device) < 0.5
    fy = torch.rand(n, generator=gen, device="cpu").to(x.device) < 0.5
    x = torch.where(fx[:, None, None, None], x.flip(3), x)
    return torch.where(fy[:, None, None, None], x.flip(2), x)


def _rot90(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if x.shape[-1] != x.shape[-2]:
        raise BadValueError(f"rot90 augmentation needs square stamps, got {tuple(x.shape[-2:])}")
    k = _draw_int(0, 4, (x.shape[0],), gen, x.device)
    out = x
    for quarter in (1, 2, 3):
        rotated = torch.rot90(x, quarter, dims=(2, 3))
        out = torch.where((k == quarter)[:, None, None, None], rotated, out)
    return out


def _translation(x: torch.Tensor, gen: torch.Generator, ratio: float = 1 / 16) -> torch.Tensor:
    # Circular integer shift per stamp (a per-sample ``torch.roll``). Galaxy
    # stamps have noise backgrounds, so wrapping is harmless -- whereas a
    # constant fill gives D a sharp edge ``shift`` pixels inside the border
    # that no real stamp has, and G learnt to paint that frame.
    n, _, h, w = x.shape
    sy, sx = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    ty = _draw_int(-sy, sy + 1, (n, 1, 1), gen, x.device)
    tx = _draw_int(-sx, sx + 1, (n, 1, 1), gen, x.device)
    gy, gx = _pixel_grid(h, w, x.device)
    src_y = torch.remainder(gy - ty, h)
    src_x = torch.remainder(gx - tx, w)
    flat = x.reshape(n, x.shape[1], -1)
    index = (src_y * w + src_x).reshape(n, 1, -1).expand(-1, x.shape[1], -1)
    return torch.gather(flat, 2, index).reshape(x.shape)


def _translation32(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    return _translation(x, gen, ratio=1 / 32)


def _translation_half(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    # ``translation``'s shifts on a random half of the stamps, the rest as they are: D then also sees where
    # the light sits in the stamp, which shifts of up to 4 pixels on every stamp hide.
    keep = _draw_int(0, 2, (len(x), 1, 1, 1), gen, x.device).bool()
    return torch.where(keep, x, _translation(x, gen))


def _cutout(x: torch.Tensor, gen: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    n, c, h, w = x.shape
    half_y, half_x = h * ratio / 2, w * ratio / 2
    cy = _draw_int(0, h, (n, 1, 1), gen, x.device)
    cx = _draw_int(0, w, (n, 1, 1), gen, x.device)
    gy, gx = _pixel_grid(h, w, x.device)
    hole = ((gy - cy).abs() < half_y) & ((gx - cx).abs() < half_x)  # (N, H, W)
    # Filled with the stamp's own per-band median (its sky: galaxies cover a small part of a
    # stamp), detached -- a constant, as DiffAugment's zero fill is.
    sky = x.detach().reshape(n, c, -1).median(dim=2).values[:, :, None, None]
    return torch.where(hole[:, None], sky.to(x.dtype), x)


POLICIES: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "flip": _flip,
    "rot90": _rot90,
    "translation": _translation,
    "translation32": _translation32,
    "translation-half": _translation_half,
    "cutout": _cutout,
}


#: What ``gan.diffaugment = "auto"`` is for each discriminator. The projected D sees no flips or turns, so
#: it sees orientation: with them, 30-CPU-minute libraries leaned one way (axial resultant 0.64-0.97
#: against 0.07-0.13 real); without, 0.09-0.41 (docs/gan-experiments.md rounds 13-14). The short SNGAN run
#: keeps all three (its libraries are not flagged).
AUTO_POLICY = {"sngan": "flip,rot90,translation", "projected": "translation"}


def resolve_policy(policy: str | None, discriminator: str) -> str:
    """``policy``, or for ``"auto"`` the :data:`AUTO_POLICY` of ``discriminator``."""
    if policy != "auto":
        return policy or ""
    if discriminator not in AUTO_POLICY:
        raise BadValueError(f"gan.diffaugment = auto: no policy for gan.discriminator = {discriminator!r}")
    return AUTO_POLICY[discriminator]


def parse_policy(policy: str | None) -> list[str]:
    """Split ``"flip,rot90,translation"`` into known policy names (``""``/None: none)."""
    if not policy:
        return []
    names = [p.strip() for p in str(policy).split(",") if p.strip()]
    for name in names:
        if name not in POLICIES:
            raise BadValueError(
                f"unknown diffaugment policy {name!r} in gan.diffaugment={policy!r}; "
                f"known: auto (alone) or {', '.join(POLICIES)} (colour policies are not offered: colours matter)"
            )
    return names


def diff_augment(x: torch.Tensor, policy: list[str] | str | None, gen: torch.Generator) -> torch.Tensor:
    """Apply the named policies, in order, to a batch ``(N, C, H, W)`` in ``[-1, 1]``.

    Differentiable with respect to ``x`` (flips, rotations and gathers only).
    """
    names = parse_policy(policy) if isinstance(policy, str) or policy is None else policy
    for name in names:
        x = POLICIES[name](x, gen)
    return x
