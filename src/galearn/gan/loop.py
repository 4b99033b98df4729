"""Training loop of the conditional GAN (``galearn gan train``).

One G+D step: a batch of real training stamps (indices drawn from
``default_rng([seed, step])``), a discriminator hinge step on augmented real
and generated stamps, a generator step, and an update of the exponential
moving average (EMA) of G's weights. Everything random in a step -- batch
indices, latents, augmentation -- is a function of ``(random_state, step)``,
so a run resumed from a checkpoint continues exactly as an uninterrupted run.

Files in ``WS/gan/``: ``config.json`` (resolved config, classes, bands),
``split.json`` (held-out stamps, see :mod:`galearn.gan.data`),
``ckpt-<step>.pt`` (newest three), ``stats.csv`` (one row per step: step,
loss_G, loss_D, D_real, D_fake, seconds), ``grids/step-<step>.png`` (one row
per class, fixed latents, from the EMA generator) and ``grids/<class>.png``
(an 8x8 grid per class at the end).
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import logging
import os
import random
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .. import __version__
from ..config import GanConfig, GanTrainConfig, step_config
from ..errors import BadValueError, Interrupted
from ..runtime import derive_seed, machine_description, resolve_device, stop_requests
from ..store import Workspace, atomic_path, atomic_write_text, open_sample, relative_to_workspace, update_manifest
from .augment import parse_policy, resolve_policy
from .checkpoint import checkpoint_path, latest_checkpoint, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import gan_condition, load_or_make_split, redshift_bin_edges, training_rows
from .loss import MATCH_DISTANCES, SKY_LEVEL_SIDES, GanLoss
from .networks import (G_UPSAMPLE, Discriminator, Generator, asymmetry_weights, check_stamp_size, from_stretched,
                       to_stretched)
from .spaces import TARGETED_MORPHOMETRY_GROUPS
from .template import CENTROID_MOVES, CENTROID_RADII, ELLIPTICITY_DRAWS, ELLIPTICITY_FILLS

__all__ = ["run_train", "build_networks", "resolve_auto_settings", "resolve_sky_noise", "set_threads", "save_grid",
           "class_filename", "train_step", "autocast_dtype", "DISCRIMINATORS"]

log = logging.getLogger(__name__)

# Config fields that must not change when resuming (steps / checkpoint_every / grid_every may).
_FROZEN = ("condition", "redshift_bins", "batch_size", "z_dim", "channels", "lr_g", "lr_d", "ema_beta", "diffaugment",
           "random_state", "heldout_fraction", "adam_beta1", "adam_beta2", "d_steps", "d_head", "r1_gamma",
           "r1_every", "discriminator", "d_backbone", "d_layers", "d_input_size", "precision", "fast_step", "sky_noise", "d_radius", "g_template",
           "g_out_scale", "g_template_warp", "g_residual", "g_pin_sky", "g_envelope", "g_sky_penalty", "g_blur",
           "g_asymmetry", "g_skip_excitation", "sky_scatter", "g_random_rotation", "g_upsample", "d_minibatch_std",
           "g_template_trainable", "g_template_blur", "sky_correlation_groups", "g_power_match",
           "g_pixel_match", "g_match_reference", "g_stamp_power_match", "g_mode_seeking", "g_colour_blur",
           "g_colour_power_match", "g_sky_reference", "g_pin_sky_to", "sky_band_correlation", "lr_decay_start", "lr_decay_end",
           "g_asymmetry_radius", "d_pixel_head", "g_profile_match", "g_joint_match", "g_joint_smoothing", "g_drawn_centroid",
           "g_drawn_ellipticity", "g_centroid_radii", "g_match_distance", "g_centroid_move", "sky_noise_gain", "g_neighbours", "g_sky_floor",
           "g_sky_level_match", "sky_scatter_by_level", "g_ellipticity_draw",
           "g_ellipticity_trainable", "g_ellipticity_passes", "sky_scatter_by_light",
           "sky_smooth_light", "g_ellipticity_fill", "g_sky_level_side")
DISCRIMINATORS = ("sngan", "projected")
# Values of settings a checkpoint written before they existed was trained with (not today's defaults).
LEGACY_SETTINGS = {"sky_noise": "learnt", "d_radius": False, "g_template": False, "g_out_scale": 1.0, "g_template_warp": False,
                   "g_residual": "bands", "g_pin_sky": False, "g_envelope": False, "g_sky_penalty": 0.0, "g_blur": 0.0,
                   "g_asymmetry": 1.0, "redshift_bins": (), "g_skip_excitation": False,
                   "sky_scatter": False, "g_random_rotation": False, "g_upsample": "nearest",
                   "d_minibatch_std": 0, "d_pixel_head": False, "g_template_trainable": True, "g_template_blur": 0.0, "sky_correlation_groups": 0,
                   "g_power_match": 0.0, "g_pixel_match": 0.0, "g_match_reference": "batch", "g_stamp_power_match": 0.0,
                   "g_mode_seeking": 0.0, "g_colour_blur": 0.0, "g_sky_reference": "measured",
                   "g_pin_sky_to": "measured", "diffaugment": "flip,rot90,translation", "sky_band_correlation": False,
                   "lr_decay_start": 0, "lr_decay_end": 0, "g_colour_power_match": 0.0,
                   "g_asymmetry_radius": 0.0, "g_profile_match": 0.0, "g_joint_match": 0.0, "g_joint_smoothing": 0.0,
                   "g_drawn_centroid": False, "g_drawn_ellipticity": False,
                   "g_centroid_radii": "normal", "g_match_distance": "wasserstein", "g_centroid_move": "translate",
                   "sky_noise_gain": False, "g_neighbours": False, "g_sky_floor": False,
                   "g_sky_level_match": 0.0, "sky_scatter_by_level": False, "g_ellipticity_draw": "normal",
                   "g_ellipticity_trainable": True, "g_ellipticity_passes": 1, "sky_scatter_by_light": False,
                   "sky_smooth_light": False, "g_ellipticity_fill": "sky",
                   "g_sky_level_side": "both"}
G_RESIDUALS = ("bands", "luminance")
PRECISIONS = ("fp32", "bf16", "auto")
MATCH_REFERENCES = ("batch", "class")
MATCH_TERMS = tuple(TARGETED_MORPHOMETRY_GROUPS)  # G-loss terms against real statistics (the groups each matches: spaces.py)
STAMP_MATCH_TERMS = ("g_stamp_power_match", "g_colour_power_match", "g_profile_match", "g_joint_match")  # per-stamp
                   # statistics' distributions, compared as gan.g_match_distance says
STATS_COLUMNS = ("step", "loss_G", "loss_D", "D_real", "D_fake", "seconds", "cpu_seconds")


#: Pixel-level sky measurements that hold several float64 copies of the stamps read at most this many of them.
MEASURED_STAMPS_MAX = 2000


def _measured_subset(stamps: np.ndarray, seed: int, limit: int = MEASURED_STAMPS_MAX) -> np.ndarray:
    """``stamps``, or a seeded draw of ``limit`` of them (sorted) when there are more: memory for pixel-level measures."""
    if len(stamps) <= limit:
        return stamps
    return stamps[np.sort(np.random.default_rng(seed).choice(len(stamps), size=limit, replace=False))]


def _stamp_sky_levels(stamps: np.ndarray, stretch: dict | None) -> np.ndarray:
    """Each stamp's own noiseless sky level ``(n, C)``, linear units (:func:`galearn.gan.sky.sky_per_stamp`, in
    chunks of ``MEASURED_STAMPS_MAX``); a band whose level cannot be measured takes the median of the others'."""
    from .sky import sky_per_stamp

    levels = np.concatenate([sky_per_stamp(stamps[i:i + MEASURED_STAMPS_MAX], stretch)["level"]
                             for i in range(0, len(stamps), MEASURED_STAMPS_MAX)])
    fill = np.nanmedian(np.where(np.isfinite(levels), levels, np.nan), axis=0)
    return np.where(np.isfinite(levels), levels, np.nan_to_num(fill)[None])


def set_threads(threads: int | None = None) -> int:
    """Set torch's intra-op CPU threads: ``threads``, or (None / 0) every core this process may run on.

    One thread is the default of :class:`GanTrainConfig`: on a shared 2-core machine
    two threads were 3-5x slower per G+D step than one (docs/gan.md).
    """
    if threads:
        if not isinstance(threads, int) or threads < 1:
            raise BadValueError(f"gan.threads must be a positive integer or 0 (all cores), got {threads!r}")
        torch.set_num_threads(threads)
        return threads
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    torch.set_num_threads(max(1, n))
    return n


def resolve_sky_noise(cfg: GanTrainConfig, stamps: np.ndarray,
                      bands: Sequence[str] = ()) -> tuple[GanTrainConfig, np.ndarray | None]:
    """``cfg`` with ``gan.sky_noise = "auto"`` replaced by the sky model the real stamps call for.

    ``stamps`` are the real training stamps, stretched, ``(N, C, H, W)``. The
    choice is :func:`~galearn.gan.sky.choose_sky_noise` of their measured sky
    correlation (returned too, so that it is not measured twice; ``None`` when
    ``cfg`` was not ``"auto"``). Any other value is returned as it is.
    """
    if cfg.sky_noise != "auto":
        return cfg, None
    from .sky import choose_sky_noise, measure_sky_correlation, short_range_correlation

    rho = measure_sky_correlation(stamps)
    cfg = dataclasses.replace(cfg, sky_noise=choose_sky_noise(rho))
    names = list(bands) or [str(b) for b in range(len(rho))]
    log.info("gan.sky_noise = auto: %s (short-range sky correlation per band: %s)", cfg.sky_noise,
             ", ".join(f"{b} {r:.2f}" for b, r in zip(names, short_range_correlation(rho))))
    return cfg, rho


def resolve_auto_settings(cfg: GanTrainConfig, stamps: np.ndarray,
                          bands: Sequence[str] = ()) -> tuple[GanTrainConfig, np.ndarray | None]:
    """``cfg`` with every ``"auto"`` resolved before the networks are built: ``gan.sky_noise`` from the real
    ``stamps`` (:func:`resolve_sky_noise`, whose measured correlation is returned too) and ``gan.diffaugment``
    from ``gan.discriminator`` (:func:`~galearn.gan.augment.resolve_policy`)."""
    cfg, rho = resolve_sky_noise(cfg, stamps, bands)
    return dataclasses.replace(cfg, diffaugment=resolve_policy(cfg.diffaugment, cfg.discriminator)), rho


def build_networks(n_classes: int, n_bands: int, stamp_size: int, cfg: GanTrainConfig, *,
                   with_D: bool = True) -> tuple[Generator, torch.nn.Module | None, Generator]:
    """G, D and the EMA copy of G (eval mode, no gradients).

    D is :class:`~galearn.gan.networks.Discriminator` (``gan.discriminator =
    "sngan"``) or :class:`~galearn.gan.projected.ProjectedDiscriminator`
    (``"projected"``: its frozen feature network is loaded from the backbone
    registry). ``with_D=False`` skips D (sampling needs only G).
    """
    check_stamp_size(stamp_size)
    if getattr(cfg, "sky_noise", None) == "auto":
        raise BadValueError("gan.sky_noise = auto is chosen from the real stamps: resolve it first (resolve_sky_noise)")
    G = Generator(n_classes, n_bands, stamp_size, z_dim=cfg.z_dim, channels=cfg.channels,
                  sky_noise={"measured": True, "measured-correlated": "correlated"}.get(getattr(cfg, "sky_noise", "learnt"),
                                                                                         False),
                  template=bool(getattr(cfg, "g_template", False)),
                  out_scale=float(getattr(cfg, "g_out_scale", 1.0)),
                  template_warp=bool(getattr(cfg, "g_template_warp", False)),
                  template_trainable=bool(getattr(cfg, "g_template_trainable", True)),
                  residual=getattr(cfg, "g_residual", "bands"), pin_sky=bool(getattr(cfg, "g_pin_sky", False)),
                  pin_sky_to=getattr(cfg, "g_pin_sky_to", "measured"),
                  envelope=bool(getattr(cfg, "g_envelope", False)),
                  sky_penalty=float(getattr(cfg, "g_sky_penalty", 0.0)),
                  sky_reference=getattr(cfg, "g_sky_reference", "measured"),
                  blur=float(getattr(cfg, "g_blur", 0.0)),
                  colour_blur=float(getattr(cfg, "g_colour_blur", 0.0)),
                  asymmetry=getattr(cfg, "g_asymmetry", 1.0),
                  asymmetry_radius=float(getattr(cfg, "g_asymmetry_radius", 0.0)),
                  skip_excitation=bool(getattr(cfg, "g_skip_excitation", False)),
                  sky_scatter=bool(getattr(cfg, "sky_scatter", False)),
                  sky_scatter_by_level=bool(getattr(cfg, "sky_scatter_by_level", False)),
                  sky_scatter_by_light=bool(getattr(cfg, "sky_scatter_by_light", False)),
                  sky_smooth_light=bool(getattr(cfg, "sky_smooth_light", False)),
                  sky_band_correlation=bool(getattr(cfg, "sky_band_correlation", False)),
                  sky_noise_gain=bool(getattr(cfg, "sky_noise_gain", False)),
                  neighbours=bool(getattr(cfg, "g_neighbours", False)),
                  sky_floor=bool(getattr(cfg, "g_sky_floor", False)),
                  random_rotation=bool(getattr(cfg, "g_random_rotation", False)),
                  upsample=getattr(cfg, "g_upsample", "nearest"),
                  template_blur=float(getattr(cfg, "g_template_blur", 0.0)),
                  sky_groups=int(getattr(cfg, "sky_correlation_groups", 0)),
                  drawn_centroid=bool(getattr(cfg, "g_drawn_centroid", False)),
                  drawn_ellipticity=bool(getattr(cfg, "g_drawn_ellipticity", False)),
                  ellipticity_draw=getattr(cfg, "g_ellipticity_draw", "normal"),
                  ellipticity_trainable=bool(getattr(cfg, "g_ellipticity_trainable", True)),
                  ellipticity_passes=int(getattr(cfg, "g_ellipticity_passes", 1)),
                  ellipticity_fill=getattr(cfg, "g_ellipticity_fill", "sky"),
                  centroid_radii=getattr(cfg, "g_centroid_radii", "normal"),
                  centroid_move=getattr(cfg, "g_centroid_move", "translate"))
    D = None
    if with_D:
        kind = getattr(cfg, "discriminator", "sngan")
        if kind == "projected":
            from .projected import ProjectedDiscriminator

            D = ProjectedDiscriminator(n_classes, n_bands, stamp_size, channels=cfg.channels, backbone=cfg.d_backbone,
                                       layers=tuple(cfg.d_layers) or None, input_size=cfg.d_input_size or None,
                                       random_state=cfg.random_state,
                                       minibatch_std=int(getattr(cfg, "d_minibatch_std", 0)),
                                       pixel_head=bool(getattr(cfg, "d_pixel_head", False)))
        elif kind == "sngan":
            D = Discriminator(n_classes, n_bands, stamp_size, channels=cfg.channels, head=cfg.d_head,
                              radius_channel=bool(getattr(cfg, "d_radius", False)))
        else:
            raise BadValueError(f"gan.discriminator must be one of {', '.join(DISCRIMINATORS)}, got {kind!r}")
    G_ema = copy.deepcopy(G).eval().requires_grad_(False)
    return G, D, G_ema


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """``torch.bfloat16`` for ``gan.precision = "bf16"`` (or ``"auto"`` where the device computes bf16 natively), else None.

    ``auto``: CUDA with bf16 support, or a CPU with AVX512-BF16 / AMX; on other
    CPUs bf16 is emulated and was many times slower than fp32 (docs/gan.md).
    """
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    device = torch.device(device)
    if precision != "auto":
        raise BadValueError(f"gan.precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    try:
        flags = open("/proc/cpuinfo", encoding="utf-8").read()
    except OSError:
        return None
    return torch.bfloat16 if ("avx512_bf16" in flags or "amx_bf16" in flags) else None


def train_step(step: int, *, G: Generator, D: torch.nn.Module, G_ema: Generator, opt_G, opt_D, loss: GanLoss,
               stamps: np.ndarray, y_all: np.ndarray, cfg: GanTrainConfig, device: torch.device) -> dict:
    """One G step (after ``cfg.d_steps`` D steps) and the EMA update; returns the step's losses.

    Everything random comes from ``(cfg.random_state, step)``. With
    ``cfg.fast_step`` the last D step's generated stamps (made WITH their graph)
    are reused, detached, by D and then by the G step: one G forward per step
    instead of two (DCGAN's order); with a frozen feature network in D
    (projected) one augmented pass through it serves both steps too; inputs
    are channels-last on the CPU.
    """
    rng = np.random.default_rng([cfg.random_state, step])
    gen = torch.Generator().manual_seed(derive_seed(cfg.random_state, step, 0))
    fast = bool(getattr(cfg, "fast_step", False))
    device = torch.device(device)
    n_train = len(stamps)

    def batch(pick):
        x = from_stretched(torch.from_numpy(stamps[pick])).to(device)
        if fast and device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.from_numpy(y_all[pick]).to(device)

    scale = lr_scale_at(step, cfg.lr_decay_start, cfg.lr_decay_end)
    for opt, lr in ((opt_G, cfg.lr_g), (opt_D, cfg.lr_d)):
        for group in opt.param_groups:
            group["lr"] = lr * scale
    real, y = batch(rng.integers(0, n_train, cfg.batch_size))
    fake = fake_features = None
    share_features = fast and getattr(D, "frozen_features", False)
    for d_step in range(cfg.d_steps):
        if d_step:  # further D steps of the same G step: fresh real stamps
            real, y = batch(rng.integers(0, n_train, cfg.batch_size))
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen).to(device)
        if fast and d_step == cfg.d_steps - 1:
            fake = loss.run_G(z, y, gen)  # kept with its graph for the G step
            if share_features:  # the frozen trunk's pass over it too
                fake_features = loss.project(fake, gen)
        # Lazy R1 (StyleGAN2): every r1_every-th D update, weighted by the interval.
        n_d = step * cfg.d_steps + d_step
        r1_weight = 0.5 * cfg.r1_gamma * cfg.r1_every if cfg.r1_gamma and n_d % cfg.r1_every == 0 else 0.0
        loss_d, d_real, d_fake = loss.d_loss(real, y, z, gen, r1_weight=r1_weight, fake=fake,
                                             fake_features=fake_features)
        opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_D.step()

    if fake is None:
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=gen).to(device)
        loss_g = loss.g_loss(y, z, gen, real=real)
    else:
        loss_g = loss.g_loss(y, z, gen, fake=fake, fake_features=fake_features, real=real)
    opt_G.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_G.step()
    _update_ema(G_ema, G, ema_beta_at(step, cfg.ema_beta))
    return {"loss_G": float(loss_g.detach()), "loss_D": float(loss_d.detach()), "D_real": d_real, "D_fake": d_fake}


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _validate(cfg: GanTrainConfig) -> None:
    for name in ("steps", "batch_size", "z_dim", "channels", "checkpoint_every", "grid_every", "d_steps", "r1_every"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1:
            raise BadValueError(f"gan.{name} must be a positive integer, got {value!r}")
    for name in ("lr_g", "lr_d"):
        if not getattr(cfg, name) > 0:
            raise BadValueError(f"gan.{name} must be > 0, got {getattr(cfg, name)!r}")
    for name in ("adam_beta1", "adam_beta2"):
        if not 0.0 <= getattr(cfg, name) < 1.0:
            raise BadValueError(f"gan.{name} must be in [0, 1), got {getattr(cfg, name)!r}")
    if not cfg.r1_gamma >= 0:
        raise BadValueError(f"gan.r1_gamma must be >= 0, got {cfg.r1_gamma!r}")
    if cfg.g_template_warp and not cfg.g_template:
        raise BadValueError("gan.g_template_warp needs gan.g_template = true")
    if cfg.g_residual not in G_RESIDUALS:
        raise BadValueError(f"gan.g_residual must be one of {', '.join(G_RESIDUALS)}, got {cfg.g_residual!r}")
    for name in ("g_residual", "g_pin_sky", "g_envelope"):
        if getattr(cfg, name) not in ("bands", False) and not cfg.g_template:
            raise BadValueError(f"gan.{name} needs gan.g_template = true")
    if not (isinstance(cfg.g_sky_penalty, (int, float)) and cfg.g_sky_penalty >= 0):
        raise BadValueError(f"gan.g_sky_penalty must be a number >= 0, got {cfg.g_sky_penalty!r}")
    if cfg.g_sky_reference not in ("measured", "stamp"):
        raise BadValueError(f"gan.g_sky_reference must be measured or stamp, got {cfg.g_sky_reference!r}")
    if cfg.g_sky_reference == "stamp" and not cfg.g_sky_penalty:
        raise BadValueError("gan.g_sky_reference = stamp sets what gan.g_sky_penalty holds the sky to: "
                            "it needs gan.g_sky_penalty > 0")
    if cfg.g_pin_sky_to not in ("measured", "stamp"):
        raise BadValueError(f"gan.g_pin_sky_to must be measured or stamp, got {cfg.g_pin_sky_to!r}")
    if cfg.g_pin_sky_to == "stamp" and not (cfg.g_pin_sky and cfg.sky_scatter and cfg.sky_noise != "learnt"):
        raise BadValueError("gan.g_pin_sky_to = stamp draws each stamp's sky level with its sky depth: it needs "
                            "gan.g_pin_sky = true, gan.sky_scatter = true and a measured gan.sky_noise")
    if cfg.g_sky_penalty and cfg.sky_noise not in ("auto", "measured", "measured-correlated"):
        raise BadValueError(f"gan.g_sky_penalty needs gan.sky_noise = auto, measured or measured-correlated, "
                            f"got {cfg.sky_noise!r}")
    for name in ("g_blur", "g_colour_blur"):
        sigma = getattr(cfg, name, 0.0)
        if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and 0 <= sigma <= 8):
            raise BadValueError(f"gan.{name} must be a Gaussian sigma in pixels, 0 (off) to 8, got {sigma!r}")
    if getattr(cfg, "g_colour_blur", 0.0) and cfg.g_residual != "bands":
        raise BadValueError("gan.g_colour_blur needs gan.g_residual = bands (a luminance residual has no colour of its own)")
    for name in (*MATCH_TERMS, "g_mode_seeking"):
        weight = getattr(cfg, name, 0.0)
        if not (isinstance(weight, (int, float)) and not isinstance(weight, bool) and weight >= 0):
            raise BadValueError(f"gan.{name} must be a weight >= 0 (0: off), got {weight!r}")
    smoothing = getattr(cfg, "g_joint_smoothing", 0.0)
    if not (isinstance(smoothing, (int, float)) and not isinstance(smoothing, bool) and 0 <= smoothing <= 4):
        raise BadValueError(f"gan.g_joint_smoothing must be a kernel width in class spreads, 0 (off) to 4, got {smoothing!r}")
    if smoothing and not getattr(cfg, "g_joint_match", 0.0):
        raise BadValueError("gan.g_joint_smoothing smooths the target of gan.g_joint_match: it has no effect without "
                            "gan.g_joint_match > 0")
    if getattr(cfg, "sky_scatter_by_level", False) is not False:
        if getattr(cfg, "sky_scatter_by_level") is not True:
            raise BadValueError(f"gan.sky_scatter_by_level must be true or false, got {cfg.sky_scatter_by_level!r}")
        if not (cfg.sky_scatter and cfg.sky_noise in ("auto", "measured", "measured-correlated")):
            raise BadValueError("gan.sky_scatter_by_level draws each stamp's depth row by its sky level: it needs "
                                "gan.sky_scatter = true and a measured gan.sky_noise")
        if cfg.g_pin_sky_to == "stamp":
            raise BadValueError("gan.sky_scatter_by_level and gan.g_pin_sky_to = stamp: the one draws the row from the "
                                "level, the other the level from the row; use one of them")
    by_light = getattr(cfg, "sky_scatter_by_light", False)
    if by_light is not False:
        if by_light is not True:
            raise BadValueError(f"gan.sky_scatter_by_light must be true or false, got {by_light!r}")
        if not (cfg.sky_scatter and cfg.sky_noise in ("auto", "measured", "measured-correlated")):
            raise BadValueError("gan.sky_scatter_by_light draws each stamp's depth row by its central light: it needs "
                                "gan.sky_scatter = true and a measured gan.sky_noise")
        if cfg.g_pin_sky_to == "stamp" or getattr(cfg, "sky_scatter_by_level", False):
            raise BadValueError("gan.sky_scatter_by_light draws each stamp's depth row by its central light; "
                                "gan.sky_scatter_by_level and gan.g_pin_sky_to = stamp choose the row otherwise: use one")
    if getattr(cfg, "g_sky_level_match", 0.0):
        if getattr(cfg, "g_match_reference", "batch") != "class":
            raise BadValueError("gan.g_sky_level_match holds G's sky levels to the real stamps' of each class: "
                                "it needs gan.g_match_reference = class")
        if cfg.sky_noise not in ("auto", "measured", "measured-correlated"):
            raise BadValueError(f"gan.g_sky_level_match needs gan.sky_noise = auto, measured or measured-correlated, "
                                f"got {cfg.sky_noise!r}")
    side = getattr(cfg, "g_sky_level_side", "both")
    if side not in SKY_LEVEL_SIDES:
        raise BadValueError(f"gan.g_sky_level_side must be one of {', '.join(SKY_LEVEL_SIDES)}, got {side!r}")
    if side != "both" and not getattr(cfg, "g_sky_level_match", 0.0):
        raise BadValueError(f"gan.g_sky_level_side = {side} chooses which sky levels gan.g_sky_level_match pulls: "
                            f"it has no effect without a gan.g_sky_level_match weight above 0")
    for name, choices, terms in (("g_match_distance", MATCH_DISTANCES, STAMP_MATCH_TERMS),
                                 ("g_match_reference", MATCH_REFERENCES, MATCH_TERMS)):
        value = getattr(cfg, name, choices[0])  # the first choice: off
        if value not in choices:
            raise BadValueError(f"gan.{name} must be one of {', '.join(choices)}, got {value!r}")
        if value != choices[0] and not any(getattr(cfg, term, 0.0) for term in terms):
            raise BadValueError(f"gan.{name} = {value} has no effect without one of "
                                f"{', '.join('gan.' + term for term in terms)} > 0")
    if not (isinstance(cfg.g_template_blur, (int, float)) and not isinstance(cfg.g_template_blur, bool)
            and 0 <= cfg.g_template_blur <= 8):
        raise BadValueError(f"gan.g_template_blur must be a Gaussian sigma in pixels, 0 (off) to 8, "
                            f"got {cfg.g_template_blur!r}")
    if cfg.g_template_blur and not (cfg.g_template and cfg.g_template_trainable):
        raise BadValueError("gan.g_template_blur needs gan.g_template = true and gan.g_template_trainable = true")
    groups = cfg.sky_correlation_groups
    if not (isinstance(groups, int) and not isinstance(groups, bool) and 0 <= groups <= 16):
        raise BadValueError(f"gan.sky_correlation_groups must be a whole number from 0 (one sky kernel) to 16, "
                            f"got {groups!r}")
    if groups and not cfg.sky_scatter:
        raise BadValueError("gan.sky_correlation_groups needs gan.sky_scatter = true (a group per depth row)")
    smooth = getattr(cfg, "sky_smooth_light", False)
    if smooth is not False:
        if smooth is not True:
            raise BadValueError(f"gan.sky_smooth_light must be true or false, got {smooth!r}")
        if not groups:
            raise BadValueError("gan.sky_smooth_light smooths each stamp's light as its sky group's noise: it needs "
                                "gan.sky_correlation_groups > 0")
    weights = asymmetry_weights(cfg.g_asymmetry)
    radius = getattr(cfg, "g_asymmetry_radius", 0.0)
    if not (isinstance(radius, (int, float)) and not isinstance(radius, bool) and 0 <= radius <= 2):
        raise BadValueError(f"gan.g_asymmetry_radius must be a radius in half sides of the stamp, 0 (off) to 2, "
                            f"got {radius!r}")
    if radius and all(w == 1 for w in weights):
        raise BadValueError("gan.g_asymmetry_radius needs gan.g_asymmetry < 1 (with 1 there is no prior to confine)")
    for name, choices, what, needs in (
            ("g_centroid_radii", CENTROID_RADII, "shapes the drawn offsets", "g_drawn_centroid"),
            ("g_centroid_move", CENTROID_MOVES, "moves the stamps to the drawn offsets", "g_drawn_centroid"),
            ("g_ellipticity_draw", ELLIPTICITY_DRAWS, "shapes the drawn ellipticities", "g_drawn_ellipticity"),
            ("g_ellipticity_fill", ELLIPTICITY_FILLS, "fills the stretched stamps", "g_drawn_ellipticity")):
        value = getattr(cfg, name, choices[0])
        if value not in choices:
            raise BadValueError(f"gan.{name} must be one of {', '.join(choices)}, got {value!r}")
        if value != choices[0] and not getattr(cfg, needs, False):
            raise BadValueError(f"gan.{name} = {value} {what} of gan.{needs}: it has no "
                                f"effect without gan.{needs} = true")
    trainable = getattr(cfg, "g_ellipticity_trainable", True)
    if not isinstance(trainable, bool):
        raise BadValueError(f"gan.g_ellipticity_trainable must be true or false, got {trainable!r}")
    if not trainable and not getattr(cfg, "g_drawn_ellipticity", False):
        raise BadValueError("gan.g_ellipticity_trainable = false freezes the drawn ellipticities of "
                            "gan.g_drawn_ellipticity: it has no effect without gan.g_drawn_ellipticity = true")
    passes = getattr(cfg, "g_ellipticity_passes", 1)
    if passes != 1 and not getattr(cfg, "g_drawn_ellipticity", False):
        raise BadValueError(f"gan.g_ellipticity_passes = {passes} stretches to the drawn ellipticities of "
                            "gan.g_drawn_ellipticity: it has no effect without gan.g_drawn_ellipticity = true")
    if cfg.g_upsample not in G_UPSAMPLE:
        raise BadValueError(f"gan.g_upsample must be one of {', '.join(G_UPSAMPLE)}, got {cfg.g_upsample!r}")
    if not 0.0 <= cfg.g_out_scale <= 1.0:
        raise BadValueError(f"gan.g_out_scale must be in [0, 1], got {cfg.g_out_scale!r}")
    if not 0.0 <= cfg.ema_beta < 1.0:
        raise BadValueError(f"gan.ema_beta must be in [0, 1), got {cfg.ema_beta}")
    start, end = cfg.lr_decay_start, cfg.lr_decay_end
    if not (isinstance(start, int) and isinstance(end, int) and not isinstance(start, bool)
            and not isinstance(end, bool) and ((start == 0 and end == 0) or 0 <= start < end)):
        raise BadValueError(f"gan.lr_decay_start / gan.lr_decay_end must be steps with start < end (both 0: constant "
                            f"learning rates), got {start!r} / {end!r}")
    if cfg.discriminator not in DISCRIMINATORS:
        raise BadValueError(f"gan.discriminator must be one of {', '.join(DISCRIMINATORS)}, got {cfg.discriminator!r}")
    parse_policy(resolve_policy(cfg.diffaugment, cfg.discriminator))
    if cfg.precision not in PRECISIONS:
        raise BadValueError(f"gan.precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    if not (isinstance(cfg.d_minibatch_std, int) and not isinstance(cfg.d_minibatch_std, bool)
            and cfg.d_minibatch_std >= 0):
        raise BadValueError(f"gan.d_minibatch_std must be a group size, 0 (off) or more, got {cfg.d_minibatch_std!r}")
    if not isinstance(cfg.d_pixel_head, bool):
        raise BadValueError(f"gan.d_pixel_head must be true or false, got {cfg.d_pixel_head!r}")
    if cfg.d_pixel_head and cfg.discriminator != "projected":
        raise BadValueError("gan.d_pixel_head adds a pixel head to the projected D; it needs gan.discriminator = projected "
                            "(the SNGAN D looks at pixels already)")
    if cfg.discriminator == "projected" and cfg.r1_gamma:
        raise BadValueError("gan.r1_gamma is not supported with gan.discriminator=projected (set it to 0)")
    from .sky import SKY_NOISE

    if cfg.sky_noise not in SKY_NOISE:
        raise BadValueError(f"gan.sky_noise must be one of {', '.join(SKY_NOISE)}, got {cfg.sky_noise!r}")
    if not isinstance(cfg.d_input_size, int) or cfg.d_input_size < 0:
        raise BadValueError(f"gan.d_input_size must be 0 (the stamp size) or a positive integer, got {cfg.d_input_size!r}")


@torch.no_grad()
def _update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    # Weights only: BatchNorm statistics of G belong to G's weights, not to their
    # average; G_ema gets its own ("standing") statistics from standing_stats().
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.lerp_(p, 1.0 - beta)


@torch.no_grad()
def standing_stats(G_ema: Generator, seed: int, device: torch.device, *, n_batches: int = 8, batch: int = 64) -> None:
    """Recompute the BatchNorm statistics of the EMA generator from its own outputs.

    G's running BatchNorm statistics describe G's current weights; the EMA
    weights are an average over many steps, and with G's statistics the EMA
    generator's samples came out too bright / saturated. Here the statistics
    are the exact average over ``n_batches`` batches of seeded latents with
    classes drawn in turn (BigGAN's "standing statistics", Brock et al. 2019).
    Deterministic in ``seed``; leaves G_ema in eval mode.
    """
    bns = [m for m in G_ema.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(derive_seed(seed, 0, 6006))
    G_ema.train()
    for i in range(n_batches):
        z = torch.randn(batch, G_ema.z_dim, generator=gen).to(device)
        y = (torch.arange(batch) + i * batch).remainder(G_ema.n_classes).to(device)
        G_ema(z, y, gen)
    for m, mom in zip(bns, momenta):
        m.momentum = mom
    G_ema.eval()


def lr_scale_at(step: int, start: int, end: int) -> float:
    """Learning-rate multiplier of (0-based) ``step``: 1 before ``start``, then linear to 0 at ``end``.

    ``start = end = 0``: constant (1). A function of the step alone, so a
    resumed or chunked run follows the same schedule.
    """
    if not end or step < start:
        return 1.0
    return max(0.0, (end - step) / (end - start))


def ema_beta_at(step: int, beta: float) -> float:
    """EMA decay with a ramp-up: ``min(beta, (1 + step) / (10 + step))``.

    Short runs (a few hundred steps) would otherwise sample from weights still
    dominated by the random initialisation.
    """
    return min(beta, (1.0 + step) / (10.0 + step))


@torch.no_grad()
def init_output_bias(G: Generator, G_ema: Generator, stamps: np.ndarray, y: np.ndarray | None = None, *,
                     seed: int = 0) -> np.ndarray:
    """Set the output conv's bias of G and G_ema to ``2 * median - 1`` per band (network units).

    ``stamps``: stretched training stamps ``(N, C, H, W)`` in 0..1. About half
    of all stretched pixels are sky clipped to exactly 0, so G starts at the
    sky level instead of mid-grey. Returns the bias.

    With a template (``gan.g_template``), the bias is 0 and the template of
    class ``k`` is ``2 * median - 1`` pixel by pixel over the stamps with
    ``y == k`` (the median commutes with the monotonic stretch, so it is the
    stretched median physical stamp: a centred source on the sky's level).
    With a drawn template (``gan.g_template_warp``) its class means and
    spread are measured on ``stamps`` (:func:`galearn.gan.template.measure_shapes`,
    kept as ``G.template_shapes``) and its weights drawn from ``seed``.
    With a luminance residual (``gan.g_residual``) G's colour buffer is the
    templates' colours (:func:`galearn.gan.template.template_colours`).
    With a drawn centroid (``gan.g_drawn_centroid``) the real stamps' class
    mean centroids and within-class spread are measured
    (:func:`galearn.gan.template.measure_centroids`, kept as
    ``G.centroid_stats``; with ``gan.g_centroid_radii = "measured"`` their
    radii's quantiles too) and its weights drawn from ``seed``; with a drawn
    ellipticity (``gan.g_drawn_ellipticity``) likewise their ellipticities
    (:func:`galearn.gan.template.measure_ellipticities`, ``G.ellipticity_stats``;
    with ``gan.g_ellipticity_draw = "measured"`` their deviations' quantiles too).
    """
    med = np.median(np.asarray(stamps, dtype="f4").transpose(1, 0, 2, 3).reshape(stamps.shape[1], -1), axis=1)
    bias = (2.0 * med - 1.0).astype("f4")
    if G.template is not None:
        bias[:] = 0.0
        tmpl = np.stack([2.0 * np.median(stamps[y == k], axis=0) - 1.0 if np.any(y == k) else
                         np.broadcast_to((2.0 * med - 1.0)[:, None, None], stamps.shape[1:])
                         for k in range(G.template.shape[0])]).astype("f4")
        for net in (G, G_ema):
            net.template.copy_(torch.from_numpy(tmpl))
            if net.template_blur:
                net.template_start.copy_(torch.from_numpy(tmpl))
        if G.warp is not None:
            from .template import measure_shapes

            G.template_shapes = measure_shapes(stamps, y, (tmpl + 1.0) / 2.0)
            for net in (G, G_ema):
                net.warp.set(G.template_shapes, derive_seed(seed, 0, 7117))
        if G.residual == "luminance":
            from .template import template_colours

            colour = torch.from_numpy(template_colours((tmpl + 1.0) / 2.0))
            for net in (G, G_ema):
                net.colour.copy_(colour)
    if G.centroid is not None:
        from .template import measure_centroids

        G.centroid_stats = measure_centroids(stamps, np.zeros(len(stamps), int) if y is None else y, G.n_classes,
                                             radii=G.centroid.radii == "measured")
        for net in (G, G_ema):
            net.centroid.set(G.centroid_stats, derive_seed(seed, 0, 7118))
    if G.ellipticity is not None:
        from .template import measure_ellipticities

        G.ellipticity_stats = measure_ellipticities(stamps, np.zeros(len(stamps), int) if y is None else y, G.n_classes,
                                                    quantiles=G.ellipticity.draw == "measured")
        for net in (G, G_ema):
            net.ellipticity.set(G.ellipticity_stats, derive_seed(seed, 0, 7119))
    for net in (G, G_ema):
        net.to_img.bias.copy_(torch.from_numpy(bias[: net.to_img.out_channels]))
    return bias


def class_filename(name: str) -> str:
    """A class label as a safe file-name stem."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "class"


@torch.no_grad()
def generate(G: torch.nn.Module, labels: np.ndarray, z: np.ndarray, device: torch.device, batch: int = 256,
             *, noise_seed: int = 0, with_sky_scales: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray | None]:
    """Stretched stamps ``(N, C, H, W)`` in ``[0, 1]`` from latents ``z (N, z_dim)`` and class indices.

    G's per-pixel noise comes from a torch generator seeded with ``noise_seed``
    (same ``z``, labels and seed: identical stamps). ``with_sky_scales``: also
    return each stamp's drawn sky-sigma ratios ``(N, C)`` (``gan.sky_scatter``;
    None for a generator without them).
    """
    G.eval()
    gen = torch.Generator().manual_seed(int(noise_seed) & ((1 << 63) - 1))
    out, scales = [], []
    sky = getattr(G, "sky", None) if getattr(G, "sky_noise", False) else None
    for start in range(0, len(z), batch):
        zz = torch.as_tensor(z[start : start + batch], dtype=torch.float32, device=device)
        yy = torch.as_tensor(labels[start : start + batch], dtype=torch.int64, device=device)
        out.append(to_stretched(G(zz, yy, gen)).clamp_(0.0, 1.0).cpu().numpy())
        if sky is not None and sky.scatter:
            scales.append(sky.last_scales.cpu().numpy())
    stamps = (np.concatenate(out).astype("f4") if out
              else np.zeros((0, G.n_bands, G.stamp_size, G.stamp_size), dtype="f4"))
    if not with_sky_scales:
        return stamps
    return stamps, (np.concatenate(scales).astype("f8") if scales else None)


def save_grid(path: Path, stretched: np.ndarray, bands: list[str], n_cols: int) -> Path:
    """Save stamps ``(N, C, H, W)`` as an RGB PNG grid, row-major, ``n_cols`` per row."""
    from PIL import Image

    from ..imaging import stamps_to_rgb

    rgb = stamps_to_rgb(stretched, bands)
    n, h, w, _ = rgb.shape
    n_rows = -(-n // n_cols)
    gap = 2
    canvas = np.full((n_rows * (h + gap) + gap, n_cols * (w + gap) + gap, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, n_cols)
        canvas[gap + r * (h + gap): gap + r * (h + gap) + h, gap + c * (w + gap): gap + c * (w + gap) + w] = rgb[i]
    scale = max(1, 128 // h)
    img = Image.fromarray(canvas)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_path(path, suffix=".png") as tmp:
        img.save(tmp, format="PNG")
    return Path(path)


def _grid_latents(seed: int, n: int, z_dim: int) -> np.ndarray:
    return np.random.default_rng([int(seed), 424242]).standard_normal((n, z_dim)).astype("f4")


def _read_stats(path: Path, up_to_step: int) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [row for row in csv.DictReader(fh) if int(row["step"]) <= up_to_step]


def run_train(ws: Workspace, cfg: GanTrainConfig | GanConfig, *, resume: bool = False, progress: bool | None = None,
              cpu_budget_s: float | None = None) -> Path:
    """Train the conditional GAN on the workspace's sample; write ``WS/gan/``.

    Parameters
    ----------
    ws : Workspace
        Reads ``WS/sample.h5``.
    cfg : GanTrainConfig (or GanConfig, of which only the training part is read)
        Training settings (steps, batch size, widths, learning rates, EMA, augmentation,
        checkpoint / grid intervals, device, ``random_state``).
    resume : bool
        Continue from the newest checkpoint in ``WS/gan/`` (exactly: the next
        step is the one an uninterrupted run would take). Without a
        checkpoint, training starts from scratch.
    progress : bool or None
        tqdm progress bar (None: only on a terminal).
    cpu_budget_s : float, optional
        Stop (with a checkpoint and grid) once the run's training CPU time
        (``time.process_time`` over G+D steps, resumed runs included) reaches
        this many seconds, before ``cfg.steps`` -- for comparisons at equal
        CPU time (benchmarks).

    Returns
    -------
    Path
        The run directory ``WS/gan``.
    """
    from tqdm.auto import tqdm

    if hasattr(cfg, "realism_space"):  # a whole [gan] config: fail before training, not after it
        from .spaces import check_gan_config

        check_gan_config(cfg)
    cfg = step_config(cfg, GanTrainConfig)
    _validate(cfg)
    _seed_everything(cfg.random_state)
    device = torch.device(resolve_device(cfg.device, option="gan.device"))
    n_threads = set_threads(cfg.threads)
    sample = open_sample(ws.require(ws.sample, "cutouts"))
    check_stamp_size(sample.stamp_size)
    try:  # a list of per-band weights: one per band of the sample
        asymmetry_weights(cfg.g_asymmetry, len(sample.bands))
    except BadValueError as exc:
        raise BadValueError(f"{exc}; {sample.path} holds the bands {', '.join(sample.bands)}") from None
    if getattr(cfg, "g_colour_power_match", 0.0) and len(sample.bands) < 2:
        raise BadValueError(f"gan.g_colour_power_match compares the stamps' colours, but {sample.path} holds one band "
                            f"({sample.bands[0]}); set it to 0")
    redshift_edges = redshift_bin_edges(sample, cfg.redshift_bins)
    condition, labels = gan_condition(sample, cfg.condition, redshift_edges)
    run_dir = ws.gan
    run_dir.mkdir(parents=True, exist_ok=True)

    ckpt_file = latest_checkpoint(run_dir) if resume else None
    ckpt = load_checkpoint(ckpt_file) if ckpt_file is not None else None
    if ckpt is not None:
        old = ckpt["config"]
        defaults = {f.name: f.default for f in dataclasses.fields(GanTrainConfig)}
        for name in _FROZEN:
            # Checkpoints of older versions lack newer fields: they were trained with the default.
            was = old.get(name, LEGACY_SETTINGS.get(name, defaults[name]))
            if name == "sky_noise" and cfg.sky_noise == "auto" and was in ("measured", "measured-correlated"):
                cfg = dataclasses.replace(cfg, sky_noise=was)  # what "auto" chose when this run started
            if name == "diffaugment" and cfg.diffaugment == "auto":
                cfg = dataclasses.replace(cfg, diffaugment=was)  # what "auto" resolved to when this run started
            if was != getattr(cfg, name):
                raise BadValueError(
                    f"cannot resume {ckpt_file}: gan.{name} was {was!r}, now {getattr(cfg, name)!r} "
                    f"(train without --resume to start again)"
                )
        if ckpt.get("sample_checksum") != sample.checksum:
            raise BadValueError(f"cannot resume {ckpt_file}: {sample.path} changed since that checkpoint")
    elif resume:
        log.warning("no checkpoint in %s: training from scratch", run_dir)
    if ckpt is None:  # fresh run: forget an older run's files
        for old_file in [*ws.gan_checkpoints(), *ws.gan_grids.glob("*.png")]:
            old_file.unlink()
        ws.gan_stats.unlink(missing_ok=True)

    split = load_or_make_split(ws, sample, condition, labels, heldout_fraction=cfg.heldout_fraction,
                               random_state=cfg.random_state, redshift_edges=redshift_edges)
    classes = split["classes"]
    train_idx = training_rows(labels, split["train"], cfg.train_max_n, cfg.random_state)  # gan.train_max_n
    if len(train_idx) < len(split["train"]):
        log.info("gan.train_max_n = %d: training on %d of the %d training stamps (seeded, per class)",
                 cfg.train_max_n, len(train_idx), len(split["train"]))
    trained_on = None if ckpt is None else int(ckpt.get("n_train", len(split["train"])))  # older: the whole split
    if trained_on is not None and trained_on != len(train_idx):
        raise BadValueError(f"cannot resume {ckpt_file}: it trained on {trained_on} stamps, gan.train_max_n now "
                            f"gives {len(train_idx)} (train without --resume)")
    few = {c: int((labels[train_idx] == c).sum()) for c in classes}
    few = {c: n for c, n in few.items() if n < 8}
    if few:
        log.warning("condition classes with fewer than 8 training stamps (their template and samples are poor): %s%s",
                    few, "; use fewer gan.redshift_bins" if redshift_edges else "")
    if len(train_idx) < 2:
        raise BadValueError(f"{sample.path}: only {len(train_idx)} labelled training stamps for the GAN")
    class_index = {c: i for i, c in enumerate(classes)}
    y_all = np.array([class_index[c] for c in labels[train_idx]], dtype=np.int64)
    stamps = sample.read("stretched", train_idx)  # (n_train, C, H, W), 0..1
    bands, size = sample.bands, sample.stamp_size
    cfg, rho = resolve_auto_settings(cfg, stamps, bands)  # a fresh run: sky from the real sky, augmentation from D

    G, D, G_ema = build_networks(len(classes), len(bands), size, cfg)
    # Start G at the data's background level: the stretched stamps are mostly sky
    # (about half the pixels clipped to exactly 0, i.e. -1 here), so an output bias
    # at 2 * median - 1 per band spares the first steps of learning "dark".
    # Overwritten by a checkpoint on resume.
    init_output_bias(G, G_ema, stamps, y_all, seed=cfg.random_state)
    sky = None
    if G.sky_noise or G.pin_sky:  # measured on the real training stamps; overwritten by a checkpoint on resume
        from .sky import measure_sky, stretched_level

        sky = measure_sky(stamps, sample.stretch)
        if G.sky_noise:
            sky["noise_model"] = cfg.sky_noise
        if G.sky_noise and G.sky.correlated:  # the sky's measured autocorrelation (gan.sky_noise = measured-correlated)
            from .sky import measure_sky_correlation, noise_correlation

            if rho is None:
                rho = measure_sky_correlation(stamps)
            mid = np.array(rho.shape[-2:]) // 2
            sky["correlation_x"] = {str(d): [round(float(r), 4) for r in rho[:, mid[0], mid[1] + d]]
                                    for d in (1, 2, 4, 8, 16, 32) if mid[1] + d < rho.shape[-1]}
            drawn = noise_correlation(rho)  # what the sky noise is drawn with: the measured one's pixel-noise part
            sky["noise_correlation_x"] = {str(d): [round(float(r), 4) for r in drawn[:, mid[0], mid[1] + d]]
                                          for d in (1, 2, 3) if mid[1] + d < rho.shape[-1]}
        band_rho = None
        if G.sky_noise and G.sky.band_correlated:  # the bands' pixel noise correlated as the real sky's
            from .sky import SKY_BAND_CORRELATION_MIN, measure_sky_band_correlation

            band_rho = measure_sky_band_correlation(stamps, sample.stretch)
            sky["band_correlation"] = [[round(float(r), 4) for r in row] for row in band_rho]
            off = np.abs(band_rho - np.eye(len(band_rho))).max(initial=0.0)
            sky["band_correlation_applied"] = bool(off >= SKY_BAND_CORRELATION_MIN)
            if not sky["band_correlation_applied"]:  # separate exposures: independent bands, as before, number for number
                band_rho = None
        gain = None
        if G.sky_noise and G.sky.level_gain:  # the real pixel noise under the galaxy, over the sky's
            from .sky import measure_noise_gain

            gain = measure_noise_gain(_measured_subset(stamps, cfg.random_state), sample.stretch, sky)
            sky["noise_gain"] = {"level": [[round(float(v), 5) for v in row] for row in gain[0]],
                                 "gain": [[round(float(v), 3) for v in row] for row in gain[1]]}
        neighbours = None
        if G.sky_noise and G.sky.neighbours:  # the real stamps' neighbouring sources (gan.g_neighbours)
            from .neighbours import measure_neighbours
            from .sky import linearise

            neighbours = measure_neighbours(linearise(_measured_subset(stamps, cfg.random_state), sample.stretch)[0],
                                            sky["level"], sky["sigma"])
            counts, sources = neighbours
            sky["neighbours"] = {"per_stamp_mean": round(float(counts.mean()), 3),
                                 "stamps_with_any": round(float((counts > 0).mean()), 3), "sources": int(len(sources)),
                                 "sigma_px_quantiles": [round(float(v), 2) for v in
                                                        (np.quantile(sources[:, -3], (0.05, 0.5, 0.95)) if len(sources) else ())]}
        ratios = row_group = None
        if G.sky_noise and G.sky.scatter:  # each real stamp's own sigma over the pooled one (gan.sky_scatter)
            from .sky import measure_sky_scatter

            ratios, rows, own = measure_sky_scatter(stamps, sample.stretch, sky, random_state=cfg.random_state,
                                                    return_stamps=True)
            if G.sky.row_levels or G.sky.by_level:  # each row's real stamp's own noiseless sky level
                own = np.where(np.isfinite(own), own, np.asarray(sky["level"], dtype="f8")[None])
                row_levels = 2.0 * stretched_level({**sky, "level": own}) - 1.0
                sky["row_level_quantiles"] = {str(q): [round(float(v), 5) for v in np.quantile(own, q, axis=0)]
                                              for q in (0.05, 0.5, 0.95)}  # linear units, as "level"
            if G.sky.by_light:  # each row's real stamp's central light (gan.sky_scatter_by_light)
                from .sky import central_light

                row_light = central_light(np.asarray(stamps[rows], dtype="f4"))
                sky["row_light_quantiles"] = {str(q): [round(float(v), 5) for v in np.quantile(row_light, q, axis=0)]
                                              for q in (0.05, 0.5, 0.95)}  # stretched units
            sky["sigma_ratio_quantiles"] = {str(q): [round(float(r), 3) for r in np.quantile(ratios, q, axis=0)]
                                            for q in (0.05, 0.5, 0.95)}
            if G.sky.groups:  # a sky kernel per group of real stamps by sky smoothness (gan.sky_correlation_groups)
                from .sky import measure_grouped_sky_correlation

                group, drawn = measure_grouped_sky_correlation(stamps, G.sky.groups)
                row_group = group[rows]
                sky["group_noise_correlation_x1"] = [[round(float(r), 4) for r in g[:, mid[0], mid[1] + 1]]
                                                     for g in drawn]
        for net in (G, G_ema):
            if G.sky_noise:
                net.sky.set(sky)
                if G.sky.correlated:
                    net.sky.set_correlation(drawn)
                if band_rho is not None:
                    net.sky.set_band_correlation(band_rho)
                if gain is not None:
                    net.sky.set_noise_gain(*gain)
                if neighbours is not None:
                    net.sky.set_neighbours(*neighbours, random_state=cfg.random_state)
                if ratios is not None:
                    net.sky.set_scatter(ratios)
                if G.sky.row_levels or G.sky.by_level:
                    net.sky.set_row_levels(row_levels)
                if G.sky.by_light:
                    net.sky.set_row_light(row_light)
                if row_group is not None:
                    net.sky.set_groups(row_group)
            if G.sky_penalty:  # the ring's target: the real stamps' noiseless sky level, linear units
                net.sky_ring_level.copy_(torch.as_tensor(sky["level"], dtype=torch.float32))
            if G.pin_sky:  # the noiseless sky level of the real stamps, network units
                net.sky_level.copy_(torch.from_numpy(2.0 * stretched_level(sky) - 1.0))
    G, D, G_ema = G.to(device), D.to(device), G_ema.to(device)
    if cfg.fast_step and device.type == "cpu":
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    betas = (cfg.adam_beta1, cfg.adam_beta2)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=betas)
    start, seconds, cpu_seconds = 0, 0.0, 0.0
    amp_dtype = autocast_dtype(cfg.precision, device)
    if ckpt is not None:
        try:
            G.load_state_dict(ckpt["G"])
            D.load_state_dict(ckpt["D"])
            G_ema.load_state_dict(ckpt["G_ema"])
            opt_G.load_state_dict(ckpt["opt_G"])
            opt_D.load_state_dict(ckpt["opt_D"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise BadValueError(f"cannot resume {ckpt_file}: its networks do not match this galearn version's "
                                f"({type(exc).__name__}); train without --resume") from exc
        start, seconds = int(ckpt["step"]), float(ckpt.get("seconds", 0.0))
        cpu_seconds = float(ckpt.get("cpu_seconds", 0.0))
        set_rng_state(ckpt["rng"])

    info = {
        "config": dataclasses.asdict(cfg), "condition": condition, "redshift_edges": list(redshift_edges),
        "classes": classes, "bands": bands, "stamp_size": size, "n_train": int(len(train_idx)), "n_train_split": int(len(split["train"])),
        "n_heldout": int(len(split["heldout"])),
        "class_counts_train": {c: int((y_all == i).sum()) for i, c in enumerate(classes)},
        "device": str(device), "threads": n_threads, "machine": machine_description(str(device)),
        "sample": str(sample.path),
        "sample_checksum": sample.checksum, "galearn_version": __version__,
        "parameters": {"G": sum(p.numel() for p in G.parameters()), "D": sum(p.numel() for p in D.parameters())},
        "discriminator": cfg.discriminator,
        "d_feature_network": getattr(D, "provenance", None),
        "autocast": str(amp_dtype) if amp_dtype is not None else None,
        "sky": sky,
        "template_shapes": getattr(G, "template_shapes", None),
        "centroid_stats": getattr(G, "centroid_stats", None),
        "ellipticity_stats": getattr(G, "ellipticity_stats", None),
    }
    atomic_write_text(ws.gan_config, json.dumps(info, indent=2) + "\n")

    stats_path = ws.gan_stats
    rows = _read_stats(stats_path, start)
    with atomic_path(stats_path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            writer = csv.DictWriter(fh, fieldnames=STATS_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    reference = None
    if getattr(cfg, "g_match_reference", "batch") == "class" and any(getattr(cfg, n, 0.0) for n in MATCH_TERMS):
        from .loss import ClassReference  # the matching terms' targets: each class over the whole training set

        sky_levels = None
        if getattr(cfg, "g_sky_level_match", 0.0):  # each real stamp's own noiseless sky level, linear units
            sky_levels = _stamp_sky_levels(stamps, sample.stretch)
        reference = ClassReference(stamps * 2.0 - 1.0, y_all, len(classes),  # network units, as from_stretched
                                   colours=bool(getattr(cfg, "g_colour_power_match", 0.0)),
                                   joint=bool(getattr(cfg, "g_joint_match", 0.0)), sky_levels=sky_levels).to(device)
    loss = GanLoss(G, D, cfg.diffaugment, autocast_dtype=amp_dtype, power_match=float(getattr(cfg, "g_power_match", 0.0)),
                   pixel_match=float(getattr(cfg, "g_pixel_match", 0.0)),
                   stamp_power_match=float(getattr(cfg, "g_stamp_power_match", 0.0)), reference=reference,
                   colour_power_match=float(getattr(cfg, "g_colour_power_match", 0.0)),
                   profile_match=float(getattr(cfg, "g_profile_match", 0.0)),
                   joint_match=float(getattr(cfg, "g_joint_match", 0.0)),
                   joint_smoothing=float(getattr(cfg, "g_joint_smoothing", 0.0)),
                   mode_seeking=float(getattr(cfg, "g_mode_seeking", 0.0)),
                   match_distance=getattr(cfg, "g_match_distance", "wasserstein"),
                   sky_level_match=float(getattr(cfg, "g_sky_level_match", 0.0)),
                   sky_level_side=getattr(cfg, "g_sky_level_side", "both"))
    grid_z = _grid_latents(cfg.random_state, 8, cfg.z_dim)
    n_train = len(train_idx)

    def checkpoint(step: int) -> None:
        standing_stats(G_ema, cfg.random_state, device)
        state = {
            "G": G.state_dict(), "D": D.state_dict(), "G_ema": G_ema.state_dict(),
            "opt_G": opt_G.state_dict(), "opt_D": opt_D.state_dict(), "step": step,
            "config": dataclasses.asdict(cfg), "version": __version__, "rng": rng_state(),
            "classes": list(classes), "bands": list(bands), "stamp_size": int(size), "n_bands": len(bands),
            "condition": condition, "redshift_edges": list(redshift_edges), "sample_checksum": sample.checksum,
            "n_train": int(len(train_idx)), "seconds": seconds,
            "cpu_seconds": cpu_seconds, "discriminator": cfg.discriminator,
            "d_feature_network": getattr(D, "provenance", None),
        }
        save_checkpoint(checkpoint_path(run_dir, step), state)

    def grid(step: int) -> None:
        y = np.repeat(np.arange(len(classes)), len(grid_z))
        z = np.tile(grid_z, (len(classes), 1))
        standing_stats(G_ema, cfg.random_state, device)
        save_grid(ws.gan_grids / f"step-{step:06d}.png", generate(G_ema, y, z, device, noise_seed=cfg.random_state),
                  bands, len(grid_z))

    bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, desc="gan train", disable=progress is False
               if progress is not None else None)
    # SIGINT / SIGTERM: finish the step in progress, checkpoint it, raise Interrupted (resumable exactly).
    with stop_requests("GAN") as stop, open(stats_path, "a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=STATS_COLUMNS)
        G.train()
        D.train()
        for step in bar:
            t0, c0 = time.perf_counter(), time.process_time()
            out = train_step(step, G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D, loss=loss, stamps=stamps,
                             y_all=y_all, cfg=cfg, device=device)
            cpu_seconds += time.process_time() - c0
            seconds += time.perf_counter() - t0
            done = step + 1
            row = {"step": done, "loss_G": f"{out['loss_G']:.5f}", "loss_D": f"{out['loss_D']:.5f}",
                   "D_real": f"{out['D_real']:.5f}", "D_fake": f"{out['D_fake']:.5f}", "seconds": f"{seconds:.2f}",
                   "cpu_seconds": f"{cpu_seconds:.2f}"}
            writer.writerow(row)
            fh.flush()
            bar.set_postfix(loss_G=row["loss_G"], loss_D=row["loss_D"], refresh=False)
            out_of_budget = cpu_budget_s is not None and cpu_seconds >= cpu_budget_s
            saved = done % cfg.checkpoint_every == 0 or done == cfg.steps or out_of_budget
            if saved:
                checkpoint(done)
            if done % cfg.grid_every == 0 or done == cfg.steps or out_of_budget:
                grid(done)
            if stop.requested and done < cfg.steps:
                if not saved:
                    checkpoint(done)
                bar.close()
                raise Interrupted(
                    f"gan train interrupted at step {done} of {cfg.steps}; saved {checkpoint_path(run_dir, done)}; "
                    f"continue with `galearn gan train --workspace {ws.root} --resume` (same options)",
                    stop.signum)
            if out_of_budget:
                log.info("CPU budget of %.0f s reached after %d steps", cpu_budget_s, done)
                break
    bar.close()

    # Final per-class grids (8 x 8) from the EMA generator.
    if start < cfg.steps or not ws.gan_grids.exists():
        z64 = np.random.default_rng([cfg.random_state, 424243]).standard_normal((64, cfg.z_dim)).astype("f4")
        for i, c in enumerate(classes):
            stamps_c = generate(G_ema, np.full(64, i), z64, device, noise_seed=cfg.random_state)
            save_grid(ws.gan_grids / f"{class_filename(c)}.png", stamps_c, bands, 8)
    last = latest_checkpoint(run_dir)
    update_manifest(ws, {"gan": {
        "run": relative_to_workspace(ws, run_dir), "split": relative_to_workspace(ws, ws.gan_split),
        "checkpoint": None if last is None else relative_to_workspace(ws, last), "steps": int(cfg.steps),
        "condition": condition, "redshift_edges": list(redshift_edges), "classes": list(classes),
        "sample_checksum": sample.checksum, "settings": dataclasses.asdict(cfg)}})
    if stop.requested:  # asked during the last step: the run is complete, but what follows it must not start
        raise Interrupted(f"gan train stopped as asked after its last step ({cfg.steps}); the training is complete "
                          f"and saved in {run_dir}; nothing after it was started", stop.signum)
    return run_dir
