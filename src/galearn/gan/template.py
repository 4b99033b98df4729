"""A drawn class template for the generator (``gan.g_template_warp``).

With ``gan.g_template`` the generator adds a learnt per-class image, started
at the class's pixel-wise median real stamp, to its own output. Every sample
of a class then starts from the SAME source: at 100-200 steps the
generated library has the median galaxy's size, brightness and roundness,
and its variety comes only from what G's convolutions learnt (recall ~0.1 on
some mock fields, docs/gan.md). With the template drawn, each sample's
template is a copy of the class median scaled in brightness, scaled in size
and sheared (axis ratio and orientation), with the four numbers a linear
function of the latent plus a per-class offset:

* :func:`measure_shapes` -- windowed second moments of the real training
  stamps and of the class templates: per stamp the log ratio of its windowed
  size and surface brightness (flux / size^2) to its class template's, and its
  two distortion components.
* :class:`TemplateWarp` -- the module: ``v = W z + b[y]`` (``W`` drawn with
  the measured within-class spread, ``b`` the measured class means, both
  learnt from there), then ``b_sky + f * (warp(template) - b_sky)`` with
  ``f = exp(v0)`` and ``warp`` an affine resampling (``torch.nn.functional.grid_sample``)
  of area scale ``exp(2 v1)`` and distortion ``(v2, v3)``, centre fixed.

So from the first step the library spreads over the real stamps' flux, size
and shape distribution (as the windowed moments see it); G's own output
adds the rest (structure, neighbours, colour gradients).

Two later modules draw one number each of G's own output the same way,
measured as the morphometry vector measures it (:mod:`galearn.morphometry`)
and started at the real stamps' class means and within-class spread:
:class:`DrawnCentroid` where the light sits (``gan.g_drawn_centroid``) and
:class:`DrawnEllipticity` how elongated it is (``gan.g_drawn_ellipticity``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch.nn import functional as F

__all__ = ["measure_shapes", "TemplateWarp", "N_WARP", "ring_median", "template_colours", "measure_centroids", "DrawnCentroid", "CENTROID_RADII", "CENTROID_MOVES",
           "torch_light_centroids", "torch_light_moments", "measure_ellipticities", "DrawnEllipticity",
           "ELLIPTICITY_DRAWS"]

N_WARP = 4  # log surface-brightness ratio, log size ratio, distortion e1, e2
_MAX_E = 0.9


def _moments(lum: np.ndarray, window_sigma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Windowed flux, size and distortion of luminance images ``(N, H, W)`` (sky-subtracted, >= 0)."""
    n, h, w = lum.shape
    yy, xx = np.mgrid[:h, :w].astype("f8")
    yy -= (h - 1) / 2
    xx -= (w - 1) / 2
    win = np.exp(-(xx**2 + yy**2) / (2 * window_sigma**2))
    wl = lum * win[None]
    flux = wl.sum(axis=(1, 2))
    safe = np.maximum(flux, 1e-12)
    qxx = (wl * xx**2).sum(axis=(1, 2)) / safe
    qyy = (wl * yy**2).sum(axis=(1, 2)) / safe
    qxy = (wl * xx * yy).sum(axis=(1, 2)) / safe
    tr = np.maximum(qxx + qyy, 1e-12)
    det = np.maximum(qxx * qyy - qxy**2, 1e-12)
    return flux, det**0.25, (qxx - qyy) / tr, 2 * qxy / tr


def _luminance(stamps: np.ndarray) -> np.ndarray:
    """Band sum minus its outer-ring median (1/8 of the side), clipped at 0: ``(N, C, H, W) -> (N, H, W)``."""
    lum = np.asarray(stamps, dtype="f8").sum(axis=1)
    size = lum.shape[-1]
    b = max(1, size // 8)
    ring = np.ones(lum.shape[-2:], dtype=bool)
    ring[b:-b, b:-b] = False
    sky = np.median(lum[:, ring], axis=1)
    return np.clip(lum - sky[:, None, None], 0.0, None)


def measure_shapes(stamps: np.ndarray, y: np.ndarray, templates: np.ndarray) -> dict:
    """Measured spread of the real stamps around their class templates.

    Parameters
    ----------
    stamps : array (N, C, H, W)
        Real stretched training stamps, ``[0, 1]``.
    y : array (N,)
        Their class indices.
    templates : array (K, C, H, W)
        The class templates, stretched units ``[0, 1]``.

    Returns
    -------
    dict
        ``mean`` (K x 4: per class the median log surface-brightness ratio
        (log flux ratio minus twice the log size ratio), log size ratio,
        and 0, 0 for the distortion -- real stamps have no preferred
        orientation), ``std`` (4: within-class standard deviations), the
        moments' ``window_sigma`` (pixels, 1/8 of the side). Windowed flux
        and size in stretched units (a Gaussian window centred on the stamp,
        so neighbours count little); the size is ``det(Q) ** 0.25``.
    """
    stamps = np.asarray(stamps)
    y = np.asarray(y)
    size = stamps.shape[-1]
    sigma = size / 8.0
    f, s, e1, e2 = _moments(_luminance(stamps), sigma)
    ft, st, _, _ = _moments(_luminance(np.asarray(templates)), sigma)
    ok = (f > 0) & np.isfinite(s)
    ls = np.log(s / st[y])
    # The warp scales the template's surface brightness; its flux grows with the area too.
    lf = np.log(np.maximum(f, 1e-12) / np.maximum(ft[y], 1e-12)) - 2.0 * ls
    params = np.stack([lf, ls, np.clip(e1, -_MAX_E, _MAX_E), np.clip(e2, -_MAX_E, _MAX_E)], axis=1)
    mean = np.zeros((len(templates), N_WARP))
    resid = []
    for k in range(len(templates)):
        pick = ok & (y == k)
        if pick.sum() >= 2:
            mean[k, :2] = np.median(params[pick, :2], axis=0)
            resid.append(params[pick] - mean[k])
    std = np.concatenate(resid).std(axis=0) if resid else np.zeros(N_WARP)
    return {"mean": mean.tolist(), "std": std.tolist(), "window_sigma": float(sigma)}


def ring_median(x: torch.Tensor) -> torch.Tensor:
    """Median of the outer ring (``H // 8`` pixels wide) of ``x (N, C, H, W)`` per image and band: ``(N, C, 1, 1)``."""
    k = max(1, x.shape[-1] // 8)
    ring = torch.cat([x[..., :k, :].flatten(2), x[..., -k:, :].flatten(2),
                      x[..., k:-k, :k].flatten(2), x[..., k:-k, -k:].flatten(2)], dim=2)
    return ring.median(dim=2).values[:, :, None, None]


def template_colours(templates: np.ndarray) -> np.ndarray:
    """Per-class colour of the class templates ``(K, C, H, W)`` (stretched ``[0, 1]``): ``(K, C)``, mean 1 over bands.

    The colour of class ``k`` in band ``b`` is the template's light above its
    outer-ring median, summed over the pixels (stretched units); a class
    without light above its sky gets equal weights.
    """
    t = torch.as_tensor(np.asarray(templates, dtype="f4"))
    light = (t - ring_median(t)).clamp(min=0.0).sum(dim=(2, 3)).double().numpy()  # (K, C)
    mean = light.mean(axis=1, keepdims=True)
    return np.where(mean > 0, light / np.where(mean > 0, mean, 1.0), 1.0).astype("f4")


class TemplateWarp(torch.nn.Module):
    """Per-sample brightness, size and shape of the class template: ``(template (K, C, H, W), z, y) -> (N, C, H, W)``.

    Parameters: ``weight`` ``(4, z_dim)`` (drawn at the measured spread by
    :meth:`set`) and ``bias`` ``(K, 4)`` (the class means). Works in network
    units ``[-1, 1]``; the sky level subtracted before the brightness scaling
    is the template's outer-ring median per class and band.
    """

    def __init__(self, n_classes: int, z_dim: int) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(N_WARP, z_dim))
        self.bias = torch.nn.Parameter(torch.zeros(n_classes, N_WARP))

    @torch.no_grad()
    def set(self, shapes: dict, seed: int) -> None:
        """Class means from ``shapes["mean"]``; weights ``N(0, std^2 / z_dim)`` (seeded), so ``W z`` has the measured spread."""
        gen = torch.Generator().manual_seed(int(seed))
        std = torch.as_tensor(shapes["std"], dtype=torch.float32)
        z_dim = self.weight.shape[1]
        self.weight.copy_(torch.randn(self.weight.shape, generator=gen) * std[:, None] / z_dim**0.5)
        self.bias.copy_(torch.as_tensor(shapes["mean"], dtype=torch.float32))

    def forward(self, template: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        v = z @ self.weight.t() + self.bias[y]  # (N, 4)
        flux = torch.exp(v[:, 0].clamp(-3.0, 3.0))
        scale = torch.exp(v[:, 1].clamp(-1.5, 1.5))
        e = v[:, 2:4]
        norm = e.norm(dim=1, keepdim=True).clamp(min=1e-6)
        e = e * (_MAX_E * torch.tanh(norm / _MAX_E) / norm)  # |e| < 0.9
        # Distortion e -> shear g (e = 2 g / (1 + |g|^2)); matrix M = [[1+g1, g2], [g2, 1-g1]] / sqrt(1-|g|^2).
        en = e.norm(dim=1, keepdim=True)
        g = e / (1.0 + torch.sqrt((1.0 - en.square()).clamp(min=1e-6)))
        g1, g2 = g[:, 0], g[:, 1]
        det = (1.0 - g1.square() - g2.square()).clamp(min=1e-6)
        # affine_grid maps output coordinates to input ones: the inverse of A = scale * M / sqrt(det).
        inv = torch.stack([torch.stack([1.0 - g1, -g2], dim=1), torch.stack([-g2, 1.0 + g1], dim=1)], dim=1)
        inv = inv / (scale * det.sqrt())[:, None, None]
        theta = torch.cat([inv, torch.zeros(len(z), 2, 1, dtype=inv.dtype, device=inv.device)], dim=2)
        src = template[y]
        grid = F.affine_grid(theta.to(src.dtype), list(src.shape), align_corners=False)
        warped = F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False)
        sky = ring_median(src).detach()
        return sky + flux.to(src.dtype)[:, None, None, None] * (warped - sky)


def _class_mean_and_spread(values: np.ndarray, y: np.ndarray, n_classes: int) -> dict:
    """Per class the mean of ``values`` (``(N,)`` or ``(N, D)``; a class without rows gets the pooled mean) and the pooled
    standard deviation about each row's class mean, as JSON-ready lists (floats for ``(N,)`` values)."""
    y = np.asarray(y)
    pooled = values.mean(axis=0)
    mean = np.stack([values[y == k].mean(axis=0) if np.any(y == k) else pooled for k in range(n_classes)])
    return {"mean": mean.tolist(), "std": (values - mean[y]).std(axis=0).tolist()}


def _seeded_directions(shape: tuple[int, ...], length: torch.Tensor | float, seed: int) -> torch.Tensor:
    """Rows of a seeded Gaussian draw of ``shape`` scaled to ``length`` (the last axis a direction in latent space), so
    that for ``z ~ N(0, I)`` each row's ``w . z`` has exactly that standard deviation."""
    w = torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))
    return w * (torch.as_tensor(length, dtype=torch.float32) / w.norm(dim=-1)).unsqueeze(-1)


def measure_centroids(stamps: np.ndarray, y: np.ndarray, n_classes: int, *, radii: bool = False) -> dict:
    """Where the real stamps' light sits (``gan.g_drawn_centroid``): per class the mean centroid, and the within-class spread.

    ``stamps``: stretched training stamps ``(N, C, H, W)`` in ``[0, 1]``;
    ``y``: their class indices. Centroids as the morphometry vector measures
    them (:func:`galearn.morphometry.light_centroids`, pixels from the stamp
    centre, x along columns). Returns ``mean`` (``n_classes x 2``; a class
    without stamps gets the pooled mean) and ``std`` (2: the pooled standard
    deviation about each class's mean), in pixels. With ``radii``
    (``gan.g_centroid_radii = "measured"``) also ``radius_quantiles``: the
    distribution of each stamp's distance from its class mean in units of
    ``std`` (per axis), at the probabilities ``linspace(0, 1, N_RADIUS_QUANTILES)``.
    """
    from ..morphometry import light_centroids

    centroids = light_centroids(np.asarray(stamps))
    stats = _class_mean_and_spread(centroids, y, n_classes)
    if radii:
        scaled = (centroids - np.asarray(stats["mean"])[np.asarray(y)]) / np.maximum(np.asarray(stats["std"]), 1e-6)
        stats["radius_quantiles"] = np.quantile(np.hypot(*scaled.T), np.linspace(0.0, 1.0, N_RADIUS_QUANTILES)).tolist()
    return stats


N_RADIUS_QUANTILES = 65  # quantiles of the measured centroid radii (gan.g_centroid_radii = "measured")
CENTROID_RADII = ("normal", "measured")  # how the drawn centroid's distance from the class mean is distributed
CENTROID_MOVES = ("translate", "lopsided")  # how a stamp is moved to its drawn centroid (gan.g_centroid_move)
LOPSIDED_CORE = 1.0 / 16.0  # the core a lopsided move leaves in place: the Gaussian radius of its taper, in stamp sides
_MIN_LOPSIDED_LEVER = 0.2  # a lopsided move shifts the centroid by at least this fraction of its outer displacement


def _light_weights(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The morphometry moments' pixel weights ``(N, H, W)`` of stamps ``x`` in network units, and the pixel coordinates
    ``(H,)`` from the stamp centre: the stretched band sum above the stamp's median, inside ``H / 4`` pixels."""
    size = x.shape[-1]
    total = ((x.float() + 1.0) * 0.5).sum(dim=1)  # stretched band sum
    coord = torch.arange(size, dtype=total.dtype, device=x.device) - (size - 1) / 2.0
    inner = (coord[:, None].square() + coord[None, :].square()).sqrt() < size / 4.0
    return (total - total.flatten(1).median(dim=1).values[:, None, None]).clamp(min=0.0) * inner, coord


def _weighted_centroid(wgt: torch.Tensor, coord: torch.Tensor) -> torch.Tensor:
    """The centroid ``(N, 2)`` (x, y; pixels from the stamp centre) of :func:`_light_weights`' ``wgt`` about ``coord``."""
    flux = wgt.sum(dim=(1, 2)).clamp(min=1e-6)
    return torch.stack([(wgt * coord[None, None, :]).sum(dim=(1, 2)) / flux,
                        (wgt * coord[None, :, None]).sum(dim=(1, 2)) / flux], dim=1)


def torch_light_moments(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The morphometry moments of stamps ``x (N, C, H, W)`` in network units ``[-1, 1]``: ``mx, my, qxx, qyy, qxy``.

    As :func:`galearn.morphometry.shape_moments` and :func:`~galearn.morphometry.light_centroids`
    measure them: the stretched band sum weighted by its flux above the
    stamp's median, inside ``H / 4`` pixels of the centre; centroid in pixels
    from the stamp centre (x along columns), second moments in pixels^2.
    """
    wgt, coord = _light_weights(x)
    flux = wgt.sum(dim=(1, 2)).clamp(min=1e-6)
    mx, my = _weighted_centroid(wgt, coord).unbind(dim=1)
    dx, dy = coord[None, None, :] - mx[:, None, None], coord[None, :, None] - my[:, None, None]
    return (mx, my, (wgt * dx * dx).sum(dim=(1, 2)) / flux, (wgt * dy * dy).sum(dim=(1, 2)) / flux,
            (wgt * dx * dy).sum(dim=(1, 2)) / flux)


def torch_light_centroids(x: torch.Tensor) -> torch.Tensor:
    """:func:`galearn.morphometry.light_centroids` of stamps ``x (N, C, H, W)`` in network units ``[-1, 1]``: ``(N, 2)`` pixels."""
    return _weighted_centroid(*_light_weights(x))


class DrawnCentroid(torch.nn.Module):
    """Each stamp moved so that its light centroid sits at ``W z + b[y]`` pixels from the stamp centre: ``(x, z, y) -> x``.

    ``b`` ``(K, 2)`` starts at the real classes' mean centroids and ``W``
    ``(2, z_dim)`` at their within-class spread (:meth:`set`); both are learnt
    with G. The stamp's own centroid (:func:`torch_light_centroids`) is measured
    without gradient and the whole stamp is translated by the difference
    (bilinear, edge pixels extended), so G's own output keeps its shape and
    the drawn offset decides where it sits.

    ``radii = "measured"`` (``gan.g_centroid_radii``) keeps the draw's
    direction but gives its distance from the class mean the real stamps'
    distribution instead of a Gaussian's: ``d = W z`` has the Mahalanobis
    radius ``r`` (about its covariance ``W W^T``) of a 2-d standard normal, whose probability
    ``1 - exp(-r^2 / 2)`` is read through the measured radii's quantiles
    (buffer ``radius_quantiles``, from :func:`measure_centroids`) and ``d`` is
    scaled by ``r_measured / r``. Real offsets are heavy-tailed (most galaxies
    nearer the centre than a Gaussian of their spread puts them, a few far
    out: neighbours and mergers move the light), which a Gaussian draw
    cannot make (docs/gan-experiments.md round 40).

    ``move = "lopsided"`` (``gan.g_centroid_move``) moves the light round the
    core instead of the whole stamp: output pixel ``p`` reads input
    ``p - s (1 - exp(-r^2 / 2 r0^2))``, ``r`` its distance from the stamp centre,
    ``r0 = LOPSIDED_CORE x H``. The core stays where G put it (a catalogue's
    stamp is centred on the galaxy's peak) and the outskirts shift by ``s``,
    an m = 1 lopsided distortion; ``s`` is the centroid's needed move over the
    taper's light-weighted mean (at least ``_MIN_LOPSIDED_LEVER``), so the
    centroid lands near the draw. Real stamps' peaks sit at the centre and
    their centroids off it, where a translation moves the peak too; on the
    dev images this gave the real peaks and offsets but more asymmetry about
    the centre, not less (docs/gan-experiments.md round 42).
    """

    def __init__(self, n_classes: int, z_dim: int, radii: str = "normal", move: str = "translate") -> None:
        super().__init__()
        if radii not in CENTROID_RADII:
            raise ValueError(f"radii must be one of {', '.join(CENTROID_RADII)}, got {radii!r}")
        if move not in CENTROID_MOVES:
            raise ValueError(f"move must be one of {', '.join(CENTROID_MOVES)}, got {move!r}")
        self.move = move
        self.weight = torch.nn.Parameter(torch.zeros(2, z_dim))
        self.bias = torch.nn.Parameter(torch.zeros(n_classes, 2))
        self.radii = radii
        if radii == "measured":
            self.register_buffer("radius_quantiles", torch.zeros(N_RADIUS_QUANTILES))

    @torch.no_grad()
    def set(self, centroids: dict, seed: int) -> None:
        """Class means from ``centroids["mean"]``; each row of ``W`` a seeded random direction of length ``std``, so
        ``W z`` (``z ~ N(0, I)``) has exactly the measured spread; the measured radii's quantiles where drawn from them."""
        self.weight.copy_(_seeded_directions(tuple(self.weight.shape), centroids["std"], seed))
        self.bias.copy_(torch.as_tensor(centroids["mean"], dtype=torch.float32))
        if self.radii == "measured":
            self.radius_quantiles.copy_(torch.as_tensor(centroids["radius_quantiles"], dtype=torch.float32))

    def offsets(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The drawn offsets ``(N, 2)`` in pixels from the stamp centre."""
        drawn = z.to(self.weight.dtype) @ self.weight.t()
        if self.radii == "measured":
            # Mahalanobis radius about W W^T, the covariance of W z for z ~ N(0, I): written out for 2 x 2 in float32
            # (no matmul, which autocast would run in bf16)
            w, d = self.weight.detach().float(), drawn.detach().float()
            sxx, sxy, syy = (w[0] * w[0]).sum(), (w[0] * w[1]).sum(), (w[1] * w[1]).sum()
            radius = ((syy * d[:, 0].square() - 2.0 * sxy * d[:, 0] * d[:, 1] + sxx * d[:, 1].square())
                      / (sxx * syy - sxy.square()).clamp(min=1e-12)).clamp(min=1e-12).sqrt()
            prob = -torch.expm1(-0.5 * radius.square())  # the 2-d standard normal's radial CDF
            grid = torch.linspace(0.0, 1.0, len(self.radius_quantiles), dtype=prob.dtype, device=prob.device)
            drawn = drawn * (_interp(prob, grid, self.radius_quantiles.to(prob.dtype)) / radius)[:, None]
        return drawn + self.bias[y]

    def forward(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        target = self.offsets(z, y)  # (N, 2) pixels
        wgt, coord = _light_weights(x.detach())
        needed = target - _weighted_centroid(wgt, coord)
        eye = torch.eye(2, dtype=needed.dtype, device=x.device).expand(len(x), 2, 2)
        if self.move == "translate":
            shift = needed.clamp(-size / 8.0, size / 8.0) * (2.0 / size)
            theta = torch.cat([eye, -shift[:, :, None]], dim=2)  # output pixel p reads input p - shift
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        else:  # output pixel p reads input p - shift x taper(p): the core stays, the outskirts move
            r2 = coord[:, None].square() + coord[None, :].square()
            taper = -torch.expm1(-r2 / (2.0 * (LOPSIDED_CORE * size) ** 2))  # (H, W), 0 at the centre, 1 far out
            lever = (wgt * taper).sum(dim=(1, 2)) / wgt.sum(dim=(1, 2)).clamp(min=1e-6)
            shift = (needed / lever.clamp(min=_MIN_LOPSIDED_LEVER)[:, None]).clamp(-size / 8.0, size / 8.0) * (2.0 / size)
            base = F.affine_grid(torch.cat([eye, torch.zeros_like(eye[:, :, :1])], dim=2), list(x.shape), align_corners=False)
            grid = base - shift[:, None, None, :] * taper.to(shift.dtype)[None, :, :, None]
        return F.grid_sample(x.float(), grid.float(), mode="bilinear", padding_mode="border", align_corners=False).to(x.dtype)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """``numpy.interp`` for increasing ``xp`` (values outside take the end values); ``fp`` one row of values for all
    ``x`` ``(Q,)``, or a row per ``x`` ``(N, Q)``."""
    i = torch.searchsorted(xp, x.clamp(float(xp[0]), float(xp[-1]))).clamp(1, len(xp) - 1)
    lo, hi = xp[i - 1], xp[i]
    t = ((x - lo) / (hi - lo).clamp(min=1e-12)).clamp(0.0, 1.0)
    below, above = (fp[i - 1], fp[i]) if fp.dim() == 1 else (fp.gather(1, (i - 1)[:, None])[:, 0], fp.gather(1, i[:, None])[:, 0])
    return below + t * (above - below)


_MAX_SHAPE_E = 0.95  # ellipticities are clipped here before atanh (a line has 1)
_MAX_LOG_STRETCH = 0.75  # |ln s| of one stretch at most: axis ratio changed by at most e^1.5 ~ 4.5


ELLIPTICITY_DRAWS = ("normal", "measured")  # how the drawn atanh(e) lies about its class mean (gan.g_ellipticity_draw)
ELLIPTICITY_FILLS = ("sky", "reflection")  # what a stretched stamp shows where it reads beyond the cut-out (gan.g_ellipticity_fill)
MIN_CLASS_QUANTILE_STAMPS = 16  # a class with fewer real stamps draws its ellipticities from every stamp's deviations


def measure_ellipticities(stamps: np.ndarray, y: np.ndarray, n_classes: int, *, quantiles: bool = False) -> dict:
    """How elongated the real stamps are (``gan.g_drawn_ellipticity``): per class the mean, and the within-class spread, of ``atanh(e)``.

    ``e`` is the morphometry vector's ellipticity
    (:func:`galearn.morphometry.shape_moments`, 0 round .. 1 a line, clipped
    at 0.95); ``atanh(e) = ln(a / b)`` for the moments' axis ratio ``a / b``
    (axes as standard deviations), so one stretch adds to it. Returns
    ``mean`` (``n_classes``; a class without stamps gets the pooled mean) and
    ``std`` (the pooled standard deviation about each class's mean). With
    ``quantiles`` (``gan.g_ellipticity_draw = "measured"``) also
    ``deviation_quantiles`` ``(n_classes, N_RADIUS_QUANTILES)``: per class, its
    stamps' ``atanh(e)`` less the class mean, in units of ``std``, at the
    probabilities ``linspace(0, 1, N_RADIUS_QUANTILES)`` (a class of fewer
    than ``MIN_CLASS_QUANTILE_STAMPS`` stamps gets every stamp's). The classes'
    shapes and spreads differ (dev images: elliptical 0.14, spiral 0.27).
    """
    from ..morphometry import shape_moments

    values = np.arctanh(np.clip(shape_moments(np.asarray(stamps))[0], 0.0, _MAX_SHAPE_E))
    stats = _class_mean_and_spread(values, y, n_classes)
    if quantiles:
        y = np.asarray(y)
        scaled = (values - np.asarray(stats["mean"])[y]) / max(float(stats["std"]), 1e-6)
        probs = np.linspace(0.0, 1.0, N_RADIUS_QUANTILES)
        pooled = np.quantile(scaled, probs)
        stats["deviation_quantiles"] = np.stack([np.quantile(scaled[y == k], probs)
                                                 if np.sum(y == k) >= MIN_CLASS_QUANTILE_STAMPS else pooled
                                                 for k in range(n_classes)]).tolist()
    return stats


class DrawnEllipticity(torch.nn.Module):
    """Each stamp stretched along its own major axis to the ellipticity ``tanh(|w . z + b[y]|)``, the axis then turned to a
    uniform random angle: ``(x, z, y, gen) -> x``.

    The stamp's moments (:func:`torch_light_moments`) are measured without
    gradient; with ``u = atanh(e)`` measured and ``v = w . z + b[y]`` drawn,
    the stamp is stretched by ``s = exp((v - u) / 2)`` along its major axis
    and ``1 / s`` across it, about its light centroid (area and flux kept,
    bilinear; where it reads beyond the cut-out, the stamp's sky level, its
    outer ring's median, so a squeezed stamp's edge is not drawn out into
    stripes). For moments this sets ``atanh(e)`` to
    ``v`` exactly (a negative ``v`` turns the major axis by 90 degrees); the
    weighting inside ``H / 4`` makes it approximate. In the same resampling
    the stamp is turned about its centroid so that the major axis lies at an
    angle drawn uniformly from ``gen`` (seeded): stretching along G's own
    axis would amplify any direction G's slightly elongated stamps share into
    a library of galaxies leaning one way, while galaxies on the sky point
    every way. ``b`` ``(K,)`` starts at the real classes' mean ``atanh(e)``
    and ``w`` ``(z_dim,)`` at their within-class spread (:meth:`set`); both
    are learnt with G. G's own output keeps its structure and asymmetry; the
    drawn number decides how elongated the galaxy is.

    ``draw = "measured"`` (``gan.g_ellipticity_draw``) gives the deviation
    ``w . z`` the real class's distribution instead of a Gaussian's: its
    probability ``Phi(w . z / |w|)`` is read through the class's measured
    deviations' quantiles (buffer ``deviation_quantiles`` ``(K, Q)``, in units of
    the pooled spread, from :func:`measure_ellipticities`) and scaled by
    ``|w|``; at the measured ``w`` and ``b`` the draw is the class's real
    ``atanh(e)`` distribution. Real ``atanh(e)`` is skewed (many nearly
    round galaxies, a tail of elongated ones) and its spread differs by class:
    on the dev images the median ``e`` is 0.27, where Gaussians of the class
    means and the pooled spread, folded at 0, put it at 0.33
    (docs/gan-experiments.md round 48).

    ``fill = "reflection"`` (``gan.g_ellipticity_fill``) shows, where the
    resampling reads beyond the cut-out, the stamp mirrored at its edge
    instead of its ring median: G's noiseless edge differs from the ring
    median (round 50, the shipped setting at seed 3: by about 4 / 9 / 15 grey
    levels at the median / 90th / 99th percentile of stamps), which a turned
    stamp shows as a rotated box of brighter sky; mirrored, the fill
    continues the edge (docs/gan-experiments.md round 51).

    ``trainable = False`` (``gan.g_ellipticity_trainable``) keeps ``w`` and
    ``b`` at the measured values (buffers, not parameters): learnt with G on
    the dev images (three runs read, round 48), the spiral class's mean
    ``atanh(e)`` rose from 0.47-0.48 to 0.67-0.70 and the spread from 0.21 to
    0.34-0.40, the library's galaxies more elongated than the real ones.

    ``passes > 1`` (``gan.g_ellipticity_passes``) measures the stretched
    stamp again and stretches what is left, ``passes - 1`` more times, the
    maps composed so the stamp is resampled once; the drawn number's gradient
    goes through the first pass. One pass falls short where the light crosses
    the quarter-side aperture (round 48's seed-0 generator: the round class's
    median ``e`` 0.242 against a target median of 0.176; 0.183 after three).
    """

    def __init__(self, n_classes: int, z_dim: int, draw: str = "normal", trainable: bool = True,
                 passes: int = 1, fill: str = "sky") -> None:
        super().__init__()
        if draw not in ELLIPTICITY_DRAWS:
            raise ValueError(f"draw must be one of {', '.join(ELLIPTICITY_DRAWS)}, got {draw!r}")
        if fill not in ELLIPTICITY_FILLS:
            raise ValueError(f"fill must be one of {', '.join(ELLIPTICITY_FILLS)}, got {fill!r}")
        self.fill = fill
        if int(passes) < 1:
            raise ValueError(f"passes must be at least 1, got {passes!r}")
        self.passes = int(passes)
        if trainable:
            self.weight = torch.nn.Parameter(torch.zeros(z_dim))
            self.bias = torch.nn.Parameter(torch.zeros(n_classes))
        else:
            self.register_buffer("weight", torch.zeros(z_dim))
            self.register_buffer("bias", torch.zeros(n_classes))
        self.draw = draw
        if draw == "measured":
            self.register_buffer("deviation_quantiles", torch.zeros(n_classes, N_RADIUS_QUANTILES))

    @torch.no_grad()
    def set(self, ellipticities: dict, seed: int) -> None:
        """Class means from ``ellipticities["mean"]``; ``w`` a seeded random direction of length ``std``, so ``w . z``
        (``z ~ N(0, I)``) has exactly the measured spread; the measured deviations' quantiles where drawn from them."""
        self.weight.copy_(_seeded_directions(tuple(self.weight.shape), float(ellipticities["std"]), seed))
        self.bias.copy_(torch.as_tensor(ellipticities["mean"], dtype=torch.float32))
        if self.draw == "measured":
            self.deviation_quantiles.copy_(torch.as_tensor(ellipticities["deviation_quantiles"], dtype=torch.float32))

    def targets(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The drawn ``atanh(e)`` of each stamp ``(N,)`` (a negative value: the major axis turned by 90 degrees)."""
        drawn = z.to(self.weight.dtype) @ self.weight
        if self.draw == "measured":
            spread = self.weight.float().norm().clamp(min=1e-6)
            prob = 0.5 * torch.erfc(-drawn.detach().float() / (spread.detach() * math.sqrt(2.0)))  # Phi(w . z / |w|)
            grid = torch.linspace(0.0, 1.0, self.deviation_quantiles.shape[1], dtype=prob.dtype, device=prob.device)
            drawn = spread * _interp(prob, grid, self.deviation_quantiles.to(prob.dtype)[y])  # each stamp: its class's
        return drawn + self.bias[y]

    @staticmethod
    def _stretch_to(x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One pass: measured on ``x``, the map ``a`` ``(N, 2, 2)`` (output to input, normalised coordinates, about
        the light centroid ``centre`` ``(N, 2)``) that stretches ``x`` to ``atanh(e) = target``, and the major axis."""
        size = x.shape[-1]
        mx, my, qxx, qyy, qxy = torch_light_moments(x)
        e = (torch.hypot(qxx - qyy, 2.0 * qxy) / (qxx + qyy).clamp(min=1e-6)).clamp(0.0, _MAX_SHAPE_E)
        axis = 0.5 * torch.atan2(2.0 * qxy, qxx - qyy)  # major axis, from +x towards +y
        log_s = (0.5 * (target - torch.atanh(e))).clamp(-_MAX_LOG_STRETCH, _MAX_LOG_STRETCH)
        c, s = torch.cos(axis), torch.sin(axis)
        major, minor = torch.exp(-log_s), torch.exp(log_s)  # the stretch: output q reads input c + A^-1 (q - c)
        stretch = torch.stack([torch.stack([major * c * c + minor * s * s, (major - minor) * c * s], dim=1),
                               torch.stack([(major - minor) * c * s, major * s * s + minor * c * c], dim=1)], dim=1)
        return stretch, torch.stack([mx, my], dim=1) * (2.0 / size), axis  # centre in normalised coordinates

    def _resample(self, x: torch.Tensor, sky: torch.Tensor | None, theta: torch.Tensor) -> torch.Tensor:
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        if sky is None:  # fill = "reflection"
            return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        return sky + F.grid_sample(x.float() - sky, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def forward(self, x: torch.Tensor, z: torch.Tensor, y: torch.Tensor,
                gen: torch.Generator | None = None) -> torch.Tensor:
        from .rng import seeded_draw

        target = self.targets(z, y)
        x_meas = x.detach()
        # what lies beyond the cut-out: empty sky, not its edge drawn out in stripes (or the stamp mirrored at its edge)
        sky = ring_median(x_meas.float()) if self.fill == "sky" else None
        stretch, centre, axis = self._stretch_to(x_meas, target)  # the drawn number's gradient through the first pass
        turn = 2.0 * torch.pi * seeded_draw(torch.rand, len(x), gen=gen, device=x.device).to(axis.dtype) - axis
        ct, st = torch.cos(turn), torch.sin(turn)  # then turned by `turn`: output p reads stretched c + R(-turn) (p - c)
        back = torch.stack([torch.stack([ct, st], dim=1), torch.stack([-st, ct], dim=1)], dim=1)
        a = stretch @ back
        shift = centre - (a @ centre[:, :, None])[:, :, 0]
        for _ in range(self.passes - 1):  # measure the stretched stamp again, stretch what is left (one resampling in all)
            with torch.no_grad():
                stretch, centre, _ = self._stretch_to(self._resample(x_meas, sky, torch.cat([a, shift[:, :, None]], 2)),
                                                      target.detach())
            # output p -> stretched stamp's c + A2 (p - c) -> input through (a, shift)
            shift = shift + (a @ (centre - (stretch @ centre[:, :, None])[:, :, 0])[:, :, None])[:, :, 0]
            a = a @ stretch
        return self._resample(x, sky, torch.cat([a, shift[:, :, None]], dim=2)).to(x.dtype)
