"""Where a trained GAN's sky differs from the real one: per-stamp sky levels, black rings, and the noise's share.

Usage::

    python benchmarks/bench_gan_sky.py WS [--n 200] [--seed 0]

``WS`` is a workspace with ``sample.h5`` and a trained GAN (``WS/gan/ckpt-*.pt``) whose sky is measured
(``gan.sky_noise`` auto / measured / measured-correlated). Prints, for the real stamps and ``--n`` generated
stamps per class (the EMA generator, as ``gan sample`` draws them), in 8-bit levels of the first band (the
stretched 0..1 values x 255):

* each stamp's outer-ring median (ring ``H // 8`` wide): 5 / 25 / 50 / 75 / 95 % over stamps, and the share of
  stamps with more than a quarter of their ring at black;
* each stamp's sky sigma (:func:`galearn.gan.sky.sky_per_stamp`, median over stamps, every band, the
  stretch's linear units x 255: 8-bit levels for linear 8-bit images) for the generated stamps as drawn, for
  the noise alone (each stamp's noiseless ring median as a flat sky, through the same sky module: neighbours,
  depth draws) and for G's noiseless stamps alone. The noise alone near the real sigma and the full stamps
  above it says the excess is G's, not the noise model's;
* the rank correlation (Spearman) of each stamp's sky level and sky sigma, first band: in the real 8-bit composites
  a dark sky is a quiet one (dev images: +0.91), which a sky depth drawn without regard to the level loses
  (``gan.sky_scatter_by_level``, round 46);
* the pixel-scale texture: the root mean square of each stamp's Laplacian (first band, 8-bit levels) on the outer
  ring and on the central 18 x 18 pixels, the centre's on the faintest and the brightest quarter of the stamps by
  their central light above their ring, and the rank correlation of that light and the centre's texture. In the
  real dev stamps the centre's texture falls steeply with the light (-0.80); in the round-45 library it hardly
  does (-0.31), and most of it is G's noiseless texture (round 47);
* per band, the rank correlation over stamps of each stamp's lowest-frequency power (|k| < 0.06 cycles per pixel,
  the constant left out: the galaxy's size and brightness) and its highest (|k| > 0.35: the pixel-scale noise and
  texture). In the real dev stamps it is negative (R / G / B -0.26 / -0.30 / -0.15: a big bright galaxy sits in a
  smoother stamp); every library of rounds 43-47 has it positive (round 47).

Used for docs/gan-experiments.md rounds 45-48.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.ndimage import laplace
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from galearn.gan.sample import load_generator, sample_class  # noqa: E402
from galearn.gan.sky import outer_ring, sky_per_stamp  # noqa: E402
from galearn.gan.template import ring_median  # noqa: E402
from galearn.store import Workspace, open_sample  # noqa: E402


def ring_summary(stretched: np.ndarray) -> tuple[np.ndarray, float]:
    """First band: per-stamp ring median quantiles (5-95 %, 8-bit levels) and the share of stamps whose ring is
    more than a quarter black."""
    ring = stretched[:, 0][:, outer_ring(*stretched.shape[-2:])] * 255.0
    return np.percentile(np.median(ring, axis=1), [5, 25, 50, 75, 95]), float(((ring <= 0).mean(axis=1) > 0.25).mean())


def central_light(stretched: np.ndarray) -> np.ndarray:
    """First band: each stamp's central 16 x 16 mean above its outer-ring median (8-bit levels)."""
    x = stretched[:, 0].astype("f8") * 255.0
    cy, cx = x.shape[-2] // 2, x.shape[-1] // 2
    return x[:, cy - 8:cy + 8, cx - 8:cx + 8].mean(axis=(1, 2)) - np.median(x[:, outer_ring(*x.shape[-2:])], axis=1)


def texture_summary(stretched: np.ndarray, light: np.ndarray) -> list[float]:
    """First band, 8-bit levels: the Laplacian's rms on the outer ring and on the central 18 x 18 pixels (median over
    stamps), the centre's median over the faintest and the brightest quarter of the stamps by ``light``
    (:func:`central_light`; for the generated stamps, their noiseless stamps'), and the rank correlation of ``light``
    and the centre's rms. The stamp's edge pixels, where the Laplacian needs pixels beyond it, are left out."""
    x = stretched[:, 0].astype("f8") * 255.0
    lap = laplace(x, axes=(1, 2))
    edge = np.ones(x.shape[-2:], dtype=bool)
    edge[1:-1, 1:-1] = False
    ring = outer_ring(*x.shape[-2:]) & ~edge
    cy, cx = x.shape[-2] // 2, x.shape[-1] // 2
    ring_rms = np.sqrt(np.mean(lap[:, ring] ** 2, axis=1))
    centre_rms = np.sqrt(np.mean(lap[:, cy - 9:cy + 9, cx - 9:cx + 9] ** 2, axis=(1, 2)))
    faint, bright = np.quantile(light, [0.25, 0.75])
    return [float(np.median(ring_rms)), float(np.median(centre_rms)), float(np.median(centre_rms[light <= faint])),
            float(np.median(centre_rms[light >= bright])), float(spearmanr(light, centre_rms)[0])]


#: Spatial frequencies (cycles per pixel) of the lowest and the highest power in :func:`frequency_covariance`.
LOWEST_K, HIGHEST_K = 0.06, 0.35


def frequency_covariance(stretched: np.ndarray) -> np.ndarray:
    """Per band, the rank correlation over stamps of each stamp's mean power at ``0 < |k| < LOWEST_K`` and at
    ``|k| > HIGHEST_K`` (cycles per pixel; the 2-d power spectrum of the stamp less its mean): ``(C,)``."""
    x = stretched.astype("f8")
    power = np.abs(np.fft.fft2(x - x.mean(axis=(2, 3), keepdims=True))) ** 2
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(x.shape[-2]), np.fft.fftfreq(x.shape[-1]), indexing="ij"))
    low, high = power[..., (k > 0) & (k < LOWEST_K)].mean(axis=-1), power[..., k > HIGHEST_K].mean(axis=-1)
    return np.array([spearmanr(low[:, b], high[:, b])[0] for b in range(x.shape[1])])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("workspace")
    ap.add_argument("--n", type=int, default=200, help="generated stamps per class (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="latent and noise seed (default 0)")
    args = ap.parse_args(argv)
    import torch

    ws = Workspace(args.workspace)
    sample = open_sample(ws.sample)
    stretch = sample.stretch
    G, ckpt, path = load_generator(ws, device="cpu")
    if getattr(G, "sky", None) is None:
        print(f"{path}: this generator has no measured sky (gan.sky_noise = learnt)", file=sys.stderr)
        return 2
    z_dim = int(ckpt["config"].get("z_dim", 128))
    noiseless = []  # G's noiseless stamps, network units, as they enter the sky module
    hook = G.sky.register_forward_pre_hook(lambda module, inputs: noiseless.append(inputs[0].detach().clone()))
    try:
        full = np.concatenate([sample_class(G, k, args.n, z_dim, random_state=args.seed)
                               for k in range(len(ckpt["classes"]))])
    finally:
        hook.remove()
    h = torch.cat(noiseless)
    flat = ring_median(h).expand_as(h).contiguous()
    with torch.no_grad():
        noise_only = ((G.sky(flat, torch.Generator().manual_seed(args.seed)) + 1.0) * 0.5).numpy()
    noiseless_stretched = ((h.clamp(-1.0, 1.0) + 1.0) * 0.5).numpy()
    real = sample.read("stretched")
    print(f"{path} ({len(full)} generated stamps; real: {len(real)} stamps of {ws.sample})")
    print("first band, x 255 (8-bit levels)  ring median 5/25/50/75/95 %    rings > 1/4 black    "
          "sky sigma per band (median; linear units x 255)    level-sigma rank corr. (first band)")
    for name, x in (("real", real), ("generated", full), ("noise alone, flat sky", noise_only),
                    ("G's noiseless stamps", noiseless_stretched)):
        q, black = ring_summary(x)
        own = sky_per_stamp(x, stretch)
        sigma = np.median(own["sigma"], axis=0) * 255.0
        rank = spearmanr(own["level"][:, 0], own["sigma"][:, 0], nan_policy="omit")[0]
        print(f"{name:28s} {np.array2string(np.round(q, 1)):32s} {100 * black:5.1f} %             "
              f"{np.array2string(np.round(sigma, 2)):38s} {rank:+.2f}")
    print("\npixel-scale texture, first band: Laplacian rms (8-bit levels)   ring    centre   centre, faintest / "
          "brightest quarter by central light   light-texture rank corr.\n(generated: by their noiseless stamps' light)")
    light = central_light(noiseless_stretched)
    for name, x, by in (("real", real, central_light(real)), ("generated", full, light),
                        ("noise alone, flat sky", noise_only, light), ("G's noiseless stamps", noiseless_stretched, light)):
        ring_rms, centre_rms, faint, bright, rank = texture_summary(x, by)
        print(f"{name:64s} {ring_rms:6.2f}  {centre_rms:6.2f}   {faint:6.2f} / {bright:6.2f}{'':27s}{rank:+.2f}")
    print(f"\nlowest (|k| < {LOWEST_K}) - highest (|k| > {HIGHEST_K} cycles per pixel) power rank corr., per band")
    for name, x in (("real", real), ("generated", full), ("G's noiseless stamps", noiseless_stretched)):
        print(f"{name:28s} {' '.join(f'{r:+.2f}' for r in frequency_covariance(x))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
