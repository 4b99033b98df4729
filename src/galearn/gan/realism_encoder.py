"""A realism space learnt from the real stamps alone: small CNNs trained self-supervised from scratch.

``gan.realism_space = "self-supervised"`` measures the library's FID / KID /
precision / recall / memorisation in the features of :class:`StampEncoder`, a
small convolutional network that starts from random weights and is trained
with the SimCLR objective of ``galearn adapt`` (:func:`galearn.features.adapt.adapt_backbone`,
NT-Xent between two augmented views of each stamp) on the GAN's real
*training* stamps only: no ImageNet weights, so no network a projected
discriminator looked through (Kynkäänniemi et al. 2023), and no held-out or
generated stamp. ``galearn gan evaluate`` trains them on half the training
rows and draws the real baseline from the other half, which they never saw.

The views are exact symmetries of a stamp: the eight rotations by right angles
and flips, and shifts by whole pixels (at most ``max_shift`` of the side,
mirrored at the edge). No zoom, blur, noise or colour change, so the features
stay free to tell a stamp's pixel noise, sharpness and colours, which a
generator must get right.

Three encoders of different seeds are trained and their features, each of
unit length and standardised, put side by side (one alone moves the FID
ratio by up to 4x with its seed). Each is kept in
``WS/gan/realism-encoder-K.pt`` (the resumable state of
:func:`~galearn.features.adapt.adapt_backbone`) under a fingerprint of the
settings, its seed, the sample and the training rows, and reused by every
later evaluation of the same run; an interrupted training continues.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..features.adapt import AugmentSettings, adapt_backbone
from ..runtime import derive_seed
from ..store import Sample, Workspace
from .spaces import SELF_SUPERVISED

__all__ = ["SELF_SUPERVISED", "EncoderSettings", "StampEncoder", "train_realism_encoder", "realism_encoder_features"]


@dataclass(frozen=True)
class EncoderSettings:
    """Architecture and training of the realism encoder.

    Attributes
    ----------
    widths : tuple of int
        Channels of the three stages (each two 3x3 convolutions, the second of stride 2).
    epochs : int
        Passes over the training stamps.
    batch_size : int
        Stamps per step (two views each).
    learning_rate : float
        AdamW learning rate of encoder and projection head (cosine decay).
    temperature : float
        NT-Xent temperature.
    max_shift : float
        Largest shift, fraction of the stamp side (rounded to whole pixels).
    encoders : int
        Encoders of different seeds whose features are put side by side.
    """

    widths: tuple[int, int, int] = (24, 48, 96)
    epochs: int = 60
    batch_size: int = 128
    learning_rate: float = 2e-3
    temperature: float = 0.2
    max_shift: float = 0.06
    encoders: int = 3

    def augment(self) -> AugmentSettings:
        """The exact views: right-angle rotations, flips, whole-pixel shifts; nothing interpolated or added."""
        return AugmentSettings(flip=True, rotate=True, right_angles=True, whole_pixels=True, max_shift=self.max_shift,
                               scale=(1.0, 1.0), blur_sigma=(0.0, 0.0), noise_sigma=(0.0, 0.0))

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


class StampEncoder(nn.Module):
    """Three stages of two 3x3 convolutions (BatchNorm, ReLU), the second of stride 2; global mean pool.

    Maps ``(N, C, H, W)`` stamps, standardised per band, to ``(N, widths[-1])`` features.
    """

    def __init__(self, in_chans: int, widths: tuple[int, ...] = EncoderSettings.widths) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_chans
        for w in widths:
            for stride in (1, 2):
                layers += [nn.Conv2d(c, w, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
                c = w
        self.features = nn.Sequential(*layers)
        self.dim = c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


@dataclass
class _Trainee:
    """What :func:`~galearn.features.adapt.adapt_backbone` reads of a backbone."""

    model: nn.Module
    dim: int
    std: tuple[float, ...]
    device: str = "cpu"


def _band_statistics(stamps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = stamps.mean(axis=(0, 2, 3), dtype="f8")
    std = stamps.std(axis=(0, 2, 3), dtype="f8")
    return mean, np.where(std > 0, std, 1.0)


def _standardised(stamps: np.ndarray, mean: np.ndarray, std: np.ndarray) -> torch.Tensor:
    x = (np.asarray(stamps, dtype="f4") - mean[None, :, None, None].astype("f4")) / std[None, :, None, None].astype("f4")
    return torch.from_numpy(np.ascontiguousarray(x))


def train_realism_encoder(stamps: np.ndarray, *, settings: EncoderSettings = EncoderSettings(), random_state: int = 0,
                          checkpoint=None, fingerprint: str = "", progress: bool = True,
                          desc: str = "realism encoder") -> tuple[Callable, dict]:
    """Train a :class:`StampEncoder` on ``stamps`` (N, C, H, W; stretched, ~0..1) and return its feature function.

    Returns ``(features, info)``: ``features(stretched) -> (n, dim)`` float64
    array, each row of unit length (eval mode, batches of 256; the raw pooled
    features are heavy-tailed, their length following a stamp's brightness),
    and ``info`` (settings, band mean / std, training history). The same
    ``random_state`` gives the same encoder.
    ``checkpoint`` / ``fingerprint`` / ``desc`` (the progress bar's label): see
    :func:`~galearn.features.adapt.adapt_backbone`.
    """
    stamps = np.asarray(stamps, dtype="f4")
    mean, std = _band_statistics(stamps)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(random_state, 3))
        model = StampEncoder(stamps.shape[1], settings.widths)
    trainee = _Trainee(model=model, dim=model.dim, std=tuple(float(s) for s in std))
    history = adapt_backbone(trainee, _standardised(stamps, mean, std), epochs=settings.epochs,
                             batch_size=settings.batch_size, learning_rate=settings.learning_rate,
                             head_learning_rate=settings.learning_rate, temperature=settings.temperature, bn="train",
                             augment=settings.augment(), random_state=random_state, checkpoint=checkpoint,
                             checkpoint_every=50, fingerprint=fingerprint, progress=progress, desc=desc)
    model.eval()

    def features(stretched: np.ndarray) -> np.ndarray:
        out = []
        with torch.inference_mode():
            for i in range(0, len(stretched), 256):
                out.append(F.normalize(model(_standardised(stretched[i:i + 256], mean, std)), dim=1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, model.dim))

    info = {"features": "StampEncoder (galearn.gan.realism_encoder) trained from random weights with SimCLR "
                        "on the real training stamps only; global mean pool of its last stage, unit length",
            "dim": int(model.dim), "encoder": settings.to_dict(), "random_state": int(random_state),
            "band_mean": [round(float(v), 6) for v in mean], "band_std": [round(float(v), 6) for v in std],
            "trained_on_n": int(len(stamps)), "steps": int(history["step"]),
            "final_loss": round(history["losses"][-1], 4) if history["losses"] else None}
    return features, info


def realism_encoder_features(ws: Workspace, sample: Sample, train: np.ndarray, *, random_state: int = 0,
                             settings: EncoderSettings = EncoderSettings(), progress: bool = True) -> tuple[Callable, dict]:
    """The realism space of a GAN run: ``settings.encoders`` encoders trained on its rows ``train`` of ``sample``.

    Each encoder has its own seed (from ``random_state``) and is kept in
    ``WS/gan/realism-encoder-K.pt`` (reused when the settings, seed, sample
    and rows are the same). The features are the encoders' features, each
    standardised by the training rows' mean and standard deviation, side by
    side: one encoder's FID ratio moves by up to 4x with its seed alone
    (docs/gan-experiments.md round 52), so no single one is the yardstick.
    """
    train = np.sort(np.asarray(train, dtype=np.int64))
    stamps = sample.read("stretched", train)
    ws.gan.mkdir(parents=True, exist_ok=True)
    encoders, infos = [], []
    for k in range(settings.encoders):
        seed = derive_seed(random_state, 916, k)
        key = {"settings": settings.to_dict(), "random_state": seed, "sample": sample.checksum,
               "train_rows": hashlib.sha256(train.tobytes()).hexdigest()}
        fingerprint = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
        fn, info = train_realism_encoder(stamps, settings=settings, random_state=seed,
                                         checkpoint=ws.gan_realism_encoder(k), fingerprint=fingerprint, progress=progress,
                                         desc=f"realism encoder {k + 1}/{settings.encoders}")
        own = fn(stamps)
        encoders.append((fn, own.mean(axis=0), np.where(own.std(axis=0) > 0, own.std(axis=0), 1.0)))
        infos.append(info)

    def features(stretched: np.ndarray) -> np.ndarray:
        return np.concatenate([(fn(stretched) - mean) / std for fn, mean, std in encoders], axis=1)

    first = infos[0]
    return features, {"features": f"{settings.encoders} StampEncoders (galearn.gan.realism_encoder), each trained from "
                                  "random weights with SimCLR on the real training stamps only; the global mean pool "
                                  "of their last stage, standardised by the training stamps, side by side",
                      "dim": int(sum(i["dim"] for i in infos)), "encoder": settings.to_dict(), "random_state": int(random_state),
                      "band_mean": first["band_mean"], "band_std": first["band_std"], "trained_on_n": int(len(train)),
                      "steps": [i["steps"] for i in infos], "final_loss": [i["final_loss"] for i in infos]}
