"""``--backbone timm:ARCH``: any timm encoder with the weights of a local file.

Zoobot's galaxy encoders (Walmsley et al.), DINOv2 and the ImageNet models of
`timm <https://github.com/huggingface/pytorch-image-models>`_ are timm
architectures whose weights users download once from their model
repositories. This module describes such an encoder as a registry entry
(:class:`~galearn.features.backbones.BackboneSpec`) so that it goes through
the same code as the built-in backbones (``galearn features``, ``galearn
adapt``, ``--backbone adapted``).

What is read
------------
``--weights PATH`` is a safetensors file, a PyTorch state dict
(``torch.save``), or a model-repository folder holding ``model.safetensors`` /
``pytorch_model.bin``. A timm ``config.json`` next to the weights (as model
repositories ship it) is read when present: its ``architecture`` must match
``ARCH``, its ``model_args`` (e.g. ``img_size``, ``in_chans``) build the
network, and its ``pretrained_cfg`` gives the input size and the mean / std
of the input normalisation. Without it, timm's own pretrained configuration
of ``ARCH`` gives them. The number of input channels is that of the weights'
first convolution (``pretrained_cfg["first_conv"]``).

The network is built with ``timm.create_model(ARCH, pretrained=False,
num_classes=0, ...)`` (vision transformers with ``dynamic_img_size`` so that
any input size works); classifier tensors in the file
(``pretrained_cfg["classifier"]``) are dropped, every other tensor must fit.

Features
--------
``pooled`` (the default) is the network's own pooled, pre-logits output of
the last stage (``model(x)`` with ``num_classes=0``: average pooling for
CNNs, the class token or average of tokens for ViTs, as the architecture
defines). Other stages -- the names of ``model.feature_info``, e.g.
``stages.2`` (ConvNeXt), ``layer3`` (ResNet), ``blocks.11`` (ViT) -- are
taken with timm's ``forward_intermediates`` and global-average pooled.

Nothing is downloaded unless ``allow_download`` is given; without weights the
error names the model repository to download from.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._optional import require
from ..errors import BadValueError, WeightsNotFoundError
from .spec import (
    HUB_WEIGHT_FILES,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BackboneSpec,
    LoadedWeights,
    load_into,
    read_state_dict,
    weights_file,
)

__all__ = ["TimmFeatures", "timm_spec", "hub_config", "download_hint", "POOLED", "TIMM_PREFIX"]

log = logging.getLogger("galearn.features")

TIMM_PREFIX = "timm:"  # --backbone timm:ARCH
POOLED = "pooled"
CONFIG_NAME = "config.json"


def _timm():
    return require("timm", "torch")


# --------------------------------------------------------------------------- feature module


class TimmFeatures(nn.Module):
    """Pooled features of a timm model (built with ``num_classes=0``).

    Parameters
    ----------
    model : nn.Module
        A timm model without classifier.
    taps : sequence of str
        ``pooled`` (the model's own pooled pre-logits output) and / or stage
        names of ``model.feature_info`` (global-average pooled). Outputs are
        concatenated in stage order, ``pooled`` last.
    """

    def __init__(self, model: nn.Module, taps: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        names = stage_names(model)
        known = [*names, POOLED]
        unknown = [t for t in taps if t not in known]
        if unknown or not taps:
            raise BadValueError(f"unknown feature layer(s) {unknown or list(taps)}; known: {', '.join(known)}")
        self.taps = tuple(sorted(set(taps), key=known.index))
        self._indices = [names.index(t) for t in self.taps if t != POOLED]
        self._pooled = POOLED in self.taps
        if self._indices and not hasattr(model, "forward_intermediates"):
            raise BadValueError(
                f"{type(model).__name__} has no forward_intermediates in this timm version; use the layer 'pooled'"
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._indices:
            return torch.flatten(self.model(x), 1)
        if self._pooled:
            final, inter = self.model.forward_intermediates(x, indices=self._indices)
            outs = [t.mean(dim=(2, 3)) for t in inter] + [torch.flatten(self.model.forward_head(final, pre_logits=True), 1)]
        else:
            inter = self.model.forward_intermediates(x, indices=self._indices, intermediates_only=True)
            outs = [t.mean(dim=(2, 3)) for t in inter]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def stage_parameters(self) -> dict[str, list[nn.Parameter]]:
        """timm's coarse parameter groups (stem, then each stage or block), in order: what ``adapt`` freezes."""
        timm = _timm()
        params = dict(self.model.named_parameters())
        matcher = getattr(self.model, "group_matcher", None)
        if matcher is None:
            return {"all": list(params.values())}
        groups = timm.models.group_parameters(self.model, matcher(coarse=True))
        return {f"group{i}": [params[n] for n in names if n in params] for i, (_, names) in enumerate(groups.items())}


def stage_names(model: nn.Module) -> list[str]:
    """Stage names of a timm model (``feature_info`` module names), shallowest first."""
    info = getattr(model, "feature_info", None) or []
    return [str(f["module"]) for f in info if isinstance(f, dict) and "module" in f]


# --------------------------------------------------------------------------- configuration


def _find_config(weights: Path) -> Path | None:
    cfg = (weights if weights.is_dir() else weights.parent) / CONFIG_NAME
    return cfg if cfg.is_file() else None


def hub_config(path: str | os.PathLike) -> dict[str, Any] | None:
    """The timm settings of a model repository's ``config.json``.

    Returns
    -------
    dict or None
        ``architecture``, ``pretrained_cfg`` (dict) and ``model_args`` (dict);
        None when the file is not a timm configuration (no ``architecture``).

    Raises
    ------
    BadValueError
        The file is not readable JSON.
    """
    path = Path(path)
    try:
        cfg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadValueError(f"{path} is not a readable JSON model configuration: {exc}") from exc
    if not isinstance(cfg, dict) or "architecture" not in cfg:
        return None
    if "pretrained_cfg" in cfg and isinstance(cfg["pretrained_cfg"], dict):
        pcfg = dict(cfg["pretrained_cfg"])
    else:  # older timm exports: one flat dict
        pcfg = {k: v for k, v in cfg.items() if k not in ("architecture", "model_args")}
    if "num_classes" in cfg:
        pcfg["num_classes"] = cfg["num_classes"]
    model_args = cfg.get("model_args") or {}
    if not isinstance(model_args, dict):
        raise BadValueError(f"{path}: model_args must be a JSON object, got {model_args!r}")
    return {"architecture": str(cfg["architecture"]), "pretrained_cfg": pcfg, "model_args": dict(model_args)}


def _base_name(arch: str) -> str:
    return arch.split(".", 1)[0]


def _default_cfg(arch: str) -> dict[str, Any]:
    timm = _timm()
    try:
        cfg = timm.models.get_pretrained_cfg(arch)
    except Exception:  # noqa: BLE001 - unknown tag
        cfg = None
    if cfg is None and "." in arch:
        try:
            cfg = timm.models.get_pretrained_cfg(_base_name(arch))
        except Exception:  # noqa: BLE001
            cfg = None
    return cfg.to_dict() if cfg is not None else {}


def _check_arch(arch: str) -> None:
    timm = _timm()
    if not arch:
        raise BadValueError("--backbone timm:ARCH needs an architecture name, e.g. timm:convnext_nano")
    if "/" in arch or arch.lower().startswith(("hf-hub:", "hf_hub:", "local-dir:")):
        repo = arch.split(":", 1)[-1]
        raise BadValueError(
            f"--backbone timm:{arch}: name the timm architecture, not a model repository; download {CONFIG_NAME} "
            f"and the weights of https://huggingface.co/{repo} into a folder and pass it with --weights FOLDER "
            f"(its config.json names the architecture, e.g. timm:convnext_nano)"
        )
    if not timm.is_model(_base_name(arch)):
        close = difflib.get_close_matches(_base_name(arch), timm.list_models(), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else " (timm.list_models() lists them)"
        raise BadValueError(f"--backbone timm:{arch}: timm has no architecture {_base_name(arch)!r}{hint}")


def download_hint(arch: str) -> str:
    """One line: where to download ``arch``'s weights and how to pass them."""
    cfg = _default_cfg(arch)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        repo = hub_id.split("@", 1)[0]
        where = (f"download {' or '.join(HUB_WEIGHT_FILES)} and {CONFIG_NAME} from the model repository "
                 f"https://huggingface.co/{repo}")
    elif cfg.get("url"):
        where = f"download {cfg['url']}"
    else:
        where = "timm knows no published weights for it; save a trained state dict"
    return (f"--backbone timm:{arch} needs local weights: {where} and pass the file (or its folder) with "
            f"--weights PATH, or add --allow-download on a machine with network")


def _download(arch: str) -> Path:
    """Fetch ``arch``'s default weights (and config.json) through the Hugging Face hub client; returns the file."""
    cfg = _default_cfg(arch)
    hub_id = cfg.get("hf_hub_id")
    if hub_id:
        from huggingface_hub import hf_hub_download

        repo, _, revision = hub_id.partition("@")
        names = [cfg["hf_hub_filename"]] if cfg.get("hf_hub_filename") else list(HUB_WEIGHT_FILES)
        last: Exception | None = None
        for name in names:
            try:
                path = Path(hf_hub_download(repo_id=repo, filename=name, revision=revision or None))
            except Exception as exc:  # noqa: BLE001 - missing file or network failure: try the next
                last = exc
                continue
            try:
                hf_hub_download(repo_id=repo, filename=CONFIG_NAME, revision=revision or None)
            except Exception:  # noqa: BLE001 - the config is optional
                pass
            log.warning("downloaded %s from https://huggingface.co/%s", name, repo)
            return path
        raise WeightsNotFoundError(f"could not download weights of timm:{arch} from https://huggingface.co/{repo} "
                                   f"({last}); download them by hand and pass --weights PATH")
    if cfg.get("url"):
        url = cfg["url"]
        dst = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url.split("?")[0])
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                torch.hub.download_url_to_file(url, str(dst), progress=True)
            except Exception as exc:  # noqa: BLE001 - any network failure
                raise WeightsNotFoundError(f"could not download {url} ({exc}); pass --weights PATH") from exc
        return dst
    raise WeightsNotFoundError(download_hint(arch))


# --------------------------------------------------------------------------- spec


def _create(arch: str, kwargs: dict[str, Any]) -> nn.Module:
    """``timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)``, ViTs with dynamic input size."""
    timm = _timm()
    kwargs = {k: v for k, v in kwargs.items() if k not in ("num_classes", "pretrained")}
    if "dynamic_img_size" not in kwargs:
        try:
            return timm.create_model(arch, pretrained=False, num_classes=0, dynamic_img_size=True, **kwargs)
        except TypeError:  # the architecture has no such option (CNNs)
            pass
    return timm.create_model(arch, pretrained=False, num_classes=0, **kwargs)


def _per_channel(values, in_chans: int, what: str, source: str) -> tuple[float, ...]:
    vals = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else [values]))
    if len(vals) == in_chans:
        return vals
    if in_chans == 1:  # an RGB normalisation for a one-channel network: its mean
        return (sum(vals) / len(vals),)
    if len(vals) == 1:
        return vals * in_chans
    raise BadValueError(f"{source}: {what} has {len(vals)} values but the network takes {in_chans} channels")


def _head_keys(pcfg: dict[str, Any]) -> tuple[str, ...]:
    head = pcfg.get("classifier")
    if not head:
        return ()
    return tuple(str(h) for h in (head if isinstance(head, (list, tuple)) else [head]))


def _in_chans(state: dict[str, torch.Tensor], pcfg: dict[str, Any], model_args: dict[str, Any]) -> int:
    first = pcfg.get("first_conv")
    for name in ([first] if isinstance(first, str) else list(first or [])):
        w = state.get(f"{name}.weight")
        if w is not None and w.ndim == 4:
            return int(w.shape[1])
    if model_args.get("in_chans"):
        return int(model_args["in_chans"])
    size = pcfg.get("input_size")
    return int(size[0]) if size else 3


def _spec_from_options(arch: str, options: dict[str, Any]) -> BackboneSpec:
    create_kwargs = dict(options.get("create_kwargs") or {})
    in_chans = int(options.get("in_chans", create_kwargs.get("in_chans", 3)))
    native = int(options.get("native_size", 224))
    return BackboneSpec(
        name=f"timm:{arch}",
        trunk=lambda: _create(arch, create_kwargs),
        features=TimmFeatures,
        default_layers=(POOLED,),
        mean=tuple(options.get("mean", IMAGENET_MEAN)),
        std=tuple(options.get("std", IMAGENET_STD)),
        native_size=native,
        head_keys=tuple(options.get("head_keys", ())),
        in_chans=in_chans,
        architecture=f"timm {arch}",
        options={**options, "arch": arch},
        default_input_size=native,
        fixed_input_size=bool(options.get("fixed_input_size", False)),
    )


def timm_spec(
    arch: str,
    *,
    weights: str | os.PathLike | None = None,
    allow_download: bool = False,
    options: dict[str, Any] | None = None,
    architecture_only: bool = False,
) -> BackboneSpec:
    """The registry entry of ``timm:ARCH`` for these weights.

    Parameters
    ----------
    arch : str
        timm model name, with or without a pretrained tag
        (``convnext_nano``, ``vit_small_patch14_dinov2.lvd142m``).
    weights : path-like, optional
        Weights file or model-repository folder (see the module docstring).
    allow_download : bool
        Without ``weights``: fetch the default weights of ``arch`` from its
        model repository. False (default): raise with a download hint.
    options : dict, optional
        A :attr:`Backbone.options` recorded earlier: rebuild exactly that
        architecture (no file is read).
    architecture_only : bool
        Describe ``arch`` with timm's defaults, for random weights.

    Raises
    ------
    WeightsNotFoundError
        No weights given and ``allow_download`` is False (the message names the
        model repository and the option).
    BadValueError
        Unknown architecture; a ``config.json`` of another architecture; a file
        that is not a state dict of this architecture.
    """
    arch = str(arch).strip()
    _check_arch(arch)
    if options:
        return _spec_from_options(arch, options)
    default = _default_cfg(arch)
    if architecture_only:
        size = default.get("input_size") or (3, 224, 224)
        return _spec_from_options(arch, {
            "create_kwargs": {}, "in_chans": 3, "native_size": int(size[-1]),
            "mean": list(default.get("mean") or IMAGENET_MEAN), "std": list(default.get("std") or IMAGENET_STD),
            "head_keys": list(_head_keys(default)), "fixed_input_size": bool(default.get("fixed_input_size")),
        })
    if weights is None:
        if not allow_download:
            raise WeightsNotFoundError(download_hint(arch))
        weights = _download(arch)
    if not Path(weights).exists():
        raise WeightsNotFoundError(f"weights file {weights} does not exist; {download_hint(arch)}")
    path = weights_file(weights)
    cfg_path = _find_config(Path(weights))
    hub = hub_config(cfg_path) if cfg_path is not None else None
    if cfg_path is not None and hub is None:
        log.warning("%s is not a timm configuration (no 'architecture'); ignoring it", cfg_path)
        cfg_path = None
    if hub is not None and _base_name(hub["architecture"]) != _base_name(arch):
        raise BadValueError(
            f"{cfg_path} describes architecture {hub['architecture']!r}, not {arch!r}: "
            f"use --backbone timm:{hub['architecture']}"
        )
    pcfg = {**default, **(hub["pretrained_cfg"] if hub else {})}
    model_args = dict(hub["model_args"]) if hub else {}
    state = read_state_dict(path)
    in_chans = _in_chans(state, pcfg, model_args)
    create_kwargs = {**model_args, "in_chans": in_chans}
    source = str(cfg_path) if cfg_path is not None else f"timm's pretrained_cfg of {arch}"
    mean = _per_channel(pcfg.get("mean") or IMAGENET_MEAN, in_chans, "mean", source)
    std = _per_channel(pcfg.get("std") or IMAGENET_STD, in_chans, "std", source)
    size = pcfg.get("input_size") or (in_chans, 224, 224)
    native = int(size[-1])
    if model_args.get("img_size") is not None:
        img = model_args["img_size"]
        native = int(img if isinstance(img, int) else img[-1])
    options = {
        "create_kwargs": create_kwargs,
        "in_chans": in_chans,
        "native_size": native,
        "mean": list(mean),
        "std": list(std),
        "head_keys": list(_head_keys(pcfg)),
        "fixed_input_size": bool(pcfg.get("fixed_input_size", False)),
        "config": str(cfg_path.resolve()) if cfg_path is not None else None,
        "hf_hub_id": pcfg.get("hf_hub_id"),
    }
    spec = _spec_from_options(arch, options)

    def load(spec: BackboneSpec, _weights: Any = None, random_state: int = 0) -> LoadedWeights:
        trunk = spec.trunk()
        load_into(trunk, state, path, spec.head_keys)
        return LoadedWeights(trunk, True, str(path.resolve()), path)

    from dataclasses import replace

    return replace(spec, load=load)
