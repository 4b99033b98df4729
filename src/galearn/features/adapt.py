"""Self-supervised adaptation of a pre-trained backbone to the workspace's own stamps.

``galearn adapt`` fine-tunes an ImageNet backbone (default ``efficientnet-lite0``)
on the stretched stamps of ``WS/sample.h5`` with a contrastive objective
(SimCLR, Chen et al. 2020; as used for galaxies by Hayat et al. 2021): two
randomly augmented views of the same galaxy are pulled together in a small
projection space, views of different galaxies pushed apart (NT-Xent loss). No
label is ever read.

The augmentations are the symmetries and nuisances of a galaxy image and
nothing else:

* flips and arbitrary rotations (which include the 90-degree ones),
* small shifts (``max_shift``, fraction of the side) and scale jitter,
* PSF-like Gaussian blur (``blur_sigma``, pixels of the network input),
* Gaussian pixel noise (``noise_sigma``, in stretched units 0..1).

There is deliberately no colour jitter: every transformation is applied
identically to all bands, so band ratios -- the colour information the UVJ
comparison rests on -- are untouched.

Randomness is derived from ``(random_state, step)`` (the batch order from
``(random_state, epoch)``), so a run that stops and is re-run continues
exactly where it stopped: the checkpoint ``WS/backbones/adapt-ckpt.pt`` holds
the network, projection head, optimiser state and step, and is reused when
the settings and the sample are the same.

The result, ``WS/backbones/adapted.pt``, is a plain dictionary of tensors and
strings (``torch.load(..., weights_only=True)``)::

    {"base": "efficientnet-lite0", "base_weights": "...", "state_dict": {...},
     "settings": {...}, "sample_checksum": "...", "galearn_version": "...",
     "history": {...}}

and ``load_backbone("adapted", workspace=ws)`` (``galearn features --backbone
adapted``) loads it through :func:`load_adapted`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..config import AdaptConfig
from ..errors import BadValueError, Interrupted, MissingInputError
from ..runtime import derive_seed, resolve_device, stop_requests
from ..store import Workspace, atomic_path, file_sha256, open_sample
from .backbones import Backbone, build_architecture, load_backbone, register_alias, stage_parameters
from .preprocess import prepare_batch

__all__ = [
    "AugmentSettings",
    "augment_views",
    "ProjectionHead",
    "nt_xent_loss",
    "adapt_backbone",
    "run_adapt",
    "load_adapted",
    "DEFAULT_ADAPT_INPUT_SIZE",
]

log = logging.getLogger("galearn.features")

DEFAULT_ADAPT_INPUT_SIZE = 128  # measured: 128 beat 64 on real images and the mock field (docs/adapt.md)


# --------------------------------------------------------------------------- augmentations


@dataclass(frozen=True)
class AugmentSettings:
    """Label-free, colour-preserving augmentations (the same for every band).

    Attributes
    ----------
    flip : bool
        Random left-right flip (with rotations: all mirror images).
    rotate : bool
        Random rotation by an arbitrary angle in [0, 360) degrees.
    max_shift : float
        Largest shift along each axis, as a fraction of the stamp side.
    scale : tuple of 2 floats
        Range of the zoom factor (1 = unchanged; > 1 magnifies).
    blur_sigma : tuple of 2 floats
        Range of the Gaussian blur sigma, pixels of the network input.
    noise_sigma : tuple of 2 floats
        Range of the Gaussian noise sigma, stretched units (stamps are ~0..1).
    right_angles : bool
        Rotations only by multiples of 90 degrees (with ``flip``: the 8 symmetries
        of the square), so no pixel is interpolated.
    whole_pixels : bool
        Shifts rounded to whole pixels. With ``right_angles``, ``scale = (1, 1)``
        and no blur or noise, every view holds the stamp's own pixel values.
    """

    flip: bool = True
    rotate: bool = True
    max_shift: float = 0.06
    scale: tuple[float, float] = (0.85, 1.15)
    blur_sigma: tuple[float, float] = (0.0, 1.2)
    noise_sigma: tuple[float, float] = (0.0, 0.03)
    right_angles: bool = False
    whole_pixels: bool = False

    def validate(self) -> None:
        if not 0 <= self.max_shift < 0.5:
            raise BadValueError(f"adapt max_shift must be in [0, 0.5) (fraction of the side), got {self.max_shift}")
        lo, hi = self.scale
        if not 0 < lo <= hi:
            raise BadValueError(f"adapt scale range must satisfy 0 < low <= high, got {self.scale}")
        for name in ("blur_sigma", "noise_sigma"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise BadValueError(f"adapt {name} range must satisfy 0 <= low <= high, got {(lo, hi)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        for exact in ("right_angles", "whole_pixels"):  # left out when off: adapt fingerprints from before them hold
            if not d[exact]:
                del d[exact]
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image of ``x`` (N, C, H, W) with its own Gaussian ``sigma`` (N,) in pixels (separable)."""
    n, c, h, w = x.shape
    smax = float(sigma.max()) if len(sigma) else 0.0
    if smax < 0.05:
        return x
    radius = max(1, int(math.ceil(3.0 * smax)))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    s = sigma.to(x.device, x.dtype).clamp_min(1e-3).view(n, 1)
    k = torch.exp(-0.5 * (t.view(1, -1) / s) ** 2)
    k = k / k.sum(dim=1, keepdim=True)  # (N, K); sums to 1: flux and colour preserved
    k = k.repeat_interleave(c, dim=0)  # (N*C, K): the same kernel for every band
    y = x.reshape(1, n * c, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(y, k.view(n * c, 1, -1, 1), groups=n * c)
    return y.reshape(n, c, h, w)


def augment_views(
    x: torch.Tensor,
    settings: AugmentSettings,
    gen: torch.Generator,
    *,
    std: tuple[float, float, float] | None = None,
) -> torch.Tensor:
    """One random augmented view of every image of a batch (all bands alike).

    Parameters
    ----------
    x : torch.Tensor (N, C, H, W)
        Network input (normalised or not: every operation is linear per band
        except the noise, whose sigma is divided by ``std`` per band).
    settings : AugmentSettings
    gen : torch.Generator
        CPU generator; all random numbers are drawn from it (device independent).
    std : tuple of C floats, optional
        Per-band normalisation std of ``x`` (noise is given in stretched units).

    Returns
    -------
    torch.Tensor (N, C, H, W)
    """
    n, c = x.shape[:2]
    dev, dt = x.device, x.dtype
    angle = _uniform(gen, n, 0.0, 2 * math.pi) if settings.rotate else torch.zeros(n)
    if settings.right_angles:
        angle = torch.round(angle / (math.pi / 2)) % 4 * (math.pi / 2)
    flip = (torch.rand(n, generator=gen) < 0.5).float() * 2 - 1 if settings.flip else torch.ones(n)
    zoom = torch.exp(_uniform(gen, n, math.log(settings.scale[0]), math.log(settings.scale[1])))
    shift = _uniform(gen, 2 * n, -2 * settings.max_shift, 2 * settings.max_shift).view(n, 2)  # grid units: side = 2
    if settings.whole_pixels:  # (x, y) in grid units of one pixel: 2 / width, 2 / height
        pixel = torch.tensor([2.0 / x.shape[-1], 2.0 / x.shape[-2]])
        shift = torch.round(shift / pixel) * pixel
    blur = _uniform(gen, n, *settings.blur_sigma)
    noise = _uniform(gen, n, *settings.noise_sigma)
    eps = torch.randn(x.shape, generator=gen)
    # output grid -> input grid: rotate, mirror x, divide by the zoom, shift
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = cos * flip / zoom
    theta[:, 0, 1] = -sin / zoom
    theta[:, 1, 0] = sin * flip / zoom
    theta[:, 1, 1] = cos / zoom
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(dev, dt), list(x.shape), align_corners=False)
    y = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    y = _gaussian_blur(y, blur)
    scale = noise.view(n, 1, 1, 1).to(dev, dt)
    if std is not None:
        scale = scale / torch.tensor(std, device=dev, dtype=dt).view(1, c, 1, 1)
    return y + scale * eps.to(dev, dt)


# --------------------------------------------------------------------------- loss and head


class ProjectionHead(nn.Module):
    """SimCLR projection MLP: ``dim -> hidden -> out`` (BatchNorm, ReLU)."""

    def __init__(self, dim: int, hidden: int = 512, out: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                                 nn.Linear(hidden, out))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Normalised-temperature cross entropy (SimCLR) of two views ``(N, d)`` each.

    For every one of the 2N embeddings the other view of the same galaxy is the
    positive and the remaining 2N - 2 are negatives.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), dim=1)
    sim = z @ z.t() / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


# --------------------------------------------------------------------------- training


def _freeze(model: nn.Module, n_frozen: int) -> list[str]:
    """Freeze the first ``n_frozen`` stages of the feature module (at most all but the last); return their names.

    Stages are those of :func:`galearn.features.backbones.stage_parameters`
    (timm encoders: timm's coarse parameter groups, stem first).
    """
    frozen: list[str] = []
    if n_frozen > 0:
        stages = stage_parameters(model)
        if not stages:
            raise BadValueError("adapt freeze_stages needs a registry backbone with named stages")
        names = list(stages)
        if n_frozen >= len(names):
            log.warning("adapt: freeze_stages=%d would freeze every stage of %s; keeping the last one trainable",
                        n_frozen, ", ".join(names))
            n_frozen = len(names) - 1
        for name in names[:n_frozen]:
            for p in stages[name]:
                p.requires_grad_(False)
            frozen.append(name)
    return frozen


def _set_train_mode(model: nn.Module, frozen: list[str], bn: str) -> None:
    model.train()
    if frozen:
        # modules whose parameters are all frozen: fixed BN statistics (and no dropout) too
        for m in model.modules():
            params = list(m.parameters())
            if params and not any(p.requires_grad for p in params):
                m.eval()
    if bn == "frozen":
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _settings_fingerprint(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def adapt_backbone(
    backbone,
    images: torch.Tensor,
    *,
    epochs: int = 10,
    batch_size: int = 64,
    learning_rate: float = 1e-4,
    head_learning_rate: float = 1e-3,
    weight_decay: float = 1e-5,
    temperature: float = 0.2,
    freeze_stages: int = 0,
    bn: str = "frozen",
    augment: AugmentSettings = AugmentSettings(),
    random_state: int = 0,
    budget_minutes: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 25,
    fingerprint: str = "",
    max_steps: int | None = None,
    progress: bool = True,
    desc: str = "adapt",
) -> dict:
    """SimCLR fine-tuning of ``backbone.model`` in place on prepared images.

    Parameters
    ----------
    backbone : galearn.features.Backbone
        Its ``model`` is trained in place (and left in eval mode).
    images : torch.Tensor (N, 3, S, S)
        Normalised network input (:func:`galearn.features.prepare_batch`), on CPU.
    epochs : int
        Passes over the images (steps per epoch: ``N // batch_size``, at least 1).
    batch_size : int
        Galaxies per step (2 views each).
    learning_rate, head_learning_rate : float
        AdamW learning rates of the backbone and the projection head.
    weight_decay : float
    temperature : float
        NT-Xent temperature.
    freeze_stages : int
        Number of leading stages kept fixed (weights and BN statistics).
    bn : {"train", "frozen"}
        ``train``: BatchNorm statistics adapt to the stamps; ``frozen``: ImageNet statistics kept.
    augment : AugmentSettings
    random_state : int
        Seed; the batch order and augmentations of step ``s`` depend only on ``(random_state, s)``.
    budget_minutes : float or None
        Stop after this much wall time (checkpointed; a re-run continues).
    checkpoint : path, optional
        Where the resumable state is kept; reused when ``fingerprint`` matches.
    checkpoint_every : int
        Steps between checkpoints.
    fingerprint : str
        Identifies the settings and the data; a checkpoint with another is ignored.
    max_steps : int or None
        Stop after this many steps in this call (checkpointed, like the budget).
    progress : bool
        tqdm progress bar.
    desc : str
        Its label.

    Returns
    -------
    dict
        ``history``: ``step``, ``total_steps``, ``finished`` (bool), ``losses``
        (mean per epoch), ``seconds`` (this call), ``resumed_from`` (step).
    """
    from tqdm.auto import tqdm

    if bn not in ("train", "frozen"):
        raise BadValueError(f"adapt bn must be 'train' or 'frozen', got {bn!r}")
    if epochs < 1 or batch_size < 2:
        raise BadValueError(f"adapt needs epochs >= 1 and batch_size >= 2, got {epochs}, {batch_size}")
    augment.validate()
    n = images.shape[0]
    if n < 2:
        raise BadValueError(f"adapt needs at least 2 stamps, the sample has {n}")
    batch = min(batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total = epochs * steps_per_epoch
    device = torch.device(backbone.device)
    model = backbone.model.to(device, memory_format=torch.channels_last)
    frozen = _freeze(model, freeze_stages)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(random_state, 0))
        head = ProjectionHead(backbone.dim).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": params, "lr": learning_rate},
                             {"params": head.parameters(), "lr": head_learning_rate}],
                            weight_decay=weight_decay)
    step, losses, resumed_from = 0, [], 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is ignored, not fatal
            log.warning("ignoring unreadable adapt checkpoint %s (%s)", ckpt, exc)
            state = None
        if state is not None and state.get("fingerprint") == fingerprint:
            model.load_state_dict(state["model"])
            head.load_state_dict(state["head"])
            opt.load_state_dict(state["optimizer"])
            step = resumed_from = int(state["step"])
            losses = [float(v) for v in state["losses"]]
            if step < total:
                log.warning("adapt: resuming from %s at step %d of %d", ckpt, step, total)
            else:
                log.info("adapt: %s has finished its %d steps; reusing it", ckpt, total)
        elif state is not None:
            log.warning("adapt: checkpoint %s was made with other settings or stamps; starting afresh", ckpt)

    def save() -> None:
        if ckpt is None:
            return
        state = {"fingerprint": fingerprint, "model": model.state_dict(), "head": head.state_dict(),
                 "optimizer": opt.state_dict(), "step": step, "losses": losses,
                 "galearn_version": __version__}
        with atomic_path(ckpt, suffix=".pt.tmp") as tmp:
            torch.save(state, tmp)

    # cosine learning-rate decay over the whole run (a function of the step: resumable)
    base_lrs = [g["lr"] for g in opt.param_groups]
    t0 = time.perf_counter()
    deadline = t0 + 60.0 * budget_minutes if budget_minutes is not None else math.inf
    stop_at = total if max_steps is None else min(total, step + int(max_steps))
    epoch_losses: list[float] = []
    std = tuple(backbone.std)
    with stop_requests("adapt") as stop, \
            tqdm(total=total, initial=step, desc=desc, unit="step", disable=None if progress else True) as bar:
        while step < stop_at:
            if time.perf_counter() > deadline:
                log.warning("adapt: budget of %.1f min reached at step %d of %d (re-run to continue)",
                            budget_minutes, step, total)
                break
            epoch, k = divmod(step, steps_per_epoch)
            order = np.random.default_rng([int(random_state), epoch]).permutation(n)
            idx = torch.from_numpy(np.sort(order[k * batch:(k + 1) * batch]))
            gen = torch.Generator().manual_seed(derive_seed(random_state, 1, step))
            torch.manual_seed(derive_seed(random_state, 2, step))  # drop-connect etc. inside the model
            x = images[idx].to(device, non_blocking=True)  # random numbers come from the CPU generator
            views = torch.cat([augment_views(x, augment, gen, std=std), augment_views(x, augment, gen, std=std)])
            views = views.contiguous(memory_format=torch.channels_last)
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            _set_train_mode(model, frozen, bn)
            head.train()
            z = head(model(views).float())
            loss = nt_xent_loss(z[: len(idx)], z[len(idx):], temperature)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{epoch_losses[-1]:.3f}")
            if step % steps_per_epoch == 0:
                losses.append(float(np.mean(epoch_losses)))
                epoch_losses = []
            saved = step % checkpoint_every == 0 or step == total
            if saved:
                save()
            if stop.requested:  # SIGINT / SIGTERM (the last step too): save this step, say how to go on
                if not saved:
                    save()
                raise Interrupted(
                    f"adapt interrupted at step {step} of {total}; saved {ckpt}; run the same `galearn adapt` "
                    "command again to continue from there" if ckpt is not None else
                    f"adapt interrupted at step {step} of {total} (no checkpoint file given)", stop.signum)
    if step < total:
        save()
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)
    return {"step": step, "total_steps": total, "finished": step >= total, "losses": losses,
            "seconds": round(time.perf_counter() - t0, 2), "resumed_from": resumed_from}


# --------------------------------------------------------------------------- stage


def resolve_settings(cfg: AdaptConfig) -> dict:
    """The full, JSON-friendly adaptation settings of an :class:`~galearn.config.AdaptConfig`."""
    aug = AugmentSettings(
        flip=True,
        rotate=True,
        max_shift=float(cfg.max_shift),
        scale=tuple(float(v) for v in cfg.scale),
        blur_sigma=tuple(float(v) for v in cfg.blur_sigma),
        noise_sigma=tuple(float(v) for v in cfg.noise_sigma),
    )
    aug.validate()
    settings = {
        "method": "simclr",
        "backbone": str(cfg.backbone),
        "weights": None if cfg.weights is None else str(cfg.weights),
        "epochs": int(cfg.epochs),
        "batch_size": int(cfg.batch_size),
        "learning_rate": float(cfg.learning_rate),
        "head_learning_rate": float(cfg.head_learning_rate),
        "weight_decay": float(cfg.weight_decay),
        "temperature": float(cfg.temperature),
        "freeze_stages": int(cfg.freeze_stages),
        "bn": str(cfg.bn),
        "input_size": int(DEFAULT_ADAPT_INPUT_SIZE if cfg.input_size is None else cfg.input_size),
        "random_state": int(cfg.random_state),
        "augment": aug.to_dict(),
    }
    if settings["epochs"] < 1:
        raise BadValueError(f"adapt epochs must be >= 1, got {settings['epochs']}")
    if settings["batch_size"] < 2:
        raise BadValueError(f"adapt batch_size must be >= 2 (contrastive pairs), got {settings['batch_size']}")
    if settings["bn"] not in ("train", "frozen"):
        raise BadValueError(f"adapt bn must be 'train' or 'frozen', got {settings['bn']!r}")
    if settings["freeze_stages"] < 0:
        raise BadValueError(f"adapt freeze_stages must be >= 0, got {settings['freeze_stages']}")
    if cfg.budget_minutes is not None and cfg.budget_minutes < 0:
        raise BadValueError(f"adapt budget_minutes must be >= 0, got {cfg.budget_minutes}")
    if settings["input_size"] < 16:
        raise BadValueError(f"adapt input_size must be >= 16 pixels, got {settings['input_size']}")
    if settings["temperature"] <= 0:
        raise BadValueError(f"adapt temperature must be > 0, got {settings['temperature']}")
    return settings


def run_adapt(ws: Workspace, cfg: AdaptConfig, *, progress: bool = True) -> Path:
    """``galearn adapt``: SimCLR fine-tuning of a backbone on ``WS/sample.h5`` (no labels).

    Parameters
    ----------
    ws : Workspace
    cfg : galearn.config.AdaptConfig
        ``backbone`` (base name), ``weights``, ``epochs``, ``budget_minutes``
        (wall-time cap of this call), ``batch_size``, ``learning_rate``,
        ``input_size`` (pixels), ``freeze_stages``, ``bn``, augmentation
        ranges, ``random_state``, ``device``.
    progress : bool
        tqdm progress bar.

    Returns
    -------
    Path
        ``WS/backbones/adapted.pt``. A run cut short by the budget still writes
        it (from the weights reached) and keeps ``WS/backbones/adapt-ckpt.pt``;
        running again with the same settings continues from there. A finished
        run with the same settings and stamps returns at once.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    if str(cfg.backbone).lower() == "adapted":
        raise BadValueError("--backbone adapted cannot be adapted again; name its base (e.g. efficientnet-lite0)")
    settings = resolve_settings(cfg)
    sample = open_sample(ws.require(ws.sample, "cutouts` or `galearn ingest-images"))
    fingerprint = _settings_fingerprint({**settings, "sample_checksum": sample.checksum})
    out = ws.adapted_backbone
    if out.exists():
        try:
            prev = torch.load(out, map_location="cpu", weights_only=True)
            if prev.get("fingerprint") == fingerprint and prev.get("history", {}).get("finished"):
                log.warning("adapt: %s is up to date (same settings and stamps)", out)
                return out
        except Exception:  # noqa: BLE001 - unreadable: rebuild
            pass
    backbone = load_backbone(cfg.backbone, weights=cfg.weights, workspace=ws, device=cfg.device,
                             random_state=cfg.random_state,
                             allow_download=bool(getattr(cfg, "allow_download", False)))
    if backbone.fixed_input_size and settings["input_size"] != backbone.native_size:
        raise BadValueError(f"--input-size {settings['input_size']}: {backbone.name} takes only "
                            f"{backbone.native_size}-pixel inputs (use --input-size {backbone.native_size})")
    images = torch.cat([
        prepare_batch(x, sample.bands, backbone, input_size=settings["input_size"]).float().cpu().contiguous()
        for _, x in sample.iter_batches(512)
    ])
    history = adapt_backbone(
        backbone, images,
        epochs=settings["epochs"], batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], head_learning_rate=settings["head_learning_rate"],
        weight_decay=settings["weight_decay"], temperature=settings["temperature"],
        freeze_stages=settings["freeze_stages"], bn=settings["bn"],
        augment=AugmentSettings(**{k: tuple(v) if isinstance(v, list) else v
                                   for k, v in settings["augment"].items()}),
        random_state=settings["random_state"], budget_minutes=cfg.budget_minutes,
        checkpoint=ws.adapt_checkpoint, fingerprint=fingerprint, progress=progress,
    )
    state = {
        "base": backbone.name,
        "base_weights": backbone.weights,
        "base_weights_sha256": backbone.weights_sha256,
        "base_options": json.dumps(backbone.options),  # rebuilds a timm:ARCH base (build_architecture)
        "layers": list(backbone.layers),
        "state_dict": {k: v.detach().cpu() for k, v in backbone.model.state_dict().items()},
        "settings": settings,
        "sample_checksum": sample.checksum,
        "galearn_version": __version__,
        "fingerprint": fingerprint,
        "history": history,
    }
    with atomic_path(out, suffix=".pt.tmp") as tmp:
        torch.save(state, tmp)
    return out


def load_adapted(path: str | Path, *, device: str | None = None):
    """Load ``adapted.pt`` as a :class:`~galearn.features.Backbone` (name ``adapted``).

    The base backbone is built through the registry (its pre-trained weights
    are not needed: every tensor comes from the file), then the fine-tuned
    state dict is loaded into ``Backbone.model``. ``native_size`` is the input
    size the adaptation was trained at.
    """
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: run `galearn adapt` first")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        raise BadValueError(f"{path} is not a galearn adapted backbone (not a file written by torch.save: "
                            f"{type(exc).__name__})") from exc
    if not isinstance(state, dict) or "base" not in state or "state_dict" not in state:
        raise BadValueError(f"{path} is not a galearn adapted backbone (no 'base' / 'state_dict')")
    base = str(state["base"])
    layers = tuple(state.get("layers") or ()) or None
    try:
        options = json.loads(state.get("base_options") or "{}")
    except (TypeError, ValueError):
        options = {}
    bb = build_architecture(base, layers=layers, options=options or None)
    try:
        bb.model.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        raise BadValueError(f"{path}: weights do not fit backbone {base!r}: {exc}") from exc
    dev = resolve_device(device)
    bb.model.to(dev).eval()
    bb.name = "adapted"
    bb.base = base
    bb.pretrained = True
    bb.weights = f"{path} (adapted from {base}: {state.get('base_weights', 'unknown weights')})"
    bb.native_size = int(state.get("settings", {}).get("input_size", bb.native_size))
    bb.weights_sha256 = file_sha256(path)
    bb.device = dev
    return bb


def _adapted(*, weights=None, workspace=None, layers=None, random_state=0) -> Backbone:
    """Registry builder of ``adapted``: ``weights`` (an adapted.pt) or ``WS/backbones/adapted.pt``."""
    if weights is not None:
        path = Path(weights)
    elif workspace is not None:
        path = (workspace if isinstance(workspace, Workspace) else Workspace(workspace)).adapted_backbone
    else:
        raise BadValueError("backbone 'adapted' needs a workspace (or --weights pointing at an adapted.pt)")
    if not path.is_file():
        raise MissingInputError(f"{path} does not exist: run `galearn adapt` first")
    return load_adapted(path, device="cpu")


# The adapted backbone registers itself; importing galearn.features.extract (which
# every feature stage does) imports this module, so the name is always available there.
register_alias("adapted", _adapted)
