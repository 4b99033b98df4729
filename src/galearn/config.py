"""Typed configuration: one frozen dataclass per stage, read from / written to TOML.

A run writes its fully resolved configuration (``WS/config.toml``) before any
work. Values can be overridden with dotted keys, e.g. ``embed.perplexity=50``.
Every random step takes ``random_state`` (int), the same name everywhere.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import tomllib
import warnings
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
    "ComputeConfig",
    "RunConfig",
    "load_config",
    "RETIRED_KEYS",
    "parse_overrides",
    "step_config",
    "check_value",
    "FIELD_RANGES",
    "FIELD_CHOICES",
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
    preset: str | None = None  # column-name preset (candels, galearn-mock, none); None: roles detected from common names
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
    # auto | kmeans | gmm | ward | merge | graph | spectral | hdbscan. auto (measured, docs/maps.md round 4):
    # spectral (in pca) when the aperture colours are fused (stamps in linear units), else kmeans (in umap:5)
    clusterer: str = "auto"
    cluster_space: str | None = None  # umap:N | pca | pca:N | map; None: umap:5 (map for hdbscan)
    select: str | None = None  # k criterion: silhouette | bic | stability | stable-silhouette | modularity (graph); None: the method's default
    n_clusters: int | None = None  # None: chosen without labels (never from a compared column)
    k_max: int = 10  # most clusters the label-free choice considers (k in 2 .. k_max)
    min_cluster_size: int | None = None  # hdbscan; None: 2 % of the galaxies, at least 5
    stability_resamples: int = 10  # seeded 80 % resamples for the stability figure (0: skip)
    # Label-free aperture colours + concentration of the stamps appended to the features of the clustering
    # (galearn.features.aperture; docs/maps.md): auto = when the stamps are in linear units (survey mosaics,
    # mock), not for display images (ingest-images); on = required; off = the CNN features alone.
    colours: str = "auto"
    colour_weight: float = 0.2  # share of the standardised variance given to that block (measured, docs/maps.md)
    # Scale (docs/scaling.md): above these many galaxies the PCA, the space's UMAP and the clusterer are
    # fitted on a seeded subsample and the rest assigned in partitions ([compute] transform_partition rows);
    # agreement metrics (kNN, linear, cluster scores) and the stability on a seeded subsample. None: all rows.
    fit_subsample: int | None = 50000
    agreement_subsample: int | None = 50000
    random_state: int = 0


@dataclass(frozen=True)
class GanTrainConfig:
    """What ``galearn gan train`` reads (its fingerprint: a change retrains the GAN)."""

    condition: str | None = None  # None: UVJ class where available, else truth_class
    redshift_bins: tuple = ()  # also condition on redshift: (): no; [n]: n equal-count bins; [e0, e1, ...]: these bin edges (docs/gan.md)
    steps: int = 190  # ~0.56 CPU s/step at batch 16 on 1 thread: ~107 s, fits `galearn run`; rough, not full quality (docs/gan.md)
    batch_size: int = 16  # 16 x 190 steps beat 32 x 100 steps at equal CPU time on 3 mock fields (docs/gan-experiments.md, round 4)
    z_dim: int = 128
    channels: int = 16  # width of the full-resolution blocks (x8 at 4x4); 16: G 0.5M, D 0.4M parameters
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    adam_beta1: float = 0.0  # Adam betas of G and D (SNGAN / StyleGAN2-ADA's 0; 0.5 gave lower precision / recall at 100 steps, docs/gan-experiments.md round 4)
    adam_beta2: float = 0.999
    d_steps: int = 1  # D steps per G step
    discriminator: str = "sngan"  # "sngan" (pixel-space projection D) or "projected" (frozen pre-trained features, docs/gan.md)
    d_backbone: str = "efficientnet-lite0"  # feature network of the projected D (any registered backbone)
    d_layers: tuple = ()  # its stages projected; (): stage2, stage3, stage5, stage7 (EfficientNet) / layer1-4 (ResNet)
    d_input_size: int = 0  # stamps resized to this side before the feature network; 0: the stamp size
    d_minibatch_std: int = 4  # projected D: group size (at most the batch) of a minibatch standard deviation in each head (0: off; ignored by the SNGAN D; 30 CPU min on the mock: 6 of 7 aims against 4, docs/gan-experiments.md round 12)
    d_pixel_head: bool = False  # projected D: one more head on the stamp's own pixels beside the projected scales (Vision-aided GAN's pixel-space D beside pre-trained ones; needs the projected D; 30 CPU min on the dev images: no lower FID on the whole library at seeds 0 / 2, docs/gan-experiments.md round 32)
    precision: str = "fp32"  # "fp32", "bf16" (autocast for G and D forwards) or "auto" (bf16 where the device has it)
    fast_step: bool = True  # channels-last tensors and one G forward per step (the last D step's fakes feed the G step)
    sky_noise: str = "auto"  # "auto": "measured-correlated" when the real sky's short-range correlation is >= 0.15 (JPEG, drizzled mosaics), else "measured" (gan/sky.py choose_sky_noise; docs/gan-experiments.md round 10); "measured": G paints the noiseless stamp, the real stamps' measured sky noise is added (gan/sky.py); "measured-correlated": that noise with the real sky's measured autocorrelation; "learnt": per-band noise gain
    sky_scatter: bool = True  # measured sky: each generated stamp's noise sigma = the pooled sigma x one real training stamp's own ratio (depth varies across a mosaic; 8-bit images are scaled one by one); ignored with sky_noise = learnt (docs/gan-experiments.md round 9)
    sky_band_correlation: bool = True  # measured sky: the bands' pixel noise correlated as the real sky's (measure_sky_band_correlation: near 1 in colour JPEGs, not applied below 0.3: separate exposures, whose rings read 0.15-0.2 from faint sources); ignored with sky_noise = learnt (default since docs/gan-experiments.md round 27)
    sky_noise_gain: bool = False  # measured sky: each pixel's noise x the real stamps' noise gain at its noiseless level (gan/sky.py measure_noise_gain: photon noise raises it in physical units, an 8-bit asinh-like colour composite halves it under bright galaxy light); ignored with sky_noise = learnt (docs/gan-experiments.md round 43)
    sky_correlation_groups: int = 0  # measured-correlated sky: the real stamps in this many groups by their sky's smoothness, a noise kernel per group, each generated stamp draws its kernel with its depth (needs sky_scatter; 0: one pooled kernel; docs/gan-experiments.md round 18)
    g_template: bool = True  # G adds a learnt per-class image, started at the class's pixel-wise median real stamp
    g_template_trainable: bool = True  # learn the class template with G; false: it stays the class's median real stamp (a learnt template is one image shared by every sample; docs/gan-experiments.md round 12)
    g_template_blur: float = 0.0  # Gaussian sigma (pixels) smoothing the learnt template's change from the median real stamp it started at: shape and light, no pixel-scale texture (0: off; needs g_template_trainable; docs/gan-experiments.md round 18)
    g_template_warp: bool = False  # each sample's template: the class median scaled in brightness / size and sheared, from z (spread measured on the real stamps)
    g_residual: str = "bands"  # G's own output: "bands" (one map per band) or "luminance" (one map x the class template's colour, needs g_template; docs/gan-experiments.md round 4)
    g_envelope: bool = False  # G's own output x the (drawn) class template's light / its peak: nothing painted on the sky (needs g_template; docs/gan-experiments.md round 4)
    g_sky_penalty: float = 0.0  # G loss + this x the mean squared deviation of the NOISELESS stamp's outer ring from the measured sky level, in sky sigmas (needs sky_noise measured*; docs/gan-experiments.md round 5)
    g_power_match: float = 0.0  # G loss + this x the mean squared difference (dex^2) of the log azimuthally averaged power spectra (8 bins per band) of the generated and the real batch of the step (0: off; docs/gan-experiments.md round 19)
    g_pixel_match: float = 0.0  # G loss + this x the 1-D Wasserstein-1 distance of the per-band pixel-value distributions of the generated and the real batch of the step, over the real batch's standard deviation; clipped pixels still get gradient, so G cannot hide a too-dark sky at black (0: off; docs/gan-experiments.md round 20)
    g_sky_reference: str = "measured"  # what g_sky_penalty holds the noiseless ring to: "measured" (the real stamps' one sky level per band) or "stamp" (each stamp's own ring median: structure on the sky costs, its level may vary like the real ones'; docs/gan-experiments.md round 25)
    g_blur: float = 0.0  # Gaussian sigma (pixels) smoothing G's own output before the template and sky noise (0: off)
    g_colour_blur: float = 0.0  # Gaussian sigma (pixels) smoothing only the COLOUR of G's own output (each band minus the band mean), not its light: no sharp colour fringes (0: off; docs/gan-experiments.md round 24)
    g_asymmetry: float | tuple = 0.5  # weight of the 180-degree point-ANTISYMMETRIC part of G's own output (1: off, 0: point-symmetric), or a list of one per band; 0.5 raised recall 0.25 -> 0.44 over 6 runs (docs/gan-experiments.md round 7)
    g_asymmetry_radius: float = 0.0  # g_asymmetry only within this radius (half sides of the stamp, from its centre), rising to 1 (free) 0.25 further out: a symmetric galaxy among free neighbours (0: the whole stamp; docs/gan-experiments.md round 31)
    g_random_rotation: bool = False  # rotate G's noiseless stamp by a seeded uniform angle before the sky noise (orientations on the sky are isotropic; D's 90-degree augmentations cannot ask for it)
    g_drawn_centroid: bool = False  # move each noiseless stamp so its light centroid sits at an offset drawn from z, started at the real stamps' class mean and within-class spread, learnt with G (docs/gan-experiments.md round 38)
    g_drawn_ellipticity: bool = False  # stretch each noiseless stamp along its own major axis so its ellipticity is drawn from z (started at the real stamps' class mean and within-class spread of atanh(ellipticity), learnt with G) and turn the axis to a seeded uniform angle (docs/gan-experiments.md round 39)
    g_ellipticity_draw: str = "normal"  # with g_drawn_ellipticity: the drawn atanh(ellipticity) about its class mean "normal" (a Gaussian's) or "measured" (distributed as the real class's stamps are, each class its own skewed shape and spread; docs/gan-experiments.md round 48)
    g_ellipticity_passes: int = 1  # with g_drawn_ellipticity: measure and stretch this many times (the later passes stretch what the first left short of the drawn ellipticity; one resampling in all; docs/gan-experiments.md round 49)
    g_ellipticity_fill: str = "sky"  # with g_drawn_ellipticity: where the stretched, turned stamp reads beyond the cut-out, "sky" (its ring median) or "reflection" (the stamp mirrored at its edge: no rotated box where G's edge differs from the ring median; docs/gan-experiments.md round 51)
    g_ellipticity_trainable: bool = True  # with g_drawn_ellipticity: learn its class means and spread with G; false: they stay the real stamps' (learnt, they drift toward elongated galaxies; docs/gan-experiments.md round 48)
    g_centroid_radii: str = "normal"  # with g_drawn_centroid: the drawn offset's distance from the class mean "normal" (a Gaussian's) or "measured" (distributed as the real stamps' distances, heavy-tailed; docs/gan-experiments.md round 40)
    g_centroid_move: str = "translate"  # with g_drawn_centroid: how a stamp reaches its drawn centroid, "translate" (the whole stamp moved) or "lopsided" (its core kept in place, its outskirts shifted: the centroid off the peak, as in real stamps; docs/gan-experiments.md round 42)
    g_neighbours: bool = False  # draw real neighbouring sources into each noiseless stamp before the sky noise: each stamp takes one real stamp's number of compact sources away from its centre, each a real one's flux per band, size and distance from the centre at a seeded angle, a circular Gaussian (gan/neighbours.py; needs a measured sky_noise; docs/gan-experiments.md round 43)
    g_sky_floor: bool = False  # no noiseless pixel below its own stamp's sky: the noiseless stamp (after the template, centroid and ellipticity) floored per band at its outer-ring median before the sky noise is added, as real light is (galaxy light adds to the sky, never takes from it; needs a measured sky_noise; docs/gan-experiments.md round 44)
    sky_scatter_by_light: bool = False  # with sky_scatter: each stamp's depth row (its sky sigma, and texture group) drawn among the 16 of 256 rows whose real stamps' central light (the central quarter-side box above the ring's median) lies nearest the stamp's own: on the dev images a bright galaxy's cut-out has a deeper but smoother sky, its highest-frequency power falling with the light (Spearman -0.35 in R), where the library's rose (docs/gan-experiments.md round 49)
    sky_smooth_light: bool = False  # with sky_correlation_groups: G's noiseless light (before neighbours and noise) filtered by its stamp's sky group's smoothing beyond the least-smoothed group's, the transfer function its noise amplitude measures: a cut-out's resampling or compression smooths its galaxy as it smooths its sky, where G's texture was the same on every sky (gan/sky.py light_transfer; docs/gan-experiments.md round 50)
    sky_scatter_by_level: bool = False  # with sky_scatter: each stamp's depth row (its sky sigma, and texture group) drawn among the 16 of 256 rows whose real stamps' noiseless sky levels lie nearest the stamp's own, not at random: in the real stamps the sky sigma rises with the sky level (dev JPEGs: Spearman 0.91 in R), so a dark sky with a bright sky's noise goes black (docs/gan-experiments.md round 46)
    g_sky_level_side: str = "both"  # which generated sky levels g_sky_level_match pulls: "both" (every sorted level toward the real one of its rank) or "below" (only those darker than the real one of their rank: the dark tail lifted, no level pulled down; docs/gan-experiments.md round 54)
    g_sky_level_match: float = 0.0  # G loss + this x the 1-D Wasserstein-1 distance, per band, between the noiseless generated stamps' sky levels (the middle half of their outer ring) and the real stamps' own noiseless levels of the same classes, over the real spread: G still picks each stamp's sky, but their spread is held to the real one (0: off; needs g_match_reference = class and a measured sky_noise; docs/gan-experiments.md round 46)
    g_skip_excitation: bool = False  # FastGAN's skip-layer excitation in G: blocks at >= 32 px gated per channel by the block at 1/4 their resolution (docs/gan-experiments.md round 8)
    g_stamp_power_match: float = 0.0  # G loss + this x the 1-D Wasserstein-1 distance, per band and radial bin, of the stamps' own log power spectra between the generated and the real batch, over the real spread (0: off; docs/gan-experiments.md round 21)
    g_colour_power_match: float = 0.0  # G loss + this x g_stamp_power_match's distance on the stamps' colour maps (every pair of bands' difference): colour structure at each scale, which the per-band terms cannot see (0: off; needs 2+ bands; docs/gan-experiments.md round 30)
    g_profile_match: float = 0.0  # G loss + this x the 1-D Wasserstein-1 distance, per band and annulus, of the stamps' own light profiles (the morphometry annuli) between the generated and the real batch, over the real spread: the spectral terms alone let the profiles drift (0: off; docs/gan-experiments.md round 33)
    g_joint_match: float = 0.0  # G loss + this x the sliced Wasserstein-1 distance of the stamps' joint (log power spectrum, light profile) vectors, standardised by the real training stamps, along 64 random directions drawn each step: how those numbers move together, which the per-number terms cannot hold (0: off; docs/gan-experiments.md round 35)
    g_joint_smoothing: float = 0.0  # the g_joint_match target smoothed: each real projection moved by Gaussian noise of this x its class's spread along the direction, then shrunk back to the class's mean and spread (a smoothed bootstrap), so the term pulls toward a smooth estimate of the class, not the training stamps' own vectors (0: off; docs/gan-experiments.md round 36)
    g_mode_seeking: float = 0.0  # G loss + this x MSGAN's mode-seeking term: 1 / the mean, over pairs of generated stamps of one class in the batch, of their difference (4x4-pixel blocks) over their latents' difference; rewards variety within a class (0: off; docs/gan-experiments.md round 22)
    g_match_distance: str = "wasserstein"  # how g_stamp_power_match / g_colour_power_match / g_profile_match / g_joint_match compare each class's generated values with the real ones: "wasserstein" (sorted, 1-D Wasserstein-1; with 16 stamps a batch biased toward too narrow a spread) or "energy" (the energy distance, whose expectation is least at the real distribution; docs/gan-experiments.md round 41)
    g_match_reference: str = "batch"  # what g_power_match / g_stamp_power_match / g_colour_power_match / g_profile_match / g_joint_match / g_pixel_match compare the generated batch with: "batch" (the real batch of the step) or "class" (each class over the whole training set: its mean spectrum, its stamps' spectra and its pixel values; docs/gan-experiments.md round 21)
    g_upsample: str = "nearest"  # how G's blocks double their input: "nearest" or "bilinear" (a low-pass interpolation; docs/gan-experiments.md round 11)
    g_pin_sky: bool = False  # pin the noiseless stamp's outer-ring median to the real stamps' measured sky level (needs g_template; docs/gan-experiments.md round 4)
    g_pin_sky_to: str = "measured"  # the level g_pin_sky pins to: "measured" (one per band) or "stamp" (per generated stamp, the sky level of the real stamp its sky depth comes from; needs sky_scatter; docs/gan-experiments.md round 26)
    g_out_scale: float = 1.0  # G's output conv starts at this multiple of PyTorch's default init (0: G starts at the template, docs/gan.md)
    d_radius: bool = True  # SNGAN D: append a fixed distance-from-centre map to its input (a centring prior)
    d_head: str = "sum"  # D epilogue: "sum" (global sum pooling) or "dense" (minibatch std + conv + flattened 4x4 dense; position-aware)
    r1_gamma: float = 0.0  # R1 penalty weight on real stamps (0: off); lazy, every r1_every D updates
    r1_every: int = 16
    ema_beta: float = 0.999  # ramped up as min(beta, (1+step)/(10+step))
    lr_decay_start: int = 0  # G and D learning rates fall linearly from this step (0: constant learning rates) ...
    lr_decay_end: int = 0  # ... to zero at this step (pix2pix's linear decay; steps, not a fraction of gan.steps, so chunked and budgeted runs keep one schedule; docs/gan-experiments.md round 29)
    diffaugment: str = "auto"  # DiffAugment before D (flip, rot90, translation, translation32, cutout -- which leaks, docs/gan-experiments.md round 15; no colour policy: band ratios matter); "auto": "translation" for the projected D (so it sees orientation, docs/gan-experiments.md round 14), "flip,rot90,translation" for SNGAN
    checkpoint_every: int = 50
    grid_every: int = 50
    device: str | None = None
    threads: int = 1  # torch CPU threads, 0: all cores (2 threads were 3-5x SLOWER than 1 on the shared 2-core machine)
    random_state: int = 0
    heldout_fraction: float = 0.2  # real stamps per class kept out of GAN training (evaluation, balancing test)
    train_max_n: int | None = 20000  # train on at most this many training stamps (a seeded class-stratified draw; the stamps are held in memory); None: all


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
    realism_draws: int = 10  # draws of the real baseline T and the generated G (H fixed) averaged in FID / KID / precision / recall (1: one draw, as before round 29; docs/gan.md)
    realism_space: str = "morphometry"  # FID / KID / precision / recall / memorisation space: morphometry, self-supervised (small CNNs learnt from the real training stamps, ~2.3 CPU min for 240 stamps), or a backbone; never the D's own network
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
class ComputeConfig:
    """Where heavy stages run and how they are partitioned (``galearn.compute``, docs/scaling.md)."""

    scheduler: str = "auto"  # none | auto | local | local:N | tcp://HOST:PORT; auto: none below auto_threshold items, else local
    scheduler_file: str | None = None  # dask scheduler file (dask-mpi, HPC); wins over scheduler
    auto_threshold: int = 20000  # items (stamps, rows) from which `auto` starts a LocalCluster (measured, docs/scaling.md)
    retries: int = 3  # retries of a task whose worker died
    max_in_flight: int | None = None  # tasks submitted at a time (None: 2 per worker)
    cutout_tile_pix: int = 4096  # side (first-band pixels) of the sky tiles cutout tasks are grouped by
    cutout_partition: int = 2048  # most stamps per cutout task (a tile with more is split)
    feature_partition: int = 1024  # stamps per feature task (~5-50 s each on one core)
    morphology_partition: int = 128  # stamps per statmorph task (~0.2 s per stamp)
    map_fit_subsample: int = 50000  # embed: fit t-SNE/UMAP/PCA on a seeded subsample of this many rows, transform the rest
    transform_partition: int = 20000  # rows per `transform` task when placing the rest on the map
    anomaly_fit_subsample: int = 20000  # anomalies: scaler, PCA and detector fitted on a seeded subsample of this many rows
    anomaly_partition: int = 50000  # anomalies: rows per scoring task


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
    compute: ComputeConfig = field(default_factory=ComputeConfig)
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


# --------------------------------------------------------------------------- typed validation
#
# Every value that reaches a configuration dataclass -- from TOML, from KEY=VALUE
# overrides or from a CLI option (``section``) -- is checked against the field's
# type hint and, where declared, its range or choices, so `galearn run --dry-run`
# refuses exactly what a run would refuse. The rules are keyed by field name
# (the same name means the same thing in every section) and a field may declare
# its own in ``field(metadata={"range": (lo, hi, "[)"), "choices": (...)})``.

#: field name -> (low, high, bounds) with bounds "[]", "[)", "(]" or "()"; None = unbounded.
FIELD_RANGES: dict[str, tuple] = {
    "n_galaxies": (1, 20000, "[]"), "stamp_size": (4, None, "[)"), "batch_size": (1, None, "[)"),
    "perplexity": (0, None, "()"), "n_neighbors": (2, None, "[)"), "pca_components": (1, None, "[)"),
    "max_bad_fraction": (0, 1, "[]"), "crop_fraction": (0, 1, "(]"), "thumbnail_crop": (0, 1, "(]"),
    "softening_sigmas": (0, None, "()"), "max_percentile": (0, 100, "(]"),
    "pixel_scale_arcsec": (0, None, "()"), "density_per_arcmin2": (0, None, "()"),
    "merger_fraction": (0, 1, "[]"), "field_size_pix": (1, None, "[)"), "n_stars": (0, None, "[)"),
    "steps": (1, None, "[)"), "z_dim": (1, None, "[)"), "channels": (1, None, "[)"),
    "checkpoint_every": (1, None, "[)"), "grid_every": (1, None, "[)"), "d_steps": (1, None, "[)"),
    "r1_every": (1, None, "[)"), "r1_gamma": (0, None, "[)"), "lr_g": (0, None, "()"), "lr_d": (0, None, "()"),
    "learning_rate": (0, None, "()"), "adam_beta1": (0, 1, "[)"), "adam_beta2": (0, 1, "[)"),
    "ema_beta": (0, 1, "[)"), "g_ellipticity_passes": (1, 8, "[]"), "lr_decay_start": (0, None, "[)"), "lr_decay_end": (0, None, "[)"),
    "heldout_fraction": (0, 1, "[)"), "eval_max_n": (1, None, "[)"), "train_max_n": (1, None, "[)"),
    "balancing_repeats": (1, None, "[)"), "realism_draws": (1, None, "[)"), "eval_morphology_n": (0, None, "[)"), "n_per_class": (1, None, "[)"),
    "epochs": (1, None, "[)"), "budget_minutes": (0, None, "[)"), "temperature": (0, None, "()"),
    "freeze_stages": (0, None, "[)"), "input_size": (0, None, "[)"), "random_state": (0, None, "[)"),
    "n_clusters": (1, None, "[)"), "min_cluster_size": (2, None, "[)"), "thumbnail_grid": (1, None, "[)"),
    "thumbnail_pixels": (1, None, "[)"), "max_points_html": (1, None, "[)"), "sprite_pixels": (1, None, "[)"),
    "fuse_weight": (0, None, "()"), "threads": (0, None, "[)"), "colour_weight": (0, 1, "()"), "g_blur": (0, 8, "[]"), "g_colour_blur": (0, 8, "[]"),
    "g_template_blur": (0, 8, "[]"), "sky_correlation_groups": (0, 16, "[]"), "g_asymmetry": (0, 1, "[]"), "g_asymmetry_radius": (0, 2, "[]"),
    "g_power_match": (0, None, "[)"), "g_pixel_match": (0, None, "[)"),
    "g_stamp_power_match": (0, None, "[)"), "g_mode_seeking": (0, None, "[)"), "g_colour_power_match": (0, None, "[)"),
    "g_profile_match": (0, None, "[)"), "g_joint_match": (0, None, "[)"), "g_joint_smoothing": (0, 4, "[]"),
}
#: field name -> allowed values (strings).
FIELD_CHOICES: dict[str, tuple] = {
    "method": ("tsne", "umap", "pca"), "stretch": ("asinh", "minmax-asinh"), "resample": ("adaptive", "exact"),
    "clusterer": ("auto", "kmeans", "gmm", "ward", "merge", "graph", "spectral", "hdbscan"), "bn": ("frozen", "train"), "d_head": ("sum", "dense"), "g_upsample": ("nearest", "bilinear"),
    "g_match_reference": ("batch", "class"), "g_sky_reference": ("measured", "stamp"),
    "g_pin_sky_to": ("measured", "stamp"), "g_centroid_radii": ("normal", "measured"),
    "g_centroid_move": ("translate", "lopsided"), "g_ellipticity_draw": ("normal", "measured"),
    "g_ellipticity_fill": ("sky", "reflection"), "g_sky_level_side": ("both", "below"),
    "g_match_distance": ("wasserstein", "energy"),
    "fuse": ("none", "morphology"), "colours": ("auto", "on", "off"),
}
_N_JOBS_FIELDS = ("n_jobs", "fuse_jobs")  # -1 (all cores) or >= 1
_TYPE_WORDS = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               tuple: "a list", dict: "a table", type(None): "absent"}


@functools.cache
def _hints(cls: type) -> dict:
    import typing

    return typing.get_type_hints(cls)


def _options(hint: Any) -> tuple:
    """The member types of ``hint`` (``int | None`` -> (int, NoneType)); a bare type -> (type,)."""
    import types
    import typing

    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        return typing.get_args(hint)
    origin = typing.get_origin(hint)
    return (origin if origin is not None else hint,)


def _convert(value: Any, kind: type) -> Any:
    """``value`` as ``kind`` or raise ValueError (no silent truncation)."""
    if kind is type(None):
        if value is None:
            return None
    elif kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "on", "off"):
            return value.strip().lower() in ("true", "yes", "on")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value.strip())
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
    elif kind is tuple:
        if isinstance(value, (list, tuple)):
            return tuple(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool):  # one number: a one-element list
            return (value,)
        if isinstance(value, str):  # "a,b" from KEY=VALUE or a single name
            parts = [p.strip() for p in value.split(",") if p.strip()]
            return tuple(_json_or_text(p) for p in parts)
    elif kind is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        if isinstance(value, kind):
            return value
    raise ValueError(kind)


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _in_range(value: float, rule: tuple) -> bool:
    lo, hi, bounds = rule
    if lo is not None and not (value >= lo if bounds[0] == "[" else value > lo):
        return False
    if hi is not None and not (value <= hi if bounds[1] == "]" else value < hi):
        return False
    return True


def _range_text(rule: tuple) -> str:
    lo, hi, bounds = rule
    if hi is None:
        return f"{'>=' if bounds[0] == '[' else '>'} {lo:g}"
    return f"in {bounds[0]}{lo:g}, {hi:g}{bounds[1]}"


def check_value(cls: type, name: str, value: Any, where: str = "", *, label: str | None = None) -> Any:
    """``value`` checked and coerced for field ``name`` of config dataclass ``cls``.

    Types follow the field's annotation (``int``, ``float``, ``bool``, ``str``,
    ``tuple``, ``dict``, unions with ``None``); numbers must lie in the field's
    range and strings among its choices (:data:`FIELD_RANGES`,
    :data:`FIELD_CHOICES`, or the field's own ``metadata``).

    Raises
    ------
    BadValueError
        Naming the key (``where`` + ``name``; ``label`` replaces "configuration
        key <key>", e.g. with the CLI option), the value and what is expected.
    """
    key = f"{where}{name}"
    what = label or f"configuration key {key}"
    f = next((f for f in fields(cls) if f.name == name), None)
    if f is None:
        raise BadValueError(f"unknown configuration key '{key}'; known: {', '.join(x.name for x in fields(cls))}")
    kinds = _options(_hints(cls)[name])
    out = _MISSING = object()
    # Try the declared types in an order that never loses information (bool before int before float).
    order = sorted(kinds, key=lambda k: {type(None): 0, bool: 1, int: 2, float: 3}.get(k, 4))
    for kind in order:
        if kind is bool and not isinstance(value, (bool, str)):
            continue
        if kind is int and float in kinds and isinstance(value, float):
            continue
        try:
            out = _convert(value, kind)
            break
        except ValueError:
            continue
    if out is _MISSING:
        expected = " or ".join(dict.fromkeys(_TYPE_WORDS.get(k, getattr(k, "__name__", str(k))) for k in kinds))
        raise BadValueError(f"{what}: expected {expected}, got {_show(value)}")
    rule = f.metadata.get("range", FIELD_RANGES.get(name))
    if name in _N_JOBS_FIELDS and isinstance(out, int) and not (out == -1 or out >= 1):
        raise BadValueError(f"{what}: must be -1 (all cores) or >= 1, got {_show(out)}")
    if rule is not None and isinstance(out, (int, float)) and not isinstance(out, bool):
        if not (out == out and _in_range(out, rule)):  # NaN fails
            raise BadValueError(f"{what}: must be {_range_text(rule)}, got {_show(out)}")
    choices = f.metadata.get("choices", FIELD_CHOICES.get(name))
    if choices is not None and isinstance(out, str) and out not in choices:
        raise BadValueError(f"{what}: must be one of {', '.join(choices)}, got {_show(out)}")
    return out


def _show(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if hasattr(value, "item") and callable(value.item):  # numpy scalar -> plain value
        value = value.item()
    return json.dumps(value) if isinstance(value, (bool, type(None))) else repr(value)


#: Keys an older release wrote to ``WS/config.toml`` that nothing reads any more: a configuration
#: file carrying one still loads (with a warning), so an old workspace's file can be re-run.
RETIRED_KEYS = {
    "compute.cluster_fit_subsample": "the clusters are fitted on a subsample of classify.fit_subsample rows",
}


def _build(cls: type, data: dict, where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    hints = _hints(cls)
    kwargs = {}
    for key, value in data.items():
        if f"{where}{key}" in RETIRED_KEYS:
            warnings.warn(f"configuration key '{where}{key}' is no longer used and is ignored "
                          f"({RETIRED_KEYS[where + key]})", stacklevel=3)
            continue
        if key not in known:
            raise BadValueError(f"unknown configuration key '{where}{key}'; known: {', '.join(known)}")
        sub = hints[key]
        if isinstance(sub, type) and dataclasses.is_dataclass(sub):
            if not isinstance(value, dict):
                raise BadValueError(f"configuration section {where}{key} must be a table")
            kwargs[key] = _build(sub, value, f"{where}{key}.")
        else:
            kwargs[key] = check_value(cls, key, value, where)
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
    "compute": ComputeConfig,
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


#: CLI options whose name is not ``--`` + the field name with dashes.
_CLI_OPTION_NAMES = {"random_state": "--seed", "stamp_size": "--size", "n_per_class": "--n",
                     "require_central_brightest": "--central-brightest", "columns": "--column"}


def _option_name(field_name: str) -> str:
    return _CLI_OPTION_NAMES.get(field_name, "--" + field_name.replace("_", "-"))


def section(cfg: RunConfig, name: str, **overrides: Any) -> Any:
    """``cfg.<name>`` with the non-None ``overrides`` applied (CLI flags)."""
    sub = getattr(cfg, name)
    changes = {k: check_value(type(sub), k, v, f"{name}.", label=f"{_option_name(k)} ({name}.{k})")
               for k, v in overrides.items() if v is not None}
    return dataclasses.replace(sub, **changes) if changes else sub
