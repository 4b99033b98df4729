"""Which sky model ``gan.sky_noise = "auto"`` picks on drizzled mosaics (issue 14).

``auto`` trains the generator with correlated sky noise when the real
stamps' lag-1 sky correlation (:func:`galearn.gan.sky.short_range_correlation`
of :func:`galearn.gan.sky.measure_sky_correlation`) is at least
:data:`galearn.gan.sky.CORRELATED_SKY_THRESHOLD`. The embedded mock field has
white noise and the galaxy-zoo-dev images JPEG noise; survey mosaics are
drizzled (Fruchter & Hook 2002), which correlates neighbouring pixels by an
amount set by the output pixel scale and the drop size ``pixfrac``.

This benchmark drizzles dithered exposures of white unit noise with STScI's
``drizzle`` package (square kernel; 4-point sub-pixel dither) at the settings
of common HST releases, cuts 64-pixel stamps from the output, passes them
through an asinh stretch (the estimate uses only the order of the values) and
prints, per setting: the mean Pearson lag-1 correlation of the stamps, the
value ``auto`` measures and the sky model it picks.

Usage (``drizzle`` is not a galearn dependency)::

    pip install drizzle
    python benchmarks/bench_sky_drizzle.py [--exposures 6] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from galearn.gan.sky import CORRELATED_SKY_THRESHOLD, choose_sky_noise, measure_sky_correlation, short_range_correlation

STAMP = 64  # pixels
#: (label, output / input pixel scale, pixfrac); None: white noise, not drizzled.
SETTINGS = [
    ("white noise (not drizzled; the mock field)", None, None),
    ("ACS 0.05 -> 0.03 arcsec/px, pixfrac 0.8 (GOODS)", 0.03 / 0.05, 0.8),
    ("ACS 0.05 -> 0.03 arcsec/px, pixfrac 0.6", 0.03 / 0.05, 0.6),
    ("WFC3-IR 0.128 -> 0.06 arcsec/px, pixfrac 0.8 (CANDELS)", 0.06 / 0.128, 0.8),
    ("native scale, pixfrac 1.0", 1.0, 1.0),
]
DITHERS = [(0.0, 0.0), (0.5, 0.5), (0.25, 0.75), (0.75, 0.25)]  # input pixels


def drizzled_noise(ratio: float, pixfrac: float, rng: np.random.Generator, *, n_in: int = 192) -> np.ndarray:
    """White unit noise in four dithered exposures of ``n_in`` input pixels, drizzled to pixels of ``ratio`` input
    pixels; the edge (8 output pixels) where fewer exposures overlap is cut off."""
    from drizzle.resample import Drizzle

    n_out = int(n_in / ratio) - 8
    driz = Drizzle(kernel="square", out_shape=(n_out, n_out), fillval=0.0, disable_ctx=True)
    y, x = np.mgrid[0:n_in, 0:n_in].astype("f8")
    for dx, dy in DITHERS:
        pixmap = np.dstack([(x + dx) / ratio - 4, (y + dy) / ratio - 4])
        driz.add_image(rng.standard_normal((n_in, n_in)).astype("f4"), exptime=1.0, pixmap=pixmap,
                       pixfrac=pixfrac, pixel_scale_ratio=ratio, in_units="cps")
    return driz.out_img[8:-8, 8:-8]


def stamps_of(image: np.ndarray) -> np.ndarray:
    """Non-overlapping ``STAMP``-pixel stamps tiling ``image``."""
    ny, nx = image.shape[0] // STAMP, image.shape[1] // STAMP
    tiles = image[: ny * STAMP, : nx * STAMP].reshape(ny, STAMP, nx, STAMP)
    return tiles.transpose(0, 2, 1, 3).reshape(-1, STAMP, STAMP)


def lag1_pearson(stamps: np.ndarray) -> float:
    """Mean over stamps of the Pearson correlation at lag 1 pixel (x and y averaged)."""
    a = stamps - stamps.mean(axis=(1, 2), keepdims=True)
    var = (a * a).mean(axis=(1, 2))
    lag_x = (a[:, :, 1:] * a[:, :, :-1]).mean(axis=(1, 2))
    lag_y = (a[:, 1:] * a[:, :-1]).mean(axis=(1, 2))
    return float(np.mean(0.5 * (lag_x + lag_y) / var))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--exposures", type=int, default=6, help="independent drizzled fields per setting")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    try:
        import drizzle  # noqa: F401
    except ImportError:
        print("this benchmark needs STScI's drizzle package: pip install drizzle", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    print(f"threshold (gan.sky.CORRELATED_SKY_THRESHOLD) {CORRELATED_SKY_THRESHOLD}")
    print(f"{'setting':56s} {'stamps':>6s} {'Pearson lag 1':>13s} {'auto measures':>13s}  auto picks")
    for label, ratio, pixfrac in SETTINGS:
        fields = [rng.standard_normal((320, 320)) if ratio is None else drizzled_noise(ratio, pixfrac, rng)
                  for _ in range(args.exposures)]
        stamps = np.concatenate([stamps_of(f / f.std()) for f in fields])
        stretched = np.arcsinh(stamps / 0.5)
        stretched = (stretched - stretched.min()) / (stretched.max() - stretched.min())
        rho = measure_sky_correlation(np.repeat(stretched[:, None], 3, axis=1).astype("f4"))
        print(f"{label:56s} {len(stamps):6d} {lag1_pearson(stamps):13.2f} "
              f"{float(np.median(short_range_correlation(rho))):13.2f}  {choose_sky_noise(rho)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
