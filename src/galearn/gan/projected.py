"""Projected discriminator (Sauer et al. 2021, "Projected GANs Converge Faster").

Real and generated stamps go through a FROZEN pre-trained feature network
(default: the offline EfficientNet-Lite0 of :mod:`galearn.features.backbones`;
any registered backbone may be named). Its activations at several stages
(multi-scale features) are mixed by fixed random projections:

* cross-channel mixing (CCM): a random 1x1 convolution per scale;
* cross-scale mixing (CSM): top-down, each scale adds a random 3x3
  convolution of the up-sampled next-coarser mixed scale (a feature pyramid).

Both projections are seeded buffers, never trained. On every mixed scale a
small discriminator head (spectral normalisation, LeakyReLU, strided 4x4
convolutions down to 4x4 or less, global sum pooling) gives a class-
conditional projection logit ``psi(h) + <embed(y), h>`` (Miyato & Koyama
2018); :meth:`ProjectedDiscriminator.forward` returns the logits of all
scales, ``(N, n_scales)``, and the hinge loss averages over them.
``pixel_head=True`` adds one more head of the same kind on the (augmented)
stamp's own pixels, beside the projected scales (Vision-aided GAN, Kumari
et al. 2022, keeps a pixel-space D beside its pre-trained ones): it sees the
light profile and the pixel texture together, as no ImageNet feature does.

The feature network is held OUTSIDE the module's parameters and state dict:
``requires_grad=False``, always in eval mode (``train()`` does not reach it),
never in an optimiser, never in a checkpoint (it is rebuilt from the registry
and its weights' provenance is recorded). Gradients flow THROUGH it to the
generator's images in the generator step; in the discriminator step the
features are computed without a graph (:attr:`frozen_features`), or, in the
fast step, the generated batch's one pass WITH a graph is shared by both
steps (:meth:`galearn.gan.loss.GanLoss.project` and :meth:`~galearn.gan.loss.GanLoss.score`).

Bands: a 3-band sample goes in band order as the network's three input
channels (no colour augmentation, no reordering); 1 band is repeated; other
band counts are mixed to 3 channels by a fixed, seeded, non-negative 1x1
projection (rows sum to 1).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from ..errors import BadValueError
from .networks import check_stamp_size, minibatch_stddev

__all__ = ["ProjectedDiscriminator", "DEFAULT_LAYERS", "feature_network"]

#: Stages whose outputs are projected, per backbone architecture (strides 4, 8, 16, 32).
DEFAULT_LAYERS = {
    "efficientnet-lite0": ("stage2", "stage3", "stage5", "stage7"),
    "resnet18": ("layer1", "layer2", "layer3", "layer4"),
    "resnet50": ("layer1", "layer2", "layer3", "layer4"),
    "random-resnet18": ("layer1", "layer2", "layer3", "layer4"),
}


def feature_network(name: str, *, weights: str | None = None, device: str = "cpu"):
    """``(stages, mean, std, provenance)`` of a registered backbone, frozen and in eval mode.

    ``stages`` is an ``nn.ModuleDict`` of the trunk's consecutive stages.
    """
    from ..features.backbones import load_backbone

    bb = load_backbone(name, weights=weights, device=device)
    stages = getattr(bb.model, "stages", None)
    if not isinstance(stages, nn.ModuleDict):
        raise BadValueError(f"gan.d_backbone={name!r} has no stage-wise trunk; use efficientnet-lite0 or a resnet")
    stages.eval().requires_grad_(False)
    return stages, bb.mean, bb.std, f"{bb.name} ({bb.weights})"


def _random_conv(c_out: int, c_in: int, k: int, gen: torch.Generator) -> torch.Tensor:
    # Kaiming-normal (fan-in) random weights: features keep their scale through the projection.
    return torch.randn(c_out, c_in, k, k, generator=gen) * (2.0 / (c_in * k * k)) ** 0.5


class _Head(nn.Module):
    """Spectral-norm conv head on one mixed scale -> conditional projection logit.

    Strided 4x4 convolutions down to at most 4x4, then a dense layer on the
    FLATTENED map (Projected GAN's final 4x4 convolution without padding):
    the head knows where a source is, so an off-centre source can be told
    from the always-centred real galaxies (global pooling cannot).
    ``minibatch_std`` (a group size; 0: off) appends the minibatch standard
    deviation of the last map before the dense layer (Karras et al. 2018), so
    a generator that makes too little variety within a batch can be told.
    """

    def __init__(self, c_in: int, size: int, n_classes: int, width: int, minibatch_std: int = 0) -> None:
        super().__init__()
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(c_in, width, 3, padding=1)), nn.LeakyReLU(0.2)]
        w = width
        while size > 4:
            w2 = min(2 * w, 4 * width)
            layers += [spectral_norm(nn.Conv2d(w, w2, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            w, size = w2, size // 2
        self.body = nn.Sequential(*layers)
        self.minibatch_std = int(minibatch_std)
        self.dense = spectral_norm(nn.Linear((w + (self.minibatch_std > 0)) * size * size, w))
        self.linear = spectral_norm(nn.Linear(w, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, w))

    def forward(self, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.body(h)
        if self.minibatch_std:
            h = minibatch_stddev(h, self.minibatch_std)
        h = F.leaky_relu(self.dense(h.flatten(1)), 0.2)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)


class ProjectedDiscriminator(nn.Module):
    """Frozen feature network -> random CCM / CSM projections -> per-scale SN heads: ``(x, y) -> (N, S)`` logits.

    Parameters
    ----------
    n_classes, n_bands, stamp_size
        As for :class:`galearn.gan.networks.Discriminator`.
    channels : int
        Width unit: the projected scales have ``channels * (2, 4, 8, 16)``
        feature maps (finest first), each head starts at ``2 * channels``.
    backbone : str
        Registered backbone name of the feature network.
    layers : sequence of str, optional
        Its stages to project (default :data:`DEFAULT_LAYERS`).
    input_size : int, optional
        Side (pixels) the stamps are resized to before the feature network
        (bilinear); None: the stamp size.
    random_state : int
        Seed of the fixed random projections.
    minibatch_std : int
        Group size of the heads' minibatch standard deviation (0: none;
        ``gan.d_minibatch_std``).
    weights : str, optional
        Local weights file of the backbone.
    pixel_head : bool
        One more head on the stamp's own pixels (``gan.d_pixel_head``): its
        logit is the last of :meth:`forward`'s columns.
    stages : nn.ModuleDict, optional
        An already built trunk (tests); else built from the registry.
    """

    frozen_features = True

    def __init__(self, n_classes: int, n_bands: int, stamp_size: int = 64, *, channels: int = 16,
                 backbone: str = "efficientnet-lite0", layers: tuple[str, ...] | None = None,
                 input_size: int | None = None, random_state: int = 0, weights: str | None = None,
                 stages: nn.ModuleDict | None = None, mean=None, std=None, minibatch_std: int = 0,
                 pixel_head: bool = False) -> None:
        super().__init__()
        check_stamp_size(stamp_size)
        self.backbone = str(backbone)
        if stages is None:
            stages, mean, std, self.provenance = feature_network(self.backbone, weights=weights)
        else:
            self.provenance = f"{self.backbone} (given)"
        mean = mean if mean is not None else (0.5, 0.5, 0.5)
        std = std if std is not None else (0.5, 0.5, 0.5)
        layers = tuple(layers) if layers else DEFAULT_LAYERS.get(self.backbone)
        if not layers:
            raise BadValueError(f"gan.d_layers must be given for backbone {self.backbone!r}")
        unknown = [name for name in layers if name not in stages]
        if unknown:
            raise BadValueError(f"gan.d_layers {unknown} are not stages of {self.backbone}; known: {', '.join(stages)}")
        names = list(stages)
        self.layers = tuple(sorted(layers, key=names.index))
        self.input_size = int(input_size or stamp_size)
        # Kept out of the parameters / state dict / optimiser: see the module docstring.
        stages.eval().requires_grad_(False)
        object.__setattr__(self, "_stages", stages)
        self._last = names.index(self.layers[-1])

        gen = torch.Generator().manual_seed(int(random_state) * 7919 + 17)
        if n_bands == 3:
            mix = torch.eye(3)
        elif n_bands == 1:
            mix = torch.ones(3, 1)
        else:
            mix = torch.rand(3, n_bands, generator=gen) + 0.1
            mix = mix / mix.sum(dim=1, keepdim=True)
        scale = torch.tensor(std, dtype=torch.float32)
        # x in [-1, 1] -> stretched (x + 1) / 2 -> backbone normalisation ((v - mean) / std), folded into one affine map.
        self.register_buffer("in_weight", (mix * 0.5 / scale[:, None])[:, :, None, None].contiguous())
        self.register_buffer("in_bias", ((0.5 * mix.sum(dim=1)) - torch.tensor(mean)) / scale)

        with torch.no_grad():
            probe = self._trunk(torch.zeros(1, 3, self.input_size, self.input_size))
        c_feat = [int(f.shape[1]) for f in probe]
        sizes = [int(f.shape[-1]) for f in probe]
        widths = [int(channels) * 2 ** (k + 1) for k in range(len(probe))]
        self.widths, self.sizes = widths, sizes
        for k, (ci, co) in enumerate(zip(c_feat, widths)):
            self.register_buffer(f"ccm{k}", _random_conv(co, ci, 1, gen))
            if k + 1 < len(widths):
                self.register_buffer(f"csm{k}", _random_conv(co, widths[k + 1], 3, gen))
        self.heads = nn.ModuleList(_Head(w, s, n_classes, 2 * int(channels), minibatch_std)
                                   for w, s in zip(widths, sizes))
        self.pixel_head = bool(pixel_head)
        if self.pixel_head:
            self.heads.append(_Head(n_bands, stamp_size, n_classes, 2 * int(channels), minibatch_std))

    # -- frozen part
    @property
    def feature_stages(self) -> nn.ModuleDict:
        """The frozen feature network's stages (not a registered submodule)."""
        return self._stages

    def _apply(self, fn, recurse: bool = True):
        # .to(device) / .to(memory_format=...) / .float() must reach the unregistered feature network too.
        super()._apply(fn, recurse)
        self._stages._apply(fn)
        return self

    def train(self, mode: bool = True):
        super().train(mode)
        self._stages.eval()  # BatchNorm statistics of the pre-trained network stay fixed
        return self

    def _trunk(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, (name, stage) in enumerate(self._stages.items()):
            x = stage(x)
            if name in self.layers:
                out.append(x)
            if i == self._last:
                break
        return out

    def project(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Stamps ``(N, C, H, W)`` in ``[-1, 1]`` -> mixed multi-scale features (finest first), then, with
        ``pixel_head``, the stamps themselves."""
        h = F.conv2d(x, self.in_weight.to(x.dtype), self.in_bias.to(x.dtype))
        if h.shape[-1] != self.input_size:
            h = F.interpolate(h, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        if h.device.type == "cpu":
            h = h.contiguous(memory_format=torch.channels_last)
        feats = self._trunk(h)
        mixed = [F.conv2d(f, getattr(self, f"ccm{k}").to(f.dtype)) for k, f in enumerate(feats)]
        for k in range(len(mixed) - 2, -1, -1):  # CSM: top-down pyramid
            up = F.interpolate(mixed[k + 1], size=mixed[k].shape[-2:], mode="bilinear", align_corners=False)
            mixed[k] = mixed[k] + F.conv2d(up, getattr(self, f"csm{k}").to(up.dtype), padding=1)
        return mixed + [x] if self.pixel_head else mixed

    def score(self, feats: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """Logits ``(N, n_scales)`` of the trainable heads on features from :meth:`project`."""
        return torch.stack([head(f, y) for head, f in zip(self.heads, feats)], dim=1)

    def forward(self, x: torch.Tensor, y: torch.Tensor, *, detach_features: bool = False) -> torch.Tensor:
        """Logits ``(N, n_scales)``; ``detach_features``: run the frozen part without a graph (D steps)."""
        if detach_features:
            with torch.no_grad():
                feats = self.project(x)
        else:
            feats = self.project(x)
        return self.score(feats, y)
