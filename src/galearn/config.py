"""Typed configuration: one frozen dataclass per stage, read from / written to TOML.

A run writes its fully resolved configuration (``WS/config.toml``) before any
work. Values can be overridden with dotted keys, e.g. ``embed.perplexity=50``.
Every random step takes ``random_state`` (int), the same name everywhere.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from .errors import BadValueError, MissingInputError
from .runtime import deep_merge

__all__ = [
    "SimulateConfig",
    "CutoutConfig",
    "IngestConfig",
    "FeatureConfig",
    "AdaptConfig",
    "EmbedConfig",
    "ClassifyConfig",
    "GanConfig",
    "GanTrainConfig",
    "GanSampleConfig",
    "GanEvaluateConfig",
    "ReportConfig",
    "RunConfig",
    "load_config",
    "parse_overrides",
    "step_config",
]


@dataclass(frozen=True)
class SimulateConfig:
    """Mock HST GOODS-S field (``galearn simulate``)."""

    n_galaxies: int = 1500
    random_state: int = 0
    pixel_scale_arcsec: float = 0.06
    field_size_pix: int | None = None  # None: sized from n_galaxies
    n_stars: int | None = None  # None: a few per cent of n_galaxies
    ra_center_deg: float = 53.12
    dec_center_deg: float = -27.81
    density_per_arcmin2: float = 70.0  # catalogue galaxies per arcmin^2 (sets the field size)
    mag_limit: float = 25.0  # faint limit of the catalogue, F160W AB
    merger_fraction: float = 0.06  # fraction of sources that are close pairs / mergers
    rare_fraction: float = 0.04  # galaxies given a rare kind (lens, ring, spikes, trail, cosmic, edge): truth_rare
    noise: bool = True  # False: noise-free mosaics (tests)
    n_jobs: int = -1  # worker processes for rendering (-1: all cores); result independent of it


@dataclass(frozen=True)
class CutoutConfig:
    """Stamps from mosaics (``galearn cutouts``)."""

    stamp_size: int = 64  # pixels at the first band's scale
    preset: str = "candels"  # column-name preset, see galearn.survey.catalog
    columns: dict = field(default_factory=dict)  # role -> column overrides
    select: str | None = None  # expression over columns, e.g. "zbest < 1 and Hmag < 25"
    max_bad_fraction: float = 0.05  # NaN / zero-weight pixels allowed in a stamp
    require_central_brightest: bool = False
    stretch: str = "asinh"  # "asinh" (noise-based) or "minmax-asinh"
    softening_sigmas: float = 2.0
    max_percentile: float = 99.9
    resample: str = "adaptive"  # bands on another pixel grid: "adaptive" (reproject_adaptive) or "exact"
    batch_size: int = 1024  # stamps cut and written per batch (memory ~ batch * bands * size^2 * 8 bytes)
    random_state: int = 0  # noise sample of the mosaics, stamps used to fit the stretch; neighbour-mask noise
    weights: dict = field(default_factory=dict)  # band -> inverse-variance map path (or list, one per section)
    rms: dict = field(default_factory=dict)  # band -> RMS map path (or list)
    zeropoints: dict = field(default_factory=dict)  # band -> AB magnitude of one pixel unit (overrides headers)
    calibrate: bool = True  # stamps in nJy per pixel from header keywords / zeropoints; False: mosaic units
    segmap: str | None = None  # segmentation map: other sources' pixels replaced by sky noise


@dataclass(frozen=True)
class IngestConfig:
    """Stamps from a folder of RGB images (``galearn ingest-images``)."""

    stamp_size: int = 64
    crop_fraction: float = 0.5  # central fraction of the image kept before resizing
    id_column: str = "id"


@dataclass(frozen=True)
class FeatureConfig:
    """CNN features (``galearn features``)."""

    backbone: str = "auto"  # or timm:ARCH (any timm encoder; weights from `weights`)
    weights: str | None = None  # local weights file, or a model-repository folder (model.safetensors + config.json)
    allow_download: bool = False  # timm:ARCH without weights: let the weights be fetched (off: offline)
    input_size: int | None = None  # pixels; None: the measured default of galearn.features; 0: native
    tta: bool | int = 4  # average features over flips / quarter turns: False, True (= 4), 2, 4, 8 (x cost); 4 measured best (docs/features.md)
    layers: tuple = ()  # stages pooled + concatenated, e.g. ("layer3", "layer4"); (): measured default
    # central fractions of the stamp, each resized + featurised, concatenated; (): measured default (1.0, 0.25)
    scales: tuple = ()
    batch_size: int = 64
    device: str | None = None  # None: CUDA when present
    random_state: int = 0
    fuse: str = "none"  # "morphology": append colours + statmorph statistics (explicit option, docs/features.md)
    fuse_weight: float | None = None  # share of the standardised variance of the fused block; None: measured default
    fuse_jobs: int = 1  # worker processes for statmorph when fusing (-1: all cores)


@dataclass(frozen=True)
class AdaptConfig:
    """Self-supervised fine-tuning of a backbone (``galearn adapt``)."""

    backbone: str = "efficientnet-lite0"
    weights: str | None = None
    allow_download: bool = False  # timm:ARCH without weights: let the weights be fetched (off: offline)
    epochs: int = 10
    budget_minutes: float = 8.0  # wall-time cap of one call; a re-run continues from the checkpoint
    batch_size: int = 64
    learning_rate: float = 1e-4
    random_state: int = 0
    device: str | None = None
    input_size: int = 128  # pixels the stamps are resized to for training (and the adapted native size); 128 beat 64 on real + mock (docs/adapt.md)
    freeze_stages: int = 5  # leading backbone stages kept fixed (weights + BatchNorm statistics)
    bn: str = "frozen"  # "frozen": ImageNet BatchNorm statistics kept (measured better); "train": they adapt
    temperature: float = 0.2  # NT-Xent temperature (SimCLR)
    head_learning_rate: float = 1e-3  # learning rate of the projection head
    weight_decay: float = 1e-5  # AdamW weight decay
    # augmentations (label-free, colour-preserving, the same for every band)
    max_shift: float = 0.06  # largest shift per axis, fraction of the stamp side
    scale: tuple = (0.85, 1.15)  # zoom factor range (1: unchanged)
    blur_sigma: tuple = (0.0, 1.2)  # Gaussian blur sigma range, pixels of the network input
    noise_sigma: tuple = (0.0, 0.03)  # Gaussian noise sigma range, stretched units


@dataclass(frozen=True)
class EmbedConfig:
    """2-D map (``galearn embed``)."""

    method: str = "tsne"  # tsne | umap | pca
    backbone: str | None = None  # None: the feature file `features` writes (resolve), else the manifest's
    perplexity: float = 30.0
    n_neighbors: int = 15  # umap
    pca_components: int = 50
    n_jobs: int = -1
    random_state: int = 0


@dataclass(frozen=True)
class ClassifyConfig:
    """Clusters and agreement (``galearn classify``)."""

    compare: tuple = ()  # columns; () -> UVJ class + every truth class column
    backbone: str | None = None
    method: str = "tsne"
    clusterer: str = "kmeans"  # kmeans | gmm (PCA space) | hdbscan (on the map)
    n_clusters: int | None = None  # None: as many as the UVJ classes, else the first compared column's
    min_cluster_size: int | None = None  # hdbscan; None: 2 % of the galaxies, at least 5
    random_state: int = 0


@dataclass(frozen=True)
class GanTrainConfig:
    """What ``galearn gan train`` reads (its fingerprint: a change retrains the GAN)."""

    condition: str | None = None  # None: UVJ class where available, else truth_class
    steps: int = 100  # ~1-1.2 s/step on 1 CPU thread: ~125 s, fits `galearn run`; blurry blobs, not full quality (docs/gan.md)
    batch_size: int = 32
    z_dim: int = 128
    channels: int = 16  # width of the full-resolution blocks (x8 at 4x4); 16: G 0.5M, D 0.4M parameters
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    adam_beta1: float = 0.5  # Adam betas of G and D (DCGAN's 0.5; SNGAN's 0.0 not compared with these networks)
    adam_beta2: float = 0.999
    d_steps: int = 1  # D steps per G step
    d_head: str = "sum"  # D epilogue: "sum" (global sum pooling) or "dense" (minibatch std + conv + flattened 4x4 dense; position-aware)
    r1_gamma: float = 0.0  # R1 penalty weight on real stamps (0: off); lazy, every r1_every D updates
    r1_every: int = 16
    ema_beta: float = 0.999  # ramped up as min(beta, (1+step)/(10+step))
    diffaugment: str = "flip,rot90,translation"  # no colour policy: band ratios matter
    checkpoint_every: int = 50
    grid_every: int = 50
    device: str | None = None
    threads: int = 1  # torch CPU threads, 0: all cores (2 threads were 3-5x SLOWER than 1 on the shared 2-core machine)
    random_state: int = 0
    heldout_fraction: float = 0.2  # real stamps per class kept out of GAN training (evaluation, balancing test)


@dataclass(frozen=True)
class GanSampleConfig:
    """What ``galearn gan sample`` reads (besides the checkpoint)."""

    n_per_class: int | None = None  # gan sample --n
    balance: bool = True
    device: str | None = None
    threads: int = 1
    random_state: int = 0


@dataclass(frozen=True)
class GanEvaluateConfig:
    """What ``galearn gan evaluate`` reads (besides the split, library and feature files)."""

    eval_max_n: int = 2000  # at most this many held-out stamps in the feature-space metrics
    balancing_repeats: int = 10  # minority cuts / generated draws averaged in gan.balancing
    eval_morphology_n: int = 40  # statmorph stamps per compared set (~0.3-0.5 s each, one core); use 300+ for a real evaluation
    random_state: int = 0


@dataclass(frozen=True)
class GanConfig(GanEvaluateConfig, GanSampleConfig, GanTrainConfig):
    """Conditional GAN: the ``[gan]`` section (``galearn gan train / sample / evaluate``).

    One flat section for the user (``gan.steps``, ``gan.balancing_repeats``,
    ...); each step reads only its own part -- :attr:`train`, :attr:`sample`,
    :attr:`evaluate` -- so a step's fingerprint holds only what changes its
    output (an evaluation setting does not retrain the GAN).
    """

    @property
    def train(self) -> GanTrainConfig:
        return step_config(self, GanTrainConfig)

    @property
    def sample(self) -> GanSampleConfig:
        return step_config(self, GanSampleConfig)

    @property
    def evaluate(self) -> GanEvaluateConfig:
        return step_config(self, GanEvaluateConfig)


def step_config(cfg: Any, cls: type) -> Any:
    """``cfg`` as the step configuration ``cls``: its fields taken from ``cfg`` (a wider config).

    ``cfg`` may already be a ``cls``; a :class:`RunConfig` stands for its ``gan``
    section. Used by the ``run_*`` functions of the GAN steps.
    """
    if isinstance(cfg, cls) and type(cfg) is cls:
        return cfg
    if isinstance(cfg, RunConfig):
        cfg = cfg.gan
    return cls(**{f.name: getattr(cfg, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class ReportConfig:
    """Figures and HTML page (``galearn report``)."""

    method: str = "tsne"
    thumbnail_grid: int = 40  # most cells per side of the thumbnail map (fewer for small samples)
    thumbnail_pixels: int = 40  # pixels per thumbnail (cell) in thumbnail_map.png
    thumbnail_crop: float = 1.0  # central fraction of each stamp shown in the thumbnails
    max_points_html: int = 20000  # galaxies in the interactive map (a seeded random subset beyond)
    sprite_pixels: int = 48  # hover stamp size in index.html (32 beyond 5000 galaxies)
    random_state: int = 0  # subset of the HTML map, example stamps per class


@dataclass(frozen=True)
class RunConfig:
    """Everything ``galearn run`` needs. ``simulate`` is used when no data is given."""

    simulate: SimulateConfig = field(default_factory=SimulateConfig)
    cutouts: CutoutConfig = field(default_factory=CutoutConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    gan: GanConfig = field(default_factory=GanConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    run_gan: bool = True
    run_adapt: bool = False
    catalog: str | None = None  # real data: catalogue file
    images: dict = field(default_factory=dict)  # real data: band -> mosaic path, glob or list (sections)
    image_folder: str | None = None  # real data: folder of RGB images (ingest-images) ...
    labels: str | None = None  # ... and its label CSV
    baseline_backbone: str = "random-resnet18"  # honest baseline features + agreement; "" to skip

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def to_toml(self) -> str:
        import tomli_w

        return tomli_w.dumps(_drop_none(self.to_dict()))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _to_plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_to_plain(v) for v in obj]
    return obj


def _drop_none(obj: Any) -> Any:
    # TOML has no null: an absent key means "default" (None).
    if isinstance(obj, dict):
        return {k: _drop_none(v) for k, v in obj.items() if v is not None}
    return obj


def _build(cls: type, data: dict, where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in known:
            raise BadValueError(f"unknown configuration key '{where}{key}'; known: {', '.join(known)}")
        f = known[key]
        if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type.endswith("Config")):
            sub = _SECTION_TYPES[key]
            if not isinstance(value, dict):
                raise BadValueError(f"configuration section {where}{key} must be a table")
            kwargs[key] = _build(sub, value, f"{where}{key}.")
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, BadValueError) as exc:
        raise BadValueError(f"bad configuration in {where or 'top level'}: {exc}") from exc


_SECTION_TYPES = {
    "simulate": SimulateConfig,
    "cutouts": CutoutConfig,
    "ingest": IngestConfig,
    "features": FeatureConfig,
    "adapt": AdaptConfig,
    "embed": EmbedConfig,
    "classify": ClassifyConfig,
    "gan": GanConfig,
    "report": ReportConfig,
}


def parse_overrides(args: list[str] | tuple[str, ...]) -> dict:
    """``["embed.perplexity=50", "--gan.steps", "100"]`` -> nested dict; values parsed as JSON, else strings."""
    out: dict = {}
    items = list(args)
    i = 0
    while i < len(items):
        arg = items[i].lstrip("-")
        if "=" in arg:
            key, raw = arg.split("=", 1)
        elif i + 1 < len(items):
            key, raw = arg, items[i + 1]
            i += 1
        else:
            raise BadValueError(f"override {items[i]!r} has no value (use key=value)")
        i += 1
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        node = out
        parts = key.replace("-", "_").split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None, overrides: dict | None = None) -> RunConfig:
    """Read a TOML configuration file (optional) and apply overrides."""
    data: dict = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise MissingInputError(f"configuration file {path} does not exist")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise BadValueError(f"{path}: not valid TOML: {exc}") from exc
    if overrides:
        data = deep_merge(data, overrides)
    return _build(RunConfig, data, "")


def section(cfg: RunConfig, name: str, **overrides: Any) -> Any:
    """``cfg.<name>`` with the non-None ``overrides`` applied (CLI flags)."""
    sub = getattr(cfg, name)
    changes = {k: v for k, v in overrides.items() if v is not None}
    return dataclasses.replace(sub, **changes) if changes else sub
