"""Hinge loss for the conditional GAN, with augmentation in one place.

:class:`GanLoss` runs G and D. Every stamp shown to D -- real or generated --
goes through :meth:`GanLoss.run_D` (or, for a discriminator with a frozen
feature network, :meth:`GanLoss.project`), which applies the differentiable
augmentation first, so real and fake are augmented identically (STYLE.md §7).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..morphometry import power_bin_weights, profile_annulus_weights
from .augment import diff_augment, parse_policy

__all__ = ["GanLoss", "hinge_d_loss", "hinge_g_loss", "r1_penalty", "batch_log_power", "power_match_penalty",
           "pixel_match_penalty", "sky_level_penalty", "stamp_log_power", "stamp_power_penalty", "stamp_profile", "profile_match_penalty",
           "band_differences", "colour_power_penalty", "stamp_spectrum_profile", "random_directions",
           "joint_match_penalty", "smooth_projections", "mode_seeking_penalty", "ClassReference",
           "MATCH_DISTANCES"]


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``E[relu(1 - D(x))] + E[relu(1 + D(G(z)))]`` (Lim & Ye 2017; Miyato et al. 2018)."""
    return F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean()


def hinge_g_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    """``-E[D(G(z))]``."""
    return -logits_fake.mean()


def r1_penalty(logits_real: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """R1 gradient penalty ``E[||grad_x D(x)||^2]`` on real stamps (Mescheder et al. 2018).

    ``real`` must require gradients and ``logits_real`` be computed from it;
    the graph is kept (``create_graph``) so the penalty can be back-propagated
    into D's weights. Zero where D is locally flat around the real stamps.
    """
    (grad,) = torch.autograd.grad(logits_real.sum(), real, create_graph=True)
    return grad.square().sum(dim=(1, 2, 3)).mean()


def batch_log_power(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log10 of the batch-mean azimuthally averaged power spectrum of ``x`` ``(N, C, H, H)``: ``(C, n_bins)``.

    The same spectrum as :func:`galearn.morphometry.power_spectrum` (each
    stamp's mean removed, ``weights`` from
    :func:`galearn.morphometry.power_bin_weights`), averaged over the batch
    before the log; differentiable (``torch.fft``), in fp32.
    """
    return torch.log10(_power_map(x).mean(dim=0) @ weights + 1e-12)


def _power_map(x: torch.Tensor) -> torch.Tensor:
    """Each stamp's 2-D power ``|fft2(x - mean)|^2 / (H W)`` per band, flattened: ``(N, C, H*W)``, fp32."""
    x = x.float()
    n, c, h, w = x.shape
    f = torch.fft.fft2(x - x.mean(dim=(2, 3), keepdim=True))
    return (f.real.square() + f.imag.square()).reshape(n, c, h * w) / (h * w)


@functools.lru_cache(maxsize=16)
def _morphometry_weights(builder, size: int, device: torch.device) -> torch.Tensor:
    """``builder(size)``, a :mod:`galearn.morphometry` weight matrix, as fp32 on ``device``, built once per stamp
    size (read-only)."""
    return torch.from_numpy(builder(size)).to(device=device, dtype=torch.float32)


def _bin_weights(size: int, device: torch.device) -> torch.Tensor:
    """:func:`galearn.morphometry.power_bin_weights` on ``device`` (cached)."""
    return _morphometry_weights(power_bin_weights, size, device)


def power_match_penalty(fake: torch.Tensor, real: torch.Tensor | None = None, *,
                        target: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared difference (dex^2, over bands and the 8 radial bins) of the log power spectra of a generated and a real batch.

    An explicit spectral target (Holzschuh et al. 2022 compare these spectra):
    a discriminator on ImageNet features rewards pixel-scale texture that the
    real stamps do not have (docs/gan-experiments.md round 19); this term pulls the
    generated batch's spectrum -- the stamps D sees, sky noise included --
    to the real batch's of the same step (same classes), or to ``target``
    ``(C, 8)``, a log10 spectrum given instead (:meth:`ClassReference.log_power`).
    No gradient reaches ``real``.
    """
    weights = _bin_weights(fake.shape[-1], fake.device)
    if target is None:
        if real is None:
            raise ValueError("power_match_penalty: give the real batch or a target spectrum")
        with torch.no_grad():
            target = batch_log_power(real, weights)
    return (batch_log_power(fake, weights) - target).square().mean()


def pixel_match_penalty(fake_unclipped: torch.Tensor, real: torch.Tensor | None = None, *,
                        target_sorted: torch.Tensor | None = None) -> torch.Tensor:
    """1-D Wasserstein-1 distance between the per-band pixel values of a generated and a real batch, over the real
    batch's standard deviation (mean over bands).

    ``fake_unclipped``: the generated stamps before their clip to ``[-1, 1]``
    (network units, with their graph); ``real``: a real batch of the same
    shape, or ``target_sorted`` ``(C, N*H*W)``: the real values given instead,
    sorted per band (:meth:`ClassReference.sorted_pixels`). Both batches'
    values are sorted per band and compared quantile by
    quantile, the generated ones clipped as D sees them but with the clip's
    gradient passed straight through: a generated pixel clipped to black
    where the real quantile is brighter is still pulled up, so a generator
    cannot hide a too-dark sky at the floor (docs/gan-experiments.md round 20). The
    absolute (not squared) difference gives every quantile the same pull, so
    the faint sky is not drowned by the bright pixels of whichever galaxies
    the two batches hold. 0 when the batches hold the same values; no
    gradient reaches ``real``.
    """
    c = fake_unclipped.shape[1]
    if target_sorted is None:
        if real is None:
            raise ValueError("pixel_match_penalty: give the real batch or its sorted values")
        if fake_unclipped.shape != real.shape:
            raise ValueError(f"pixel_match_penalty: generated {tuple(fake_unclipped.shape)} and real "
                             f"{tuple(real.shape)} batches differ in shape")
        with torch.no_grad():
            target_sorted = torch.sort(real.float().transpose(0, 1).reshape(c, -1), dim=1).values
    elif target_sorted.shape != (c, fake_unclipped[:, 0].numel()):
        raise ValueError(f"pixel_match_penalty: sorted target {tuple(target_sorted.shape)} does not hold "
                         f"{c} bands x {fake_unclipped[:, 0].numel()} pixels")
    fake = fake_unclipped.float()
    fake = fake + (fake.clamp(-1.0, 1.0) - fake).detach()  # clipped values, unclipped gradient
    return _sorted_w1(fake.transpose(0, 1).reshape(c, -1), target_sorted)


def _sorted_w1(values: torch.Tensor, target_sorted: torch.Tensor, min_spread: float | torch.Tensor = 1e-4, *,
               below_only: bool = False) -> torch.Tensor:
    """Mean over rows of the 1-D Wasserstein-1 distance between ``values`` ``(F, M)`` and the ascending rows of
    ``target_sorted`` ``(F, M)``, each over its target row's standard deviation (at least ``min_spread``, one
    number or one per row ``(F,)``). ``below_only``: only the sorted values under the target of their rank count."""
    spread = target_sorted.std(dim=1).clamp(min=min_spread)
    gap = target_sorted - torch.sort(values, dim=1).values
    return ((gap.clamp(min=0.0) if below_only else gap.abs()).mean(dim=1) / spread).mean()


MATCH_DISTANCES = ("wasserstein", "energy")  # gan.g_match_distance: how the per-stamp terms compare two sets of values


def _energy_distance(values: torch.Tensor, y: torch.Tensor, target: torch.Tensor, target_y: torch.Tensor, *,
                     min_spread: float) -> torch.Tensor:
    """The energy distance (Szekely & Rizzo 2013) between the generated ``values`` ``(F, N)`` of classes ``y``
    ``(N,)`` and the ``target`` values ``(F, M)`` of classes ``target_y`` ``(M,)``, each class against its own, per
    row over the target row's standard deviation (at least ``min_spread``), mean over rows and stamps.

    Per generated stamp ``i``: ``2 mean_j |g_i - t_j| - mean_i' |g_i - g_i'| - mean_jj' |t_j - t_j'|`` over the
    targets and the OTHER generated stamps of its class: for two distributions far apart, twice their distance,
    about what :func:`_sorted_w1` reads (the same weight pulls about as hard). Sorted matching (:func:`_sorted_w1`) of a small
    batch is biased toward too narrow a distribution: its expected value is least when the generated values
    are narrower than the target's (16 stamps of two classes: at about 0.8 of the spread; N(0, 1) drawn 8 at a
    time: 0.75). This estimate's expectation is least exactly when each class's generated values are
    distributed as its target's (the energy score is strictly proper, Gneiting & Raftery 2007): the repulsion
    between a class's own stamps pays for their spread. A stamp alone in its class has no such partner and is
    left out (if every stamp is alone, none is repelled). ``target`` takes no gradient.
    """
    same_class = (y[:, None] == y[None, :]) & ~torch.eye(len(y), dtype=torch.bool, device=y.device)  # (N, N)
    with torch.no_grad():
        to_target = (y[:, None] == target_y[None, :]).to(values.dtype)  # (N, M)
        n_target = to_target.sum(dim=1)
        target_spread = torch.zeros(target.shape[0], int(max(y.max(), target_y.max())) + 1,
                                    dtype=values.dtype, device=values.device)  # (F, classes): mean |t_j - t_j'|
        for k in torch.unique(target_y).tolist():  # a loop over classes, not stamps
            ranked = torch.sort(target[:, target_y == k], dim=1).values
            m = ranked.shape[1]
            if m > 1:  # sum over pairs j < j' of t_(j') - t_(j) = sum_j (2 j - m + 1) t_(j)
                rank_weight = 2 * torch.arange(m, device=values.device, dtype=values.dtype) - m + 1
                target_spread[:, k] = 2 * (ranked * rank_weight).sum(dim=1) / (m * (m - 1))
    cross = ((values[:, :, None] - target[:, None, :]).abs() * to_target).sum(dim=2) / n_target.clamp(min=1)
    n_own = same_class.sum(dim=1)
    own = ((values[:, :, None] - values[:, None, :]).abs() * same_class).sum(dim=2) / n_own.clamp(min=1)
    counted = (n_target > 0) & (n_own > 0)
    if not counted.any():
        counted = n_target > 0
    per_stamp = 2 * cross - own - target_spread[:, y]  # (F, N)
    spread = target.std(dim=1).clamp(min=min_spread)
    return ((per_stamp * counted).sum(dim=1) / counted.sum().clamp(min=1) / spread).mean()


def stamp_log_power(x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """log10 of each stamp's own azimuthally averaged power spectrum: ``(N, C, n_bins)``.

    :func:`galearn.morphometry.power_spectrum` in torch (differentiable,
    fp32): each stamp's mean removed, ``weights`` from
    :func:`galearn.morphometry.power_bin_weights`.
    """
    return torch.log10(_power_map(x) @ weights + 1e-12)


def stamp_power_penalty(fake: torch.Tensor, real: torch.Tensor | None = None, *,
                        target_sorted: torch.Tensor | None = None,
                        distance: str = "wasserstein", y: torch.Tensor | None = None,
                        target: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """1-D Wasserstein-1 distance between the stamps' own log power spectra of a generated and a real batch, per
    band and radial bin, over the real values' standard deviation (mean over the ``C x 8`` bins).

    :func:`power_match_penalty` matches the log of the batch-MEAN spectrum,
    which bright, large galaxies dominate: a batch of uniformly middling
    spectra can match it while each stamp's spectrum is off (docs/gan-experiments.md
    round 21: generated mid-frequency power +0.8 sd, with 0.4 of the real
    spread). This term compares the distributions of the per-stamp values.
    ``target_sorted`` ``(C * 8, N)``: the real values given instead of
    ``real``, ascending per row (:meth:`ClassReference.sorted_stamp_power`).
    A spread under 0.05 dex counts as 0.05 dex. No gradient reaches ``real``.
    ``distance = "energy"`` (``gan.g_match_distance``): the energy distance
    of each class's values instead (:func:`_energy_distance`; ``y``: the
    generated stamps' classes, ``target``: :meth:`ClassReference.class_values`).
    """
    weights = _bin_weights(fake.shape[-1], fake.device)
    return _stamp_statistic_penalty(lambda x: stamp_log_power(x, weights), fake, real, target_sorted,
                                    min_spread=0.05, name="stamp_power_penalty",  # 0.05 dex: near-identical stamps
                                    distance=distance, y=y, target=target)


def stamp_profile(x: torch.Tensor) -> torch.Tensor:
    """Each stamp's azimuthally averaged profile, :func:`galearn.morphometry.radial_profile` in torch
    (differentiable, fp32): the mean value in 8 annuli about the stamp centre, ``(N, C, 8)``."""
    x = x.float()
    n, c, h, w = x.shape
    return x.reshape(n, c, h * w) @ _morphometry_weights(profile_annulus_weights, h, x.device)


def profile_match_penalty(fake: torch.Tensor, real: torch.Tensor | None = None, *,
                          target_sorted: torch.Tensor | None = None,
                          distance: str = "wasserstein", y: torch.Tensor | None = None,
                          target: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """1-D Wasserstein-1 distance between the stamps' own light profiles (:func:`stamp_profile`) of a generated
    and a real batch, per band and annulus, over the real values' standard deviation (mean over the ``C x 8``).

    The spectral terms let G trade the light profile for the matched texture:
    trained twice as long, the profiles drift from the real ones while the
    spectra come nearer (docs/gan-experiments.md round 32). This term holds each annulus's
    distribution of surface brightness -- brightness, size and concentration --
    to the real one. ``target_sorted`` ``(C * 8, N)``: the real values given
    instead of ``real`` (:meth:`ClassReference.sorted_stamp_profile`). A spread
    under 0.01 (network units, 0.5 % of the stretched range) counts as 0.01.
    ``distance``, ``y``, ``target``: as :func:`stamp_power_penalty`.
    """
    return _stamp_statistic_penalty(stamp_profile, fake, real, target_sorted, min_spread=0.01,
                                    name="profile_match_penalty", distance=distance, y=y, target=target)


def _stamp_statistic_penalty(statistic, fake: torch.Tensor, real: torch.Tensor | None,
                             target_sorted: torch.Tensor | None, *, min_spread: float, name: str,
                             distance: str = "wasserstein", y: torch.Tensor | None = None,
                             target: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`_sorted_w1` of a per-stamp ``statistic`` ``(N, ...)`` of ``fake`` against ``real``'s or ``target_sorted``;
    with ``distance = "energy"``, :func:`_energy_distance` of the stamps of classes ``y`` against ``real``'s (the
    same classes) or ``target`` (values ``(F, M)``, their classes ``(M,)``: :meth:`ClassReference.class_values`)."""
    values = statistic(fake).reshape(len(fake), -1).T  # (F, N)
    if distance == "energy":
        return _energy_penalty(values, real, statistic, y, target, min_spread=min_spread, name=name)
    if target_sorted is None:
        if real is None:
            raise ValueError(f"{name}: give the real batch or its sorted values")
        with torch.no_grad():
            target_sorted = torch.sort(statistic(real).reshape(len(real), -1).T, dim=1).values
    if target_sorted.shape != values.shape:
        raise ValueError(f"{name}: target {tuple(target_sorted.shape)} does not match the generated "
                         f"values {tuple(values.shape)}")
    return _sorted_w1(values, target_sorted, min_spread=min_spread)


def _energy_penalty(values: torch.Tensor, real: torch.Tensor | None, statistic, y: torch.Tensor | None,
                    target: tuple[torch.Tensor, torch.Tensor] | None, *, min_spread: float, name: str) -> torch.Tensor:
    """:func:`_energy_distance` of ``values`` ``(F, N)`` (classes ``y``) against ``target`` or ``statistic(real)``."""
    if y is None or len(y) != values.shape[1]:
        raise ValueError(f"{name}: the energy distance needs the classes of the {values.shape[1]} generated stamps")
    if target is None:
        if real is None:
            raise ValueError(f"{name}: give the real batch (of the same classes) or the class values")
        with torch.no_grad():
            target = (statistic(real).reshape(len(real), -1).T, y)
    if target[0].shape[0] != values.shape[0] or target[0].shape[1] != len(target[1]):
        raise ValueError(f"{name}: target {tuple(target[0].shape)} with {len(target[1])} classes does not match the "
                         f"generated values {tuple(values.shape)}")
    return _energy_distance(values, y, target[0], target[1], min_spread=min_spread)


SKY_LEVEL_SIDES = ("both", "below")  # gan.g_sky_level_side: which generated sky levels sky_level_penalty pulls


def sky_level_penalty(levels: torch.Tensor, target_sorted: torch.Tensor, sigma: torch.Tensor, *,
                      side: str = "both") -> torch.Tensor:
    """1-D Wasserstein-1 distance between generated noiseless sky levels ``(N, C)`` and the real ones' (ascending
    rows ``(C, N)``, :meth:`ClassReference.sorted_sky_level`), per band over the real levels' spread (at least a
    tenth of the band's sky ``sigma`` ``(C,)``), mean over bands; linear units.

    G picks each stamp's sky level; a sky level pinned to a real stamp's
    takes that choice away and costs realism (docs/gan-experiments.md round
    45). This term holds only the levels' distribution over each class to the
    real one: G may still put any stamp's sky where a real one lies, but not
    a quarter of them at black.

    ``side = "below"`` (``gan.g_sky_level_side``) counts only the sorted
    levels darker than the real level of the same rank: the dark tail is
    lifted, no sky is pulled down.
    """
    if side not in SKY_LEVEL_SIDES:
        raise ValueError(f"sky_level_penalty: side must be one of {', '.join(SKY_LEVEL_SIDES)}, got {side!r}")
    return _sorted_w1(levels.float().T, target_sorted, min_spread=(0.1 * sigma.float()).clamp(min=1e-6),
                      below_only=side == "below")


def stamp_spectrum_profile(x: torch.Tensor) -> torch.Tensor:
    """Each stamp's log10 power spectrum (:func:`stamp_log_power`) and light profile (:func:`stamp_profile`) side by
    side: ``(N, 2 * C * 8)``, fp32, differentiable."""
    weights = _bin_weights(x.shape[-1], x.device)
    return torch.cat([stamp_log_power(x, weights).flatten(1), stamp_profile(x).flatten(1)], dim=1)


def random_directions(n_features: int, n_directions: int, gen: torch.Generator,
                      device: torch.device | str = "cpu") -> torch.Tensor:
    """``n_directions`` directions drawn uniformly on the unit sphere of ``n_features`` dimensions, from ``gen``:
    ``(n_features, n_directions)``, unit columns."""
    d = torch.randn(n_features, n_directions, generator=gen)
    return (d / d.norm(dim=0, keepdim=True)).to(device)


def smooth_projections(projected: torch.Tensor, smoothing: float, gen: torch.Generator) -> torch.Tensor:
    """A smoothed bootstrap of real projections ``(n, P)``: each value moved by Gaussian noise of ``smoothing`` x its
    column's spread and the column shrunk back to its mean and spread (Silverman 1986, section 6.4.1).

    The target is then a kernel estimate of the real distribution along each
    direction, not the training stamps' own values, with the same mean and
    variance. The noise is drawn from ``gen`` (on the CPU, as
    :func:`random_directions`).
    """
    if smoothing <= 0:
        return projected
    mean, spread = projected.mean(dim=0), projected.std(dim=0, correction=0)
    noise = torch.randn(projected.shape, generator=gen).to(projected.device)
    return mean + (projected - mean + smoothing * spread * noise) / (1.0 + smoothing ** 2) ** 0.5


def joint_match_penalty(fake: torch.Tensor, real: torch.Tensor | None = None, *, directions: torch.Tensor,
                        centre: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                        target_sorted: torch.Tensor | None = None, smoothing: float = 0.0,
                        gen: torch.Generator | None = None, distance: str = "wasserstein",
                        y: torch.Tensor | None = None,
                        target: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """Sliced Wasserstein-1 distance between the stamps' joint (log power spectrum, light profile) vectors
    (:func:`stamp_spectrum_profile`) of a generated and a real batch.

    The per-number terms (:func:`stamp_power_penalty`, :func:`profile_match_penalty`) match each number's
    distribution alone; a generator can meet all of them while the numbers
    move together as no real galaxy's do -- steep spectra with flat profiles,
    one band's power without the others'. Matching each of the 48 marginals of
    three generators left 88-105 % of their FID in these numbers (docs/gan-experiments.md
    round 35). Here the vectors, standardised by ``centre`` / ``scale`` (the
    real training stamps'; else the real batch's), are projected on
    ``directions`` ``(2 * C * 8, P)`` (:func:`random_directions`, fresh each
    step) and the 1-D Wasserstein-1 distance along each is taken over the
    real projections' spread (at least 0.05) and averaged (Rabin et al. 2011;
    Deshpande et al. 2018): every direction of the joint distribution, not only
    the axes. ``target_sorted`` ``(P, N)``: the real projections given instead
    of ``real``, ascending per row (:meth:`ClassReference.sorted_joint`).
    ``smoothing``: the real batch's projections are first smoothed
    (:func:`smooth_projections`, noise from ``gen``). No gradient reaches ``real``.
    ``distance = "energy"``: the energy distance of each class's projections
    (:func:`_energy_distance`) against the real batch's of the same classes
    ``y`` or ``target`` (:meth:`ClassReference.joint_class_values`).
    """
    values = stamp_spectrum_profile(fake)
    energy = distance == "energy"
    projected_real = None  # (N, P): the real batch's projections, when it is the target
    if (target if energy else target_sorted) is None:
        if real is None:
            raise ValueError("joint_match_penalty: give the real batch or its projections")
        with torch.no_grad():
            r = stamp_spectrum_profile(real)
            if centre is None or scale is None:
                centre, scale = r.mean(dim=0), r.std(dim=0).clamp(min=1e-3)
            if smoothing > 0 and gen is None:
                raise ValueError("joint_match_penalty: smoothing needs the generator of the step's noise")
            projected_real = smooth_projections((r - centre) / scale @ directions, smoothing, gen)
    elif centre is None or scale is None:
        raise ValueError("joint_match_penalty: given projections need the centre and scale they were made with")
    projected = ((values - centre) / scale @ directions).T  # (P, N)
    if energy:
        if target is None:
            target = (projected_real.T, y)
        return _energy_penalty(projected, None, None, y, target, min_spread=0.05, name="joint_match_penalty")
    if target_sorted is None:
        target_sorted = torch.sort(projected_real.T, dim=1).values
    if target_sorted.shape != projected.shape:
        raise ValueError(f"joint_match_penalty: target {tuple(target_sorted.shape)} does not match the generated "
                         f"projections {tuple(projected.shape)}")
    return _sorted_w1(projected, target_sorted, min_spread=0.05)


def band_differences(x: torch.Tensor) -> torch.Tensor:
    """Every pair of bands' difference ``x_i - x_j`` (``i < j``), a stamp's colour maps: ``(N, C (C - 1) / 2, H, W)``."""
    i, j = torch.triu_indices(x.shape[1], x.shape[1], offset=1, device=x.device)
    return x[:, i] - x[:, j]


def colour_power_penalty(fake: torch.Tensor, real: torch.Tensor | None = None, *,
                         target_sorted: torch.Tensor | None = None,
                         distance: str = "wasserstein", y: torch.Tensor | None = None,
                         target: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """:func:`stamp_power_penalty` of the stamps' colour maps (:func:`band_differences`): how much colour structure
    each stamp has at each scale, its distribution against the real stamps'.

    The per-band terms cannot see whether the bands move together: a
    generator can match every band's spectrum while its colour varies from
    pixel to pixel where real galaxies' colours are smooth (docs/gan.md round
    30). ``target_sorted``: :meth:`ClassReference.sorted_colour_power`; ``distance``, ``y``, ``target``: as
    :func:`stamp_power_penalty` (``target``: :meth:`ClassReference.class_values` of ``"colour"``).
    """
    return stamp_power_penalty(band_differences(fake), None if real is None else band_differences(real),
                               target_sorted=target_sorted, distance=distance, y=y, target=target)


def _block_pair_distances(x: torch.Tensor, y: torch.Tensor, pool: int) -> torch.Tensor:
    """Mean absolute difference of ``pool`` x ``pool``-pixel block means for every pair of stamps of one class."""
    i, j = torch.triu(y[:, None] == y[None, :], diagonal=1).nonzero(as_tuple=True)
    b = x.float()
    if pool > 1:
        b = F.avg_pool2d(b, pool)
    b = b.flatten(1)
    return (b[i] - b[j]).abs().mean(dim=1)


def mode_seeking_penalty(fake: torch.Tensor, z: torch.Tensor, y: torch.Tensor, *, pool: int = 4,
                         eps: float = 1e-5) -> torch.Tensor:
    """Mode-seeking term of MSGAN (Mao et al. 2019): ``1 / (mean d_image / d_latent + eps)`` over same-class pairs.

    For every pair of generated stamps of the same class in the batch, the
    mean absolute difference of the stamps, each first averaged over
    ``pool`` x ``pool`` pixel blocks (galaxy structure, not the per-pixel
    sky noise, which differs between any two draws), over the mean absolute
    difference of their latents. The ratio is averaged over the pairs; a
    generator that maps different latents of a class to the same galaxy has
    a small ratio and a large penalty. 0 (no gradient) when no two stamps of
    the batch share a class. ``fake``: ``(N, C, H, W)`` with its graph;
    ``z``: ``(N, z_dim)``; ``y``: ``(N,)`` class indices.
    """
    if len(fake) != len(z) or len(fake) != len(y):
        raise ValueError(f"mode_seeking_penalty: {len(fake)} stamps, {len(z)} latents and {len(y)} classes")
    d_image = _block_pair_distances(fake, y, pool)
    if not len(d_image):
        return fake.new_zeros(())
    d_latent = _block_pair_distances(z.reshape(len(z), -1, 1, 1), y, 1)
    return 1.0 / ((d_image / d_latent.clamp(min=1e-8)).mean() + eps)


class ClassReference:
    """The real training stamps of each condition class, summarised once, as targets for the matching terms.

    ``gan.g_match_reference = "class"``: instead of the step's own real
    batch -- 16 particular galaxies, which G could be pulled toward, and
    whose draw adds a floor of batch-to-batch noise to the terms -- each
    generated batch is compared with what its classes hold over the whole
    training set: the class-mean power spectrum (linear, before the log, so
    the target is the expected batch mean), ``H*W`` quantiles of each
    class's pixel values per band (at levels ``(k + 1/2) / (H*W)``) and 32
    quantiles of its stamps' own log spectra per band and bin, one set per
    generated stamp of that class, so a batch's target is the mixture of
    its classes. A class without training stamps takes the whole set's.
    With ``colours``, the same quantiles of the spectra of their colour maps
    (:func:`band_differences`), the target of ``gan.g_colour_power_match``;
    and 32 quantiles of its stamps' light profiles (:func:`stamp_profile`),
    the target of ``gan.g_profile_match``. With ``joint``, its stamps' (log
    spectrum, profile) vectors standardised by the whole training set,
    projected on each step's directions (:meth:`sorted_joint`), the target of
    ``gan.g_joint_match``.

    Parameters
    ----------
    stamps : numpy.ndarray
        ``(n, C, H, W)`` real training stamps in network units (``[-1, 1]``).
    y : numpy.ndarray
        ``(n,)`` their class indices, ``0 .. n_classes - 1``.
    n_classes : int
    chunk : int
        Stamps per FFT chunk (memory only).
    colours : bool
        Also summarise the colour maps' spectra (:meth:`sorted_colour_power`).
    joint : bool
        Also keep the stamps' standardised (spectrum, profile) vectors (:meth:`sorted_joint`).
    sky_levels : numpy.ndarray, optional
        ``(n, C)`` the stamps' own noiseless sky levels (linear units,
        :func:`galearn.gan.sky.sky_per_stamp`): their quantiles per class are
        the target of ``gan.g_sky_level_match`` (:meth:`sorted_sky_level`).
    """

    N_STAMP_QUANTILES = 32  # quantiles of each class's per-stamp log spectra (per band and bin)
    JOINT_MAX_ROWS = 2048  # sorted_joint: a larger class is a fresh draw of this many stamps each step

    def __init__(self, stamps, y, n_classes: int, *, chunk: int = 256, colours: bool = False,
                 joint: bool = False, sky_levels: np.ndarray | None = None) -> None:
        stamps = np.asarray(stamps, dtype=np.float32)
        y = np.asarray(y)
        n, c, h, w = stamps.shape
        levels = (np.arange(h * w) + 0.5) / (h * w)
        quantiles = np.zeros((n_classes, c, h * w), dtype=np.float32)
        # e.g. a class (or redshift bin) whose few stamps all went to the held-out set: the whole set stands in
        members = [np.flatnonzero(y == k) if (y == k).any() else np.arange(n) for k in range(n_classes)]
        for k, m in enumerate(members):
            quantiles[k] = np.quantile(stamps[m].transpose(1, 0, 2, 3).reshape(c, -1), levels, axis=1).T
        power, stamp_quantiles = self._spectra(stamps, members, chunk)
        self.power = torch.from_numpy(power)  # (K, C, bins), linear
        self.quantiles = torch.from_numpy(quantiles)  # (K, C, H*W), each row ascending
        self.stamp_quantiles = torch.from_numpy(stamp_quantiles)  # (K, C * bins, Q): the stamps' own log10 spectra
        profiles = stamp_profile(torch.from_numpy(stamps)).reshape(n, -1).numpy()  # (n, C * 8)
        self.profile_quantiles = torch.from_numpy(np.stack(
            [self._quantiles(profiles[m]) for m in members]).astype(np.float32))  # (K, C * 8, Q)
        self.members = [torch.from_numpy(m) for m in members]
        self.joint = self.joint_centre = self.joint_scale = None  # (n, 2 * C * 8), standardised: sorted_joint
        if joint:
            vectors = torch.cat([stamp_spectrum_profile(torch.from_numpy(stamps[i:i + chunk]))
                                 for i in range(0, n, chunk)])
            self.joint_centre, self.joint_scale = vectors.mean(dim=0), vectors.std(dim=0).clamp(min=1e-3)
            self.joint = (vectors - self.joint_centre) / self.joint_scale  # by the whole training set
        self.colour_quantiles = None  # (K, pairs * bins, Q): the same of their colour maps (band_differences)
        if colours:
            self.colour_quantiles = torch.from_numpy(
                self._spectra(band_differences(torch.from_numpy(stamps)).numpy(), members, chunk)[1])
        self.sky_level_quantiles = None  # (K, C, Q): the stamps' own noiseless sky levels, linear units
        if sky_levels is not None:
            sky_levels = np.asarray(sky_levels, dtype=np.float64)
            if sky_levels.shape != (n, c):
                raise ValueError(f"ClassReference: sky levels of shape {sky_levels.shape} for {n} stamps of {c} bands")
            self.sky_level_quantiles = torch.from_numpy(np.stack(
                [self._quantiles(sky_levels[m]) for m in members]).astype(np.float32))

    @classmethod
    def _spectra(cls, stamps: np.ndarray, members: list[np.ndarray], chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """Each class's mean power spectrum ``(K, C, bins)`` and quantiles of its stamps' own log10 spectra
        ``(K, C * bins, Q)``."""
        weights = _bin_weights(stamps.shape[-1], torch.device("cpu"))
        power = np.zeros((len(members), stamps.shape[1], weights.shape[1]), dtype=np.float64)
        stamp_quantiles = np.zeros((len(members), power[0].size, cls.N_STAMP_QUANTILES), dtype=np.float32)
        for k, m in enumerate(members):
            logs = []
            for start in range(0, len(m), chunk):
                p = _power_map(torch.from_numpy(stamps[m[start:start + chunk]])) @ weights  # (n, C, bins)
                power[k] += p.sum(dim=0).double().numpy()
                logs.append(torch.log10(p + 1e-12).reshape(len(p), -1).numpy())
            power[k] /= len(m)
            stamp_quantiles[k] = cls._quantiles(np.concatenate(logs))
        return power.astype(np.float32), stamp_quantiles

    @classmethod
    def _quantiles(cls, values: np.ndarray) -> np.ndarray:
        """``N_STAMP_QUANTILES`` quantiles, at levels ``(k + 1/2) / Q``, of each column of ``values`` ``(n, F)``: ``(F, Q)``."""
        return np.quantile(values, (np.arange(cls.N_STAMP_QUANTILES) + 0.5) / cls.N_STAMP_QUANTILES, axis=0).T

    def to(self, device: torch.device | str) -> ClassReference:
        """Move the targets to ``device`` (in place); returns self."""
        self.power, self.quantiles = self.power.to(device), self.quantiles.to(device)
        self.stamp_quantiles = self.stamp_quantiles.to(device)
        self.profile_quantiles = self.profile_quantiles.to(device)
        if self.joint is not None:
            self.joint, self.joint_centre, self.joint_scale = (
                t.to(device) for t in (self.joint, self.joint_centre, self.joint_scale))
        self.members = [m.to(device) for m in self.members]
        if self.colour_quantiles is not None:
            self.colour_quantiles = self.colour_quantiles.to(device)
        if self.sky_level_quantiles is not None:
            self.sky_level_quantiles = self.sky_level_quantiles.to(device)
        return self

    def log_power(self, y: torch.Tensor) -> torch.Tensor:
        """log10 of the expected batch-mean power spectrum of a batch of classes ``y``: ``(C, bins)``."""
        return torch.log10(self.power[y].mean(dim=0) + 1e-12)

    def sorted_pixels(self, y: torch.Tensor) -> torch.Tensor:
        """The pixel values of a batch of classes ``y``, each stamp's class quantiles pooled, sorted per band: ``(C, N*H*W)``."""
        q = self.quantiles[y]  # (N, C, H*W)
        return torch.sort(q.transpose(0, 1).reshape(q.shape[1], -1), dim=1).values

    def sorted_stamp_power(self, y: torch.Tensor) -> torch.Tensor:
        """The per-stamp log10 spectra of a batch of classes ``y`` as ``N`` quantiles of their classes' mixture:
        ``(C * bins, N)``, ascending per row (the middle one of each block of ``Q`` pooled class quantiles)."""
        return self._mixture(self.stamp_quantiles, y)

    def sorted_stamp_profile(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`sorted_stamp_power` of the stamps' light profiles (:func:`stamp_profile`): ``(C * 8, N)``."""
        return self._mixture(self.profile_quantiles, y)

    def sorted_sky_level(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`sorted_stamp_power` of the stamps' noiseless sky levels (built with ``sky_levels``): ``(C, N)``."""
        if self.sky_level_quantiles is None:
            raise ValueError("ClassReference: built without sky_levels, it holds no sky levels")
        return self._mixture(self.sky_level_quantiles, y)

    def sorted_colour_power(self, y: torch.Tensor) -> torch.Tensor:
        """:meth:`sorted_stamp_power` of the stamps' colour maps (built with ``colours=True``): ``(pairs * bins, N)``."""
        if self.colour_quantiles is None:
            raise ValueError("ClassReference: built without colours=True, it holds no colour spectra")
        return self._mixture(self.colour_quantiles, y)

    def class_values(self, statistic: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Every class's quantiles of a per-stamp statistic side by side, the target of the energy distance
        (``gan.g_match_distance = "energy"``): values ``(F, K * Q)`` and their classes ``(K * Q,)``.
        ``statistic``: ``"power"`` (:meth:`sorted_stamp_power`), ``"profile"`` or ``"colour"``."""
        quantiles = {"power": self.stamp_quantiles, "profile": self.profile_quantiles,
                     "colour": self.colour_quantiles}[statistic]
        if quantiles is None:
            raise ValueError("ClassReference: built without colours=True, it holds no colour spectra")
        return self._side_by_side(quantiles)

    def _side_by_side(self, class_quantiles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        k, f, q = class_quantiles.shape
        classes = torch.arange(k, device=class_quantiles.device).repeat_interleave(q)
        return class_quantiles.transpose(0, 1).reshape(f, k * q), classes

    def joint_class_values(self, directions: torch.Tensor, smoothing: float = 0.0,
                           gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`sorted_joint`'s class quantiles side by side (:meth:`class_values`): ``(P, K * Q)`` and ``(K * Q,)``."""
        return self._side_by_side(self._joint_quantiles(directions, smoothing, gen))

    def sorted_joint(self, y: torch.Tensor, directions: torch.Tensor, smoothing: float = 0.0,
                     gen: torch.Generator | None = None) -> torch.Tensor:
        """The standardised (log spectrum, profile) vectors (:func:`stamp_spectrum_profile`) of a batch of classes
        ``y`` projected on ``directions`` ``(F, P)``, as ``N`` quantiles of their classes' mixture: ``(P, N)``.
        ``smoothing``: each class's projections smoothed first (:func:`smooth_projections`, noise from ``gen``).
        A class of more than ``JOINT_MAX_ROWS`` stamps is represented by that many, drawn (with replacement)
        from ``gen`` each step, so the step's cost does not grow with the training set."""
        return self._mixture(self._joint_quantiles(directions, smoothing, gen), y)  # (K, P, Q) -> (P, N)

    def _joint_quantiles(self, directions: torch.Tensor, smoothing: float,
                         gen: torch.Generator | None) -> torch.Tensor:
        """Each class's ``Q`` quantiles of its projections on ``directions``: ``(K, P, Q)``."""
        if self.joint is None:
            raise ValueError("ClassReference: built without joint=True, it holds no (spectrum, profile) vectors")
        large = any(len(m) > self.JOINT_MAX_ROWS for m in self.members)
        if (smoothing > 0 or large) and gen is None:
            raise ValueError("ClassReference.sorted_joint: smoothing and classes of more than "
                             f"{self.JOINT_MAX_ROWS} stamps need the generator of the step's noise")
        levels = (torch.arange(self.N_STAMP_QUANTILES, device=directions.device) + 0.5) / self.N_STAMP_QUANTILES
        projected = None if large else self.joint @ directions  # (n, P)
        class_quantiles = []
        for m in self.members:  # np.quantile's linear interpolation; torch.quantile refuses inputs over 2**24 values
            if large:
                if len(m) > self.JOINT_MAX_ROWS:
                    m = m[torch.randint(len(m), (self.JOINT_MAX_ROWS,), generator=gen).to(m.device)]
                values = self.joint[m] @ directions
            else:
                values = projected[m]
            ranked = torch.sort(smooth_projections(values, smoothing, gen), dim=0).values  # (n_k, P)
            position = levels * (len(m) - 1)
            low = position.floor().long()
            high = (low + 1).clamp(max=len(m) - 1)
            frac = (position - low)[:, None]
            class_quantiles.append((ranked[low] * (1 - frac) + ranked[high] * frac).T)  # (P, Q)
        return torch.stack(class_quantiles)

    def _mixture(self, class_quantiles: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        q = self.N_STAMP_QUANTILES
        pooled = torch.sort(class_quantiles[y].transpose(0, 1).reshape(class_quantiles.shape[1], -1),
                            dim=1).values  # (F, N * Q)
        return pooled[:, q // 2::q]


@dataclass
class GanLoss:
    """Runs the networks for one G+D step.

    Parameters
    ----------
    G, D : torch.nn.Module
        Generator and (projection) discriminator.
    policy : str
        DiffAugment policies, e.g. ``"flip,rot90,translation"``.
    """

    G: torch.nn.Module
    D: torch.nn.Module
    policy: str = "flip,rot90,translation"
    autocast_dtype: torch.dtype | None = None  # e.g. torch.bfloat16: G and D forwards under autocast
    power_match: float = 0.0  # gan.g_power_match: G loss + this x power_match_penalty(generated, real batch)
    pixel_match: float = 0.0  # gan.g_pixel_match: G loss + this x pixel_match_penalty(generated before its clip, real batch)
    stamp_power_match: float = 0.0  # gan.g_stamp_power_match: G loss + this x stamp_power_penalty(generated, real batch)
    colour_power_match: float = 0.0  # gan.g_colour_power_match: G loss + this x colour_power_penalty(generated, real batch)
    profile_match: float = 0.0  # gan.g_profile_match: G loss + this x profile_match_penalty(generated, real batch)
    joint_match: float = 0.0  # gan.g_joint_match: G loss + this x joint_match_penalty(generated, real batch)
    joint_directions: int = 64  # directions of joint_match_penalty, drawn each step from the step's generator
    joint_smoothing: float = 0.0  # gan.g_joint_smoothing: its real projections smoothed (smooth_projections)
    mode_seeking: float = 0.0  # gan.g_mode_seeking: G loss + this x mode_seeking_penalty(generated, z, y)
    reference: ClassReference | None = None  # gan.g_match_reference = "class": the terms' targets from the classes, not the batch
    match_distance: str = "wasserstein"  # gan.g_match_distance: the per-stamp terms' distance, "wasserstein" or "energy"
    sky_level_match: float = 0.0  # gan.g_sky_level_match: G loss + this x sky_level_penalty(G's sky levels, class reference)
    sky_level_side: str = "both"  # gan.g_sky_level_side: sky_level_penalty's side, "both" or "below"

    def __post_init__(self) -> None:
        self._names = parse_policy(self.policy)
        if self.match_distance not in MATCH_DISTANCES:
            raise ValueError(f"GanLoss: match_distance must be one of {', '.join(MATCH_DISTANCES)}, "
                             f"got {self.match_distance!r}")
        if self.pixel_match:  # G keeps each training forward's output before its clip (Generator.last_unclipped)
            self.G.keep_unclipped = True
        if self.sky_level_match:  # G keeps each training forward's noiseless sky levels (Generator.last_ring_level)
            if not getattr(self.G, "sky_noise", False):
                raise ValueError("GanLoss: sky_level_match needs a generator with a measured sky noise")
            self.G.keep_ring_level = True

    def _autocast(self, like: torch.Tensor):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=like.device.type, dtype=self.autocast_dtype)

    def run_G(self, z: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Generate from latents ``z`` and classes ``y``; G's per-pixel noise comes from ``gen``."""
        with self._autocast(z):
            return self.G(z, y, gen).float()

    def run_D(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, *, detach_features: bool = False) -> torch.Tensor:
        """Augment ``x`` (``[-1, 1]``) with the step's generator, then score it (fp32 logits).

        ``detach_features``: a discriminator with a frozen feature network
        (:class:`galearn.gan.projected.ProjectedDiscriminator`) runs that part
        without an autograd graph -- in D steps no gradient is needed there.
        """
        x = diff_augment(x, self._names, gen)
        with self._autocast(x):
            if detach_features and getattr(self.D, "frozen_features", False):
                return self.D(x, y, detach_features=True).float()
            return self.D(x, y).float()

    def project(self, x: torch.Tensor, gen: torch.Generator) -> list[torch.Tensor]:
        """Augment ``x`` with the step's generator and run D's frozen feature network WITH a graph.

        For a discriminator with ``frozen_features`` (projected): the trunk
        does not change when D's heads are updated, so one pass over the
        generated batch serves the D step (detached) and the G step: pass it
        as ``fake_features`` to :meth:`d_loss` and :meth:`g_loss`.
        """
        x = diff_augment(x, self._names, gen)
        with self._autocast(x):
            return self.D.project(x)

    def score(self, feats: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """D's head logits (fp32) on features from :meth:`project`."""
        with self._autocast(feats[0]):
            return self.D.score(feats, y).float()

    def d_loss(self, real: torch.Tensor, y: torch.Tensor, z: torch.Tensor | None, gen: torch.Generator, *,
               r1_weight: float = 0.0, fake: torch.Tensor | None = None,
               fake_features: list[torch.Tensor] | None = None) -> tuple[torch.Tensor, float, float]:
        """Discriminator hinge loss (+ ``r1_weight`` x R1 penalty) and the mean logits on real and fake.

        ``r1_weight``: ``gamma / 2 * interval`` on the steps of a lazy R1
        regularisation (StyleGAN2), else 0. The gradient is taken with respect
        to the un-augmented real stamps; the augmentations only permute pixels,
        so its norm is that with respect to the augmented ones. ``fake``:
        generated stamps of this step (detached here; the G step may reuse
        them), else generated from ``z`` without a graph. ``fake_features``:
        :meth:`project` of this step's generated stamps, scored here detached
        (``fake`` and ``z`` are then not used).
        """
        if fake is None and fake_features is None:
            with torch.no_grad():
                fake = self.run_G(z, y, gen)
        if r1_weight > 0:
            real = real.detach().requires_grad_(True)
        logits_real = self.run_D(real, y, gen, detach_features=r1_weight <= 0)
        if fake_features is not None:
            logits_fake = self.score([f.detach() for f in fake_features], y)
        else:
            logits_fake = self.run_D(fake.detach(), y, gen, detach_features=True)
        loss = hinge_d_loss(logits_real, logits_fake)
        if r1_weight > 0:
            loss = loss + r1_weight * r1_penalty(logits_real, real)
        return loss, float(logits_real.detach().mean()), float(logits_fake.detach().mean())

    def g_loss(self, y: torch.Tensor, z: torch.Tensor | None, gen: torch.Generator, *,
               fake: torch.Tensor | None = None, fake_features: list[torch.Tensor] | None = None,
               real: torch.Tensor | None = None) -> torch.Tensor:
        """Generator hinge loss (+ ``G.sky_penalty`` x the ring's deviation from the real sky, + ``power_match`` x
        :func:`power_match_penalty`, ``stamp_power_match`` x :func:`stamp_power_penalty`, ``colour_power_match`` x
        :func:`colour_power_penalty`, ``profile_match`` x :func:`profile_match_penalty`, ``joint_match`` x
        :func:`joint_match_penalty` and ``pixel_match`` x
        :func:`pixel_match_penalty` against ``real`` or the class ``reference``, + ``mode_seeking`` x
        :func:`mode_seeking_penalty`, when set).

        ``fake``: this step's generated stamps (with their graph), else ``G(z, y)``; ``z``: their latents (needed by
        the mode-seeking term).
        ``fake_features``: :meth:`project` of them (with its graph), scored by
        D's heads as they are after the D step. ``real``: the step's real
        batch (classes ``y``), needed when a matching term is set without a
        class ``reference``.
        """
        if fake_features is not None:
            logits = self.score(fake_features, y)
        else:
            if fake is None:
                fake = self.run_G(z, y, gen)
            logits = self.run_D(fake, y, gen)
        loss = hinge_g_loss(logits)
        ref = self.reference
        if self.power_match:
            if (real is None and ref is None) or fake is None:
                raise ValueError("GanLoss.g_loss: power_match needs this step's generated stamps and real batch")
            target = None if ref is None else ref.log_power(y)
            loss = loss + self.power_match * power_match_penalty(fake, real, target=target)
        energy = self.match_distance == "energy"
        for name, penalty, class_target, statistic in (  # per-stamp statistics against the batch's or the classes'
                ("stamp_power_match", stamp_power_penalty, "sorted_stamp_power", "power"),
                ("colour_power_match", colour_power_penalty, "sorted_colour_power", "colour"),
                ("profile_match", profile_match_penalty, "sorted_stamp_profile", "profile")):
            weight = getattr(self, name)
            if not weight:
                continue
            if (real is None and ref is None) or fake is None:
                raise ValueError(f"GanLoss.g_loss: {name} needs this step's generated stamps and real batch")
            if energy:
                target = None if ref is None else ref.class_values(statistic)
                loss = loss + weight * penalty(fake, real, distance="energy", y=y, target=target)
            else:
                target = None if ref is None else getattr(ref, class_target)(y)
                loss = loss + weight * penalty(fake, real, target_sorted=target)
        if self.joint_match:
            if (real is None and ref is None) or fake is None:
                raise ValueError("GanLoss.g_loss: joint_match needs this step's generated stamps and real batch")
            size = fake.shape[-1]
            n_features = fake.shape[1] * (_bin_weights(size, fake.device).shape[1]
                                          + _morphometry_weights(profile_annulus_weights, size, fake.device).shape[1])
            directions = random_directions(n_features, self.joint_directions, gen, fake.device)
            if energy:
                target = (None if ref is None
                          else ref.joint_class_values(directions, self.joint_smoothing, gen))
                loss = loss + self.joint_match * joint_match_penalty(
                    fake, real, directions=directions, centre=None if ref is None else ref.joint_centre,
                    scale=None if ref is None else ref.joint_scale, smoothing=self.joint_smoothing, gen=gen,
                    distance="energy", y=y, target=target)
            elif ref is None:
                loss = loss + self.joint_match * joint_match_penalty(fake, real, directions=directions,
                                                                     smoothing=self.joint_smoothing, gen=gen)
            else:
                loss = loss + self.joint_match * joint_match_penalty(
                    fake, directions=directions, centre=ref.joint_centre, scale=ref.joint_scale,
                    target_sorted=ref.sorted_joint(y, directions, self.joint_smoothing, gen))
        if self.pixel_match:
            unclipped = self.G.last_unclipped  # from the training forward that made `fake`
            if (real is None and ref is None) or unclipped is None:
                raise ValueError("GanLoss.g_loss: pixel_match needs the real batch and a training-mode G forward")
            target = None if ref is None else ref.sorted_pixels(y)
            loss = loss + self.pixel_match * pixel_match_penalty(unclipped, real, target_sorted=target)
        if self.mode_seeking:
            if fake is None or z is None:
                raise ValueError("GanLoss.g_loss: mode_seeking needs this step's generated stamps and their latents")
            loss = loss + self.mode_seeking * mode_seeking_penalty(fake, z, y)
        if self.sky_level_match:
            levels = self.G.last_ring_level  # from the training forward that made `fake`
            if ref is None or levels is None:
                raise ValueError("GanLoss.g_loss: sky_level_match needs the class reference and a training-mode G forward")
            loss = loss + self.sky_level_match * sky_level_penalty(levels, ref.sorted_sky_level(y), self.G.sky.sigma,
                                                                   side=self.sky_level_side)
        weight = float(getattr(self.G, "sky_penalty", 0.0))
        if weight and self.G.last_sky_penalty is not None:  # gan.g_sky_penalty: from the forward that made `fake`
            loss = loss + weight * self.G.last_sky_penalty.float()
        return loss
