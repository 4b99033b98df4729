"""Generator and projection discriminator for multi-band galaxy stamps.

Both networks work on ``(N, C, H, W)`` tensors with ``H == W`` a power of two
>= 32 and any number of bands ``C``. Images live in ``[-1, 1]`` inside the
networks; :func:`to_stretched` / :func:`from_stretched` convert to and from the
stretched ``0..1`` range of :mod:`galearn.imaging`.

* :class:`Generator`: latent ``z`` -> linear -> ``(ch_0, 4, 4)`` -> up-sampling
  blocks (nearest x2, 3x3 conv with reflect padding, per-pixel noise, conditional BatchNorm whose
  gain and bias come from a class embedding, ReLU) -> 3x3 conv -> + per-band pixel noise -> clip
  to ``[-1, 1]`` (the stretch clips the data the same way).
* :class:`Discriminator`: strided 4x4 convolutions with spectral normalisation
  and LeakyReLU down to 4x4, global sum pooling, then the projection output of
  Miyato & Koyama (2018): ``psi(h) + <embed(y), h>``.

Channel widths: the block at resolution ``r`` has ``channels * min(8, stamp_size // r)``
feature maps, so ``channels`` is the width of the highest-resolution block.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import spectral_norm

from ..errors import BadValueError
from .rng import seeded_draw
from .template import ring_median

__all__ = ["Generator", "Discriminator", "G_UPSAMPLE", "NoiseInjection", "minibatch_stddev", "D_HEADS", "to_stretched", "from_stretched", "check_stamp_size", "n_parameters",
           "gaussian_blur", "SkipExcitation"]


def check_stamp_size(stamp_size: int) -> int:
    """Return the number of x2 resolution steps between 4x4 and ``stamp_size``.

    Raises :class:`BadValueError` unless ``stamp_size`` is a power of two >= 32.
    """
    size = int(stamp_size)
    if size < 32 or size & (size - 1):
        raise BadValueError(f"GAN stamp size must be a power of two >= 32 pixels, got {stamp_size}")
    return int(math.log2(size)) - 2


def _widths(stamp_size: int, channels: int) -> list[int]:
    # Width at resolutions 4, 8, ..., stamp_size.
    n = check_stamp_size(stamp_size)
    res = [4 * 2**i for i in range(n + 1)]
    return [int(channels * min(8, stamp_size // r)) for r in res]


def to_stretched(x: torch.Tensor) -> torch.Tensor:
    """Network range ``[-1, 1]`` -> stretched range ``[0, 1]``."""
    return (x + 1.0) * 0.5


def from_stretched(x: torch.Tensor) -> torch.Tensor:
    """Stretched range ``[0, 1]`` -> network range ``[-1, 1]``."""
    return x * 2.0 - 1.0


def n_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


class ConditionalBatchNorm2d(nn.Module):
    """BatchNorm without affine parameters, then a per-class gain and bias."""

    def __init__(self, num_features: int, n_classes: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(num_features, affine=False)
        self.gain = nn.Embedding(n_classes, num_features)
        self.bias = nn.Embedding(n_classes, num_features)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.bn(x)
        return h * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Every channel of ``(N, C, H, W)`` smoothed by a Gaussian of ``sigma`` pixels (``2 ceil(3 sigma) + 1`` taps, reflected edges)."""
    from torchvision.transforms.v2.functional import gaussian_blur as _blur

    size = 2 * max(1, math.ceil(3.0 * sigma)) + 1
    return _blur(x, kernel_size=[size, size], sigma=[sigma, sigma])


def _noise(shape: tuple[int, ...], like: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``shape`` on ``like``'s device, from ``gen`` (seeded) or torch's global RNG."""
    return seeded_draw(torch.randn, shape, gen=gen, device=like.device, dtype=like.dtype)


class NoiseInjection(nn.Module):
    """``h + w_c * n`` with per-pixel standard normal noise ``n`` and a learnt gain per channel.

    ``per_channel=False``: one noise map shared by all channels (StyleGAN,
    Karras et al. 2019); ``True``: independent noise per channel (used on the
    output bands, whose sky noise is independent from band to band). The gain
    starts at ``init``.
    """

    def __init__(self, channels: int, *, per_channel: bool = False, init: float = 0.0) -> None:
        super().__init__()
        self.per_channel = bool(per_channel)
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), float(init)))

    def forward(self, h: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        n, c, height, width = h.shape
        return h + self.weight * _noise((n, c if self.per_channel else 1, height, width), h, gen)


#: Up-sampling of G's blocks (``gan.g_upsample``).
G_UPSAMPLE = ("nearest", "bilinear")


class _GBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, n_classes: int, upsample: str = "nearest") -> None:
        super().__init__()
        if upsample not in G_UPSAMPLE:
            raise BadValueError(f"gan.g_upsample must be one of {', '.join(G_UPSAMPLE)}, got {upsample!r}")
        self.upsample = upsample
        # Reflect padding: zero padding after every x2 up-sampling gives G a border
        # signal at each resolution; at 16x16 it surfaced as a bright square frame
        # 64/16 = 4 pixels inside the stamp edge (docs/gan.md).
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1, padding_mode="reflect")
        self.noise = NoiseInjection(c_out)
        self.bn = ConditionalBatchNorm2d(c_out, n_classes)

    def forward(self, x: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        if self.upsample == "bilinear":  # a low-pass (tent) interpolation: no pixel-scale blocks to paint over
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        else:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        return F.relu(self.bn(self.noise(self.conv(x), gen), y))


class SkipExcitation(nn.Module):
    """FastGAN's skip-layer excitation (Liu et al. 2021): a low-resolution map gates a high-resolution one.

    ``gate = sigmoid(conv1x1(LeakyReLU(conv4x4(avgpool4(low)))))`` is one
    weight per channel of the high-resolution map, ``(N, c_high, 1, 1)``, so
    the coarse layout of a sample (size, brightness, class) rescales the
    channels that paint its fine structure, and the low-resolution block gets
    a short gradient path from the output.
    """

    def __init__(self, c_low: int, c_high: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.conv = nn.Conv2d(c_low, c_high, 4)
        self.out = nn.Conv2d(c_high, c_high, 1)

    def forward(self, high: torch.Tensor, low: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.out(F.leaky_relu(self.conv(self.pool(low)), 0.1)))
        return high * gate


def asymmetry_weight_map(stamp_size: int, weight: float, radius: float, ramp: float = 0.25) -> torch.Tensor:
    """The weight of the point-antisymmetric part of G's output per pixel, ``(1, 1, size, size)``.

    ``weight`` within ``radius`` of the stamp centre (in units of the half
    side, ``stamp_size / 2`` pixels), 1 beyond ``radius + ramp``, and a
    cosine ramp between. It depends on the distance from the centre alone,
    so it is itself point-symmetric and the split into symmetric and
    antisymmetric parts holds pixel by pixel.
    """
    centre = (stamp_size - 1) / 2.0
    axis = (torch.arange(stamp_size, dtype=torch.float32) - centre) / (stamp_size / 2.0)
    r = torch.sqrt(axis[:, None] ** 2 + axis[None, :] ** 2)
    t = ((r - radius) / ramp).clamp(0.0, 1.0)
    rise = 0.5 - 0.5 * torch.cos(torch.pi * t)
    return (weight + (1.0 - weight) * rise)[None, None]


def asymmetry_weights(asymmetry: float | Sequence[float], n_bands: int | None = None) -> tuple[float, ...]:
    """``gan.g_asymmetry`` as one weight per band, each in [0, 1]: a number applies to every band.

    ``n_bands`` None: the weights checked without the band count (one number gives one weight).
    """
    many = isinstance(asymmetry, (list, tuple))
    values = list(asymmetry) if many else [asymmetry] * (n_bands or 1)
    if not (values and (n_bands is None or len(values) == n_bands)
            and all(isinstance(w, numbers.Real) and not isinstance(w, bool) and 0 <= w <= 1 for w in values)):
        count = f"{n_bands} (one per band)" if n_bands else "them, one per band"
        raise BadValueError(f"gan.g_asymmetry must be a weight from 0 (point-symmetric residual) to 1 (off), or a list "
                            f"of {count}, got {asymmetry!r}")
    return tuple(float(w) for w in values)


class Generator(nn.Module):
    """Class-conditional generator: ``(z (N, z_dim), y (N,) int64) -> (N, C, H, W)`` in ``[-1, 1]``.

    Per-pixel noise is injected after every convolution (StyleGAN-style, learnt
    gains starting at 0) and, independently per band, before the output
    non-linearity: it gives G a direct way to paint the pixel-to-pixel sky
    noise of real stamps, which a stack of up-sampled smooth feature maps can
    only imitate with streaks and checkerboards (docs/gan.md). The noise comes
    from ``gen`` (a seeded ``torch.Generator``) when given, so training steps
    and sampled libraries are reproducible.

    Parameters
    ----------
    n_classes : int
        Number of condition classes.
    n_bands : int
        Output channels ``C``.
    stamp_size : int
        Output side ``H == W`` (pixels), a power of two >= 32.
    z_dim : int
        Latent dimension.
    channels : int
        Width of the highest-resolution block (the 4x4 block has 8x this).
    sky_noise : bool or "correlated"
        G paints the noiseless stamp and :class:`~galearn.gan.sky.SkyNoise`
        adds the sky noise measured on the real stamps (set its buffers with
        ``G.sky.set(measure_sky(...))``) instead of the learnt per-band noise.
        ``"correlated"``: that noise with the real sky's measured
        autocorrelation (``G.sky.set_correlation(measure_sky_correlation(...))``).
    template : bool
        A learnt per-class image ``(n_classes, C, H, W)`` added to the output
        (``gan.g_template``), started at the pixel-wise median of the class's
        real training stamps (:func:`galearn.gan.loop.init_output_bias`): a
        centred source with the class's colours from the first step, G learns
        the departures from it.
    out_scale : float
        The output conv's weights start at this multiple of PyTorch's default
        initialisation (``gan.g_out_scale``; 1: unchanged). 0: G's own output
        starts at exactly 0, so the first samples are the class template (or
        the sky level) plus sky noise, and under Adam (steps of about ``lr``
        per weight) G's own image grows from there gradually instead of
        starting as full-amplitude random structure that the first steps must
        undo. The rest of G learns as soon as these weights leave 0 (step 1).
    template_trainable : bool
        Learn the class template with G (``gan.g_template_trainable``);
        ``False`` keeps it the class's median real stamp. Learnt, it is one
        image shared by every sample of the class, and a long run paints
        texture into it (docs/gan-experiments.md round 12).
    template_blur : float
        ``gan.g_template_blur``: the learnt template's departure from the
        median real stamp it started at (buffer ``template_start``) is
        smoothed by a fixed Gaussian of this sigma (pixels; 0: off), so the
        template learns shape and light but no pixel-scale texture; the
        median stamp itself is kept unsmoothed (needs ``template`` and
        ``template_trainable``; docs/gan-experiments.md round 18).
    sky_groups : int
        ``gan.sky_correlation_groups``: the correlated sky's kernel per group
        of real stamps by sky smoothness, drawn per stamp with its depth
        (:class:`~galearn.gan.sky.SkyNoise`; ignored unless ``sky_noise`` is
        ``"correlated"``; needs ``sky_scatter``).
    sky_scatter_by_level : bool
        ``gan.sky_scatter_by_level``: each stamp's depth row drawn among the
        rows whose real stamps' noiseless sky levels lie nearest its own
        (:meth:`galearn.gan.sky.SkyNoise.rows_by_level`; needs ``sky_scatter``).
    sky_scatter_by_light : bool
        ``gan.sky_scatter_by_light``: each stamp's depth row (and sky texture
        group) drawn among the rows whose real stamps' central light lies
        nearest its own (:meth:`galearn.gan.sky.SkyNoise.rows_by_light`;
        needs ``sky_scatter``).
    sky_smooth_light : bool
        ``gan.sky_smooth_light``: the noiseless light (before the neighbours
        and the noise) filtered by its sky group's smoothing beyond the
        least-smoothed group's (:func:`galearn.gan.sky.light_transfer`;
        needs ``sky_groups``).
    sky_band_correlation : bool
        ``gan.sky_band_correlation``: the measured sky's unit noise mixed
        between bands by the Cholesky factor of the real sky's band
        correlation (buffer ``sky.band_mix``, set from
        :func:`galearn.gan.sky.measure_sky_band_correlation` by
        :func:`galearn.gan.loop.run_train`; ignored without ``sky_noise``).
    neighbours : bool
        ``gan.g_neighbours``: real neighbouring sources (counts and sources
        from :func:`galearn.gan.neighbours.measure_neighbours`, set by
        :func:`galearn.gan.loop.run_train`) drawn into each noiseless stamp
        before the sky noise (needs ``sky_noise``).
    sky_floor : bool
        ``gan.g_sky_floor``: the final noiseless stamp floored, per stamp and
        band, at its own outer-ring median before the sky noise is added: G
        adds light to its sky and never takes any away, so the sky's pixels
        below the sky level come from the noise alone (needs ``sky_noise``).
    sky_noise_gain : bool
        ``gan.sky_noise_gain``: the measured sky noise multiplied, pixel by
        pixel, by the real stamps' noise gain at the noiseless level (buffers
        ``sky.gain_level`` / ``sky.gain``, set from
        :func:`galearn.gan.sky.measure_noise_gain` by
        :func:`galearn.gan.loop.run_train`; ignored without ``sky_noise``).
    template_warp : bool
        Draw the template per sample (``gan.g_template_warp``, needs
        ``template``): brightness, size and shape of the class template from
        the latent, :class:`~galearn.gan.template.TemplateWarp`, started at the
        spread measured on the real stamps (:func:`galearn.gan.loop.init_output_bias`).
    residual : {"bands", "luminance"}
        G's own output (``gan.g_residual``): one map per band, or ONE map
        multiplied by its class's colour (buffer ``colour`` ``(K, C)``, mean 1
        over bands, set from the class templates by
        :func:`galearn.gan.loop.init_output_bias`), so G changes the light
        but not the band ratios of the template (needs ``template``).
    sky_penalty : float
        ``gan.g_sky_penalty``: in training mode each forward stores
        ``last_sky_penalty``, the mean squared deviation of the noiseless
        stamps' outer ring from the real sky level (buffer
        ``sky_ring_level``, linear units), in units of the sky sigma
        (:meth:`galearn.gan.sky.SkyNoise.ring_deviation`); the G loss adds it
        times this weight, so G keeps its own structure off the sky.
    sky_reference : {"measured", "stamp"}
        ``gan.g_sky_reference``: the penalty's level, the real sky level
        (one per band) or each stamp's own ring median (per stamp and band,
        not differentiated): only structure on the sky costs then, and the
        sky level may vary from stamp to stamp as the real ones do.
    pin_sky : bool
        Shift each noiseless stamp, per band, so that its outer-ring median
        equals the real stamps' noiseless sky level (buffer ``sky_level``,
        network units, set from :func:`galearn.gan.sky.measure_sky` by
        :func:`galearn.gan.loop.run_train`; ``gan.g_pin_sky``, needs
        ``template``): G's output cannot raise or lower the sky on which the
        measured noise is added and clipped. (Not the template's ring median:
        the pixel-wise median over stamps holds the neighbours' light and sat
        0.1-0.4 linear units above the measured level, docs/gan-experiments.md round 4.)
    pin_sky_to : {"measured", "stamp"}
        ``gan.g_pin_sky_to``, with ``pin_sky``: the one measured level per
        band, or per generated stamp the noiseless sky level of the real
        stamp whose depth its sky noise takes (a scatter row, buffer
        ``sky.row_level``; needs ``sky_scatter``): the generated sky levels
        then spread as the real ones do, none below black unless a real one is.
    blur : float
        ``gan.g_blur``: G's own output (not the template, not the sky noise)
        is smoothed by a fixed Gaussian of this sigma (pixels; 0: off), so
        G cannot paint structure finer than about a PSF: real stamps are
        band-limited by the PSF and all their pixel-scale power is noise.
    colour_blur : float
        ``gan.g_colour_blur``: only the colour of G's own output -- each band
        minus the mean over bands -- is smoothed by a Gaussian of this sigma
        (pixels; 0: off; after ``blur``); its light, the band mean, stays
        sharp. A galaxy's colour changes over about a PSF or more, so bands
        drawn a pixel apart (a red and a blue edge on opposite sides) are
        not real; ``residual = "bands"`` only.
    asymmetry : float or sequence of float
        ``gan.g_asymmetry``: G's own output (after ``blur``, before the
        template) is split into its parts symmetric and antisymmetric under
        a 180-degree rotation about the stamp centre, and the antisymmetric
        part is scaled by this weight (1: off; 0: G can add only
        point-symmetric light). A prior against the lopsided blobs a short
        run paints (statmorph asymmetry, docs/gan-experiments.md round 7) that still lets
        G make real asymmetry (neighbours, mergers) at a weight above 0.
        One weight per band (in the bands' order) sets each band's own: a
        blue band's star-forming knots are more lopsided than a red band's
        old stars (docs/gan-experiments.md round 58).
    asymmetry_radius : float
        ``gan.g_asymmetry_radius``: where ``asymmetry`` applies (0: the whole
        stamp). Otherwise the weight rises from ``asymmetry`` inside this
        radius (in units of the stamp's half side, from its centre) to 1
        (free) at ``asymmetry_radius + 0.25`` and beyond, along a cosine
        ramp: the central galaxy stays nearly point-symmetric, while
        neighbours in the field around it, which make the real stamps'
        tails of centroid offset and asymmetry, are not halved by their
        mirror images (docs/gan-experiments.md round 31).
    drawn_centroid : bool
        ``gan.g_drawn_centroid``: the noiseless stamp (after the template and
        any rotation, before the sky noise) is translated so that its light
        centroid sits at an offset drawn from ``z``
        (:class:`~galearn.gan.template.DrawnCentroid`), started at the real
        stamps' class means and within-class spread: where a galaxy sits in
        its cut-out no longer rides on the antisymmetric part of G's output,
        which ``asymmetry`` scales down.
    centroid_radii : str
        ``gan.g_centroid_radii``: ``"normal"`` (the drawn offset a Gaussian
        about the class mean) or ``"measured"`` (its distance from the class
        mean distributed as the real stamps' distances, heavy-tailed).
    centroid_move : str
        ``gan.g_centroid_move``: ``"translate"`` (the whole noiseless stamp
        moved to the drawn centroid) or ``"lopsided"`` (its core left in place
        and its outskirts shifted, so the centroid moves off the peak).
    drawn_ellipticity : bool
        ``gan.g_drawn_ellipticity``: the noiseless stamp (before any drawn
        centroid) is stretched along its own major axis, about its light
        centroid, so that its ellipticity is drawn from ``z``, and turned so
        that the axis lies at an angle drawn from ``gen``
        (:class:`~galearn.gan.template.DrawnEllipticity`), started at the
        real stamps' class means and within-class spread of ``atanh(e)``:
        how elongated a galaxy is no longer rides on G's convolutions, which
        paint too round galaxies (docs/gan-experiments.md round 39).
    ellipticity_draw : str
        ``gan.g_ellipticity_draw``: ``"normal"`` (the drawn ``atanh(e)`` a
        Gaussian about the class mean) or ``"measured"`` (distributed as the
        real class's stamps are, skewed toward round).
    ellipticity_trainable : bool
        ``gan.g_ellipticity_trainable``: learn the drawn ellipticity's class
        means and spread with G (default), or keep them at the real stamps'.
    ellipticity_passes : int
        ``gan.g_ellipticity_passes``: measure and stretch this many times; one
        pass falls short of the drawn ellipticity on G's elongated round-class
        galaxies (docs/gan-experiments.md rounds 48-49).
    ellipticity_fill : {"sky", "reflection"}
        ``gan.g_ellipticity_fill``: where the stretched, turned stamp reads
        beyond the cut-out, its ring median (default) or the stamp mirrored
        at its edge (no step between G's edge and the fill).
    skip_excitation : bool
        ``gan.g_skip_excitation``: FastGAN's skip-layer excitation
        (:class:`SkipExcitation`): the output of every block at resolution
        ``r >= 32`` is gated, channel by channel, by the block at ``r / 4``
        (8 -> 32, 16 -> 64 pixels for 64-pixel stamps).
    upsample : {"nearest", "bilinear"}
        ``gan.g_upsample``: how every block doubles its input before its
        convolution. ``"bilinear"`` interpolates (a tent low-pass filter), so
        G does not start from 2x2 pixel blocks that its convolutions must
        paint over; the real stamps are band-limited by the PSF (and by the
        resampling of ingested images), and on the 600 real dev images the
        generated stamps carried 0.4-0.6 dex more power at the highest
        spatial frequencies than the real ones, all of it in G's noiseless
        output (docs/gan-experiments.md round 11).
    envelope : bool
        Multiply G's own output by the sample's (drawn) template light above
        its ring median, summed over bands and divided by its peak
        (``gan.g_envelope``, needs ``template``): G modulates the source and
        paints nothing on the sky.
    """

    def __init__(self, n_classes: int, n_bands: int, stamp_size: int = 64, *, z_dim: int = 128, channels: int = 32,
                 sky_noise: bool | str = False, template: bool = False, out_scale: float = 1.0,
                 template_warp: bool = False, template_trainable: bool = True, residual: str = "bands", pin_sky: bool = False,
                 envelope: bool = False, sky_penalty: float = 0.0, sky_reference: str = "measured", blur: float = 0.0,
                 asymmetry: float | Sequence[float] = 1.0, asymmetry_radius: float = 0.0, skip_excitation: bool = False, sky_scatter: bool = False, sky_scatter_by_level: bool = False, sky_scatter_by_light: bool = False, sky_smooth_light: bool = False, sky_band_correlation: bool = False,
                 sky_noise_gain: bool = False, neighbours: bool = False, sky_floor: bool = False, random_rotation: bool = False, upsample: str = "nearest", template_blur: float = 0.0,
                 sky_groups: int = 0, colour_blur: float = 0.0, pin_sky_to: str = "measured", drawn_centroid: bool = False,
                 drawn_ellipticity: bool = False, ellipticity_draw: str = "normal",
                 ellipticity_trainable: bool = True, ellipticity_passes: int = 1, ellipticity_fill: str = "sky", centroid_radii: str = "normal",
                 centroid_move: str = "translate") -> None:
        super().__init__()
        self.n_classes, self.n_bands, self.stamp_size, self.z_dim = int(n_classes), int(n_bands), int(stamp_size), int(z_dim)
        widths = _widths(stamp_size, channels)
        self.fc = nn.Linear(z_dim, widths[0] * 16)
        self.bn0 = ConditionalBatchNorm2d(widths[0], n_classes)
        self.blocks = nn.ModuleList(_GBlock(a, b, n_classes, upsample) for a, b in zip(widths[:-1], widths[1:]))
        # Skip-layer excitation: block i (resolution 8 * 2**i) gated by the map two resolutions below
        # (index i - 1 in [4x4 map, block 0, block 1, ...]); only for outputs of 32 pixels and more.
        self.skip_excitation = nn.ModuleDict(
            {str(i): SkipExcitation(widths[i - 1], widths[i + 1])
             for i in range(len(self.blocks)) if skip_excitation and 8 * 2**i >= 32}) if skip_excitation else None
        if residual not in ("bands", "luminance"):
            raise BadValueError(f"gan.g_residual must be bands or luminance, got {residual!r}")
        if (residual == "luminance" or pin_sky or envelope) and not template:
            raise BadValueError("gan.g_residual = luminance, gan.g_pin_sky and gan.g_envelope need gan.g_template = true")
        self.residual, self.pin_sky, self.envelope = residual, bool(pin_sky), bool(envelope)
        self.to_img = nn.Conv2d(widths[-1], 1 if residual == "luminance" else n_bands, 3, padding=1,
                                padding_mode="reflect")
        self.blur = float(blur)
        if self.blur < 0:
            raise BadValueError(f"gan.g_blur must be >= 0 (pixels), got {blur!r}")
        self.colour_blur = float(colour_blur)
        if self.colour_blur < 0 or (self.colour_blur and residual != "bands"):
            raise BadValueError(f"gan.g_colour_blur must be >= 0 (pixels) and needs gan.g_residual = bands, got {colour_blur!r}")
        weights = asymmetry_weights(asymmetry, n_bands)
        # One weight for all bands stays a number (the arithmetic of the runs before per-band weights).
        self.asymmetry = weights[0] if len(set(weights)) == 1 else weights
        self.asymmetry_radius = float(asymmetry_radius)
        if self.asymmetry_radius < 0:
            raise BadValueError(f"gan.g_asymmetry_radius must be >= 0 (half sides of the stamp), got {asymmetry_radius!r}")
        if self.asymmetry_radius and self.asymmetry == 1.0:
            raise BadValueError("gan.g_asymmetry_radius needs gan.g_asymmetry < 1 (with 1 there is no prior to confine)")
        # The antisymmetric weight per band (and pixel, within a radius); None: the one number. Not saved (made from
        # the settings).
        if self.asymmetry_radius:
            weight_map = torch.cat([asymmetry_weight_map(stamp_size, w, self.asymmetry_radius) for w in weights], dim=1)
        elif isinstance(self.asymmetry, tuple):
            weight_map = torch.tensor(weights, dtype=torch.float32)[None, :, None, None]
        else:
            weight_map = None
        self.register_buffer("asymmetry_map", weight_map, persistent=False)
        if pin_sky_to not in ("measured", "stamp"):
            raise BadValueError(f"gan.g_pin_sky_to must be measured or stamp, got {pin_sky_to!r}")
        if pin_sky_to == "stamp" and not (pin_sky and sky_noise and sky_scatter):
            raise BadValueError("gan.g_pin_sky_to = stamp needs gan.g_pin_sky = true, a measured sky noise and "
                                "gan.sky_scatter = true")
        self.pin_sky_to = pin_sky_to
        if pin_sky:
            self.register_buffer("sky_level", torch.full((n_bands,), -1.0))
        if residual == "luminance":  # per-class band weights of G's one output map (loop.init_output_bias)
            self.register_buffer("colour", torch.ones(n_classes, n_bands))
        if out_scale != 1.0:
            with torch.no_grad():
                self.to_img.weight.mul_(float(out_scale))
        if sky_noise:  # the measured sky noise is added to G's noiseless stamps (gan/sky.py)
            from .sky import SkyNoise

            self.sky = SkyNoise(n_bands, stamp_size if sky_noise == "correlated" else None, scatter=sky_scatter,
                                groups=sky_groups, row_levels=pin_sky_to == "stamp", band_correlated=sky_band_correlation,
                                level_gain=sky_noise_gain, neighbours=neighbours, by_level=sky_scatter_by_level,
                                by_light=sky_scatter_by_light, smooth_light=sky_smooth_light)
        else:
            for name, on in (("gan.g_sky_floor", sky_floor), ("gan.g_neighbours", neighbours)):  # parts of the measured sky
                if on:
                    raise BadValueError(f"{name} needs a measured gan.sky_noise (auto, measured or measured-correlated)")
            self.out_noise = NoiseInjection(n_bands, per_channel=True, init=0.3)
        self.sky_noise = bool(sky_noise)
        self.random_rotation = bool(random_rotation)
        self.sky_floor = bool(sky_floor)
        self.sky_penalty = float(sky_penalty)
        if self.sky_penalty:
            if not sky_noise:
                raise BadValueError("gan.g_sky_penalty needs gan.sky_noise = measured or measured-correlated")
            self.register_buffer("sky_ring_level", torch.zeros(n_bands))
        self.last_sky_penalty: torch.Tensor | None = None  # of the last training-mode forward (gan.g_sky_penalty)
        if sky_reference not in ("measured", "stamp"):
            raise BadValueError(f"gan.g_sky_reference must be measured or stamp, got {sky_reference!r}")
        self.sky_reference = sky_reference
        # Set by GanLoss for gan.g_pixel_match: each training-mode forward then stores its
        # output before the final clip to [-1, 1] (with its graph) in ``last_unclipped``.
        self.keep_unclipped = False
        self.last_unclipped: torch.Tensor | None = None
        # Set by GanLoss for gan.g_sky_level_match: each training-mode forward then stores its noiseless stamps'
        # sky levels (SkyNoise.ring_level, (N, C), linear units, with their graph) in ``last_ring_level``.
        self.keep_ring_level = False
        self.last_ring_level: torch.Tensor | None = None
        if template:  # per-class image added to the output; set from the real stamps (loop.init_output_bias)
            start = torch.zeros(n_classes, n_bands, stamp_size, stamp_size)
            if template_trainable:
                self.template = nn.Parameter(start)
            else:  # a buffer: in the state dict (same key), never in the optimiser
                self.register_buffer("template", start)
        else:
            self.template = None
        self.template_blur = float(template_blur)
        if self.template_blur:
            if self.template_blur < 0 or not (template and template_trainable):
                raise BadValueError(f"gan.g_template_blur must be a sigma >= 0 (pixels) and needs gan.g_template = true "
                                    f"and gan.g_template_trainable = true, got {template_blur!r}")
            self.register_buffer("template_start", torch.zeros(n_classes, n_bands, stamp_size, stamp_size))
        if template_warp:
            if not template:
                raise BadValueError("gan.g_template_warp needs gan.g_template = true")
            from .template import TemplateWarp

            self.warp = TemplateWarp(n_classes, z_dim)
        else:
            self.warp = None
        if drawn_centroid:
            from .template import DrawnCentroid

            self.centroid = DrawnCentroid(n_classes, z_dim, radii=centroid_radii, move=centroid_move)
        else:
            self.centroid = None
        if drawn_ellipticity:
            from .template import DrawnEllipticity

            self.ellipticity = DrawnEllipticity(n_classes, z_dim, draw=ellipticity_draw, trainable=ellipticity_trainable,
                                                passes=ellipticity_passes, fill=ellipticity_fill)
        else:
            self.ellipticity = None
        self._w0 = widths[0]

    def class_templates(self) -> torch.Tensor:
        """The class templates ``(n_classes, C, H, W)`` G adds (network units): ``template``, its learnt change
        smoothed with ``template_blur``."""
        if not self.template_blur:
            return self.template
        return self.template_start + gaussian_blur(self.template - self.template_start, self.template_blur)

    def forward(self, z: torch.Tensor, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        h = self.fc(z).view(z.shape[0], self._w0, 4, 4)
        h = F.relu(self.bn0(h, y))
        maps = [h]  # the 4x4 map and every block's output, for the skip-layer excitation
        for i, block in enumerate(self.blocks):
            h = block(h, y, gen)
            if self.skip_excitation is not None and str(i) in self.skip_excitation:
                h = self.skip_excitation[str(i)](h, maps[i - 1])
            maps.append(h)
        # Linear output, clipped to [-1, 1] like the data themselves: a stretched stamp
        # is clip(asinh(flux / s) / asinh(max / s), 0, 1), so about half of all (sky)
        # pixels are exactly 0, i.e. -1 here. A tanh would have to be driven deep into
        # saturation to make them, where its gradient vanishes (docs/gan.md).
        out = self.to_img(h)
        row = None  # each stamp's scatter row, when its sky level is drawn with it (gan.g_pin_sky_to = stamp)
        if self.blur:
            out = gaussian_blur(out, self.blur)
        if self.colour_blur:  # the light (band mean) sharp, its colour (band - mean) smooth
            light = out.mean(dim=1, keepdim=True)
            out = light + gaussian_blur(out - light, self.colour_blur)
        if self.asymmetry != 1.0:  # symmetric part + weight x antisymmetric part, about the stamp centre
            rotated = torch.flip(out, dims=(2, 3))
            weight = self.asymmetry if self.asymmetry_map is None else self.asymmetry_map
            out = 0.5 * (1.0 + weight) * out + 0.5 * (1.0 - weight) * rotated
        if self.residual == "luminance":
            out = out * self.colour[y][:, :, None, None]
        if self.template is not None:
            templates = self.class_templates()
            base = self.warp(templates, z, y) if self.warp is not None else templates[y]
            if self.envelope:  # the source's light above its sky, 0..1: G paints only where the template has light
                light = (base - ring_median(base)).clamp(min=0.0).sum(dim=1, keepdim=True).detach()
                out = out * (light / light.amax(dim=(2, 3), keepdim=True).clamp(min=1e-6))
            out = out + base
            if self.pin_sky:
                if self.pin_sky_to == "stamp":  # the real stamp this one takes its sky from: level, then depth
                    row = self.sky.draw_rows(out.shape[0], gen, out.device)
                    level = self.sky.row_level[row][:, :, None, None]
                else:
                    level = self.sky_level.view(1, -1, 1, 1)
                out = out - ring_median(out) + level.to(out.dtype)
        if self.random_rotation:  # galaxies' orientations on the sky are isotropic: the noiseless stamp at a seeded angle
            out = rotate_stamps(out, gen)
        if self.ellipticity is not None:  # stretched along its major axis to the ellipticity drawn from z, axis at a random angle
            out = self.ellipticity(out, z, y, gen)
        if self.centroid is not None:  # the noiseless stamp moved so its light sits at the offset drawn from z
            out = self.centroid(out, z, y)
        if self.sky_floor:  # light adds to the sky: no noiseless pixel below the stamp's own sky level
            out = torch.maximum(out, ring_median(out))
        if self.sky_noise:
            if self.sky_penalty and self.training:  # read by GanLoss.g_loss, with its graph
                level = self.sky.ring_median(out).detach() if self.sky_reference == "stamp" else self.sky_ring_level
                self.last_sky_penalty = self.sky.ring_deviation(out, level)
            if self.keep_ring_level and self.training:
                self.last_ring_level = self.sky.ring_level(out)
            out = self.sky(out, gen, clip=False, row=row)
        else:
            out = self.out_noise(out, gen)
        if self.keep_unclipped and self.training:
            self.last_unclipped = out
        return out.clamp(-1.0, 1.0)


def rotate_stamps(x: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
    """Rotate each stamp ``(N, C, H, W)`` about its centre by a uniform random angle (bilinear, edges extended).

    The angles come from ``gen`` (seeded) when given; outside the stamp the
    nearest edge pixel is used (the noiseless sky level).
    """
    u = seeded_draw(torch.rand, x.shape[0], gen=gen, device=x.device)
    angle = (2.0 * torch.pi * u).to(torch.float32)
    cos, sin = torch.cos(angle), torch.sin(angle)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                                           align_corners=False).to(x.dtype)


D_HEADS = ("sum", "dense")


def minibatch_stddev(h: torch.Tensor, group: int = 4) -> torch.Tensor:
    """Append the minibatch standard deviation as one extra feature map (Karras et al. 2018).

    The batch is split into groups of ``group`` stamps (the largest of 4, 2, 1
    that divides the batch); per group, the standard deviation over its members
    of every feature and pixel, averaged over features and pixels, becomes a
    constant map appended to each member. A generator that collapses to a few
    modes gives batches with a small value, which D can see.
    """
    n, c, height, width = h.shape
    g = next(k for k in (min(group, n), 2, 1) if k >= 1 and n % k == 0)
    y = h.reshape(g, n // g, c, height, width)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()  # (n/g, c, H, W)
    y = y.mean(dim=(1, 2, 3)).reshape(-1, 1, 1, 1).repeat(g, 1, height, width)  # (n, 1, H, W)
    return torch.cat([h, y], dim=1)


class Discriminator(nn.Module):
    """Projection discriminator with spectral normalisation: ``(x, y) -> (N,)`` logits.

    Parameters
    ----------
    n_classes, n_bands, stamp_size, channels
        As for :class:`Generator` (``channels`` is the width of the first,
        highest-resolution block).
    head : {"sum", "dense"}
        ``"sum"``: global sum pooling of the 4x4 features (SNGAN / BigGAN); D
        then knows a source's position only through the convolutions' zero
        padding. ``"dense"``: the StyleGAN epilogue -- minibatch standard
        deviation (:func:`minibatch_stddev`), a 3x3 conv, and a dense layer on the
        FLATTENED 4x4 map, so D can tell a centred source from an off-centre
        one and a varied batch from a collapsed one (docs/gan.md).
    radius_channel : bool
        Append a fixed map of the distance from the stamp centre to the input
        (``gan.d_radius``): a centring prior that keeps the global sum pooling.
    """

    def __init__(self, n_classes: int, n_bands: int, stamp_size: int = 64, *, channels: int = 32,
                 head: str = "sum", radius_channel: bool = False) -> None:
        super().__init__()
        if head not in D_HEADS:
            raise BadValueError(f"gan.d_head must be one of {', '.join(D_HEADS)}, got {head!r}")
        self.head = head
        self.radius_channel = bool(radius_channel)
        if self.radius_channel:
            # Distance from the stamp centre in units of the half side, minus its mean: a fixed
            # extra input map (CoordConv-like, rotation-symmetric like the rot90 / flip
            # augmentation), so D can tell where the light is (real stamps are centred).
            yy, xx = torch.meshgrid(torch.arange(stamp_size), torch.arange(stamp_size), indexing="ij")
            r = torch.hypot(yy - (stamp_size - 1) / 2, xx - (stamp_size - 1) / 2) / (stamp_size / 2)
            self.register_buffer("radius", (r - r.mean())[None, None].float(), persistent=False)
        widths = _widths(stamp_size, channels)[::-1]  # stamp_size/2 ... 4
        c_in = n_bands + int(self.radius_channel)
        layers: list[nn.Module] = [spectral_norm(nn.Conv2d(c_in, widths[0], 3, padding=1)), nn.LeakyReLU(0.2)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [spectral_norm(nn.Conv2d(a, b, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        w = widths[-1]
        if head == "dense":
            self.epilogue_conv = spectral_norm(nn.Conv2d(w + 1, w, 3, padding=1))
            self.epilogue_dense = spectral_norm(nn.Linear(w * 16, w))
        self.linear = spectral_norm(nn.Linear(w, 1))
        self.embed = spectral_norm(nn.Embedding(n_classes, w))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if self.radius_channel:
            x = torch.cat([x, self.radius.to(x.dtype).expand(x.shape[0], 1, -1, -1)], dim=1)
        h = self.features(x)
        if self.head == "dense":
            h = F.leaky_relu(self.epilogue_conv(minibatch_stddev(h)), 0.2)
            h = F.leaky_relu(self.epilogue_dense(h.flatten(1)), 0.2)
        else:
            h = h.sum(dim=(2, 3))  # global sum pooling
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(dim=1)
