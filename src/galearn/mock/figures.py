"""Preview figures of a simulated field: a Lupton RGB of a patch and a stamp grid per truth class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import MissingInputError
from ..imaging import robust_noise

__all__ = ["write_previews", "read_stamps", "calibrated_lupton_rgb"]

BANDS = ("F435W", "F850LP", "F160W")
CLASS_ORDER = ("elliptical", "spiral", "edge-on", "irregular", "merger", "star")


def _load(out_dir: Path) -> tuple[dict[str, np.ndarray], object]:
    from astropy.io import fits
    from astropy.table import Table

    images = {}
    for band in BANDS:
        path = out_dir / f"{band}.fits"
        if not path.exists():
            raise MissingInputError(f"{path} does not exist; run `galearn simulate --out {out_dir}` first")
        images[band] = fits.getdata(path, 0, memmap=True)
    cat_path = out_dir / "catalog.fits"
    if not cat_path.exists():
        raise MissingInputError(f"{cat_path} does not exist; run `galearn simulate --out {out_dir}` first")
    return images, Table.read(cat_path, character_as_bytes=False)


def calibrated_lupton_rgb(physical: np.ndarray, zero_points: list[float], *, stretch: float = 15.0,
                          Q: float = 6.0) -> np.ndarray:
    """Lupton et al. (2004) RGB of stamps ``(N, 3, H, W)`` in band order (F435W, F850LP, F160W) -> uint8 (N, H, W, 3).

    Each band is converted to flux density (microJy per pixel) with its AB zero point, so a source
    with a flat f_nu spectrum is grey; ``stretch`` is in units of the median sky noise of the three bands.
    """
    from astropy.visualization import make_lupton_rgb

    x = np.nan_to_num(np.asarray(physical, dtype="f8"))
    x = x * (10.0 ** (0.4 * (23.9 - np.asarray(zero_points, dtype="f8"))))[None, :, None, None]
    noise = np.nanmedian([robust_noise(x[:, c]) for c in range(3)])
    scale = stretch * (noise if np.isfinite(noise) and noise > 0 else 1.0)
    out = np.empty(x.shape[:1] + x.shape[2:] + (3,), np.uint8)
    with np.errstate(invalid="ignore", divide="ignore"):  # astropy divides by 0 where all bands are 0
        for i in range(len(x)):
            out[i] = make_lupton_rgb(x[i, 2], x[i, 1], x[i, 0], minimum=0.0, stretch=scale, Q=Q)
    return out


def read_stamps(images: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, size: int) -> np.ndarray:
    """Stamps ``(N, C, size, size)`` centred on 1-based pixel positions (x, y); zero outside the mosaic."""
    half = size // 2
    n = len(x)
    out = np.zeros((n, len(BANDS), size, size), "f4")
    for c, band in enumerate(BANDS):
        img = images[band]
        ny, nx = img.shape
        for i in range(n):
            cx, cy = int(round(x[i])) - 1, int(round(y[i])) - 1
            x0, y0 = cx - half, cy - half
            sx0, sy0 = max(0, -x0), max(0, -y0)
            tx0, ty0, tx1, ty1 = max(0, x0), max(0, y0), min(nx, x0 + size), min(ny, y0 + size)
            if tx1 > tx0 and ty1 > ty0:
                out[i, c, sy0:sy0 + ty1 - ty0, sx0:sx0 + tx1 - tx0] = img[ty0:ty1, tx0:tx1]
    return out


def write_previews(out_dir: str | Path, *, patch_arcsec: float = 45.0, stamp_size: int = 80, per_class: int = 8,
                   bright_mag: float = 23.5, stretch: float = 15.0, Q: float = 6.0,
                   random_state: int = 0) -> dict[str, Path]:
    """Draw ``preview_rgb.png`` (Lupton RGB F160W/F850LP/F435W of a patch) and ``preview_stamps.png``.

    Parameters
    ----------
    out_dir : str or Path
        A folder written by :func:`galearn.mock.simulate_field`.
    patch_arcsec : float
        Side of the RGB patch (arcsec), centred on the densest part of the footprint.
    stamp_size : int
        Stamp side (pixels) in the class grid.
    per_class : int
        Stamps per truth class (one row each).
    bright_mag : float
        Prefer galaxies brighter than this F160W magnitude (AB) in the grid.
    stretch, Q : float
        Lupton et al. (2004) parameters; bands are flux-calibrated (flat f_nu = grey) and ``stretch``
        is in units of the median sky noise (see :func:`calibrated_lupton_rgb`).
    random_state : int
        Seed for picking the stamps.

    Returns
    -------
    dict[str, Path]
        ``rgb`` and ``stamps``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..store import atomic_path

    out_dir = Path(out_dir)
    images, cat = _load(out_dir)
    from astropy.io import fits

    hdr = fits.getheader(out_dir / "F160W.fits")
    zps = [float(fits.getheader(out_dir / f"{b}.fits").get("PHOTZP", 0.0)) for b in BANDS]
    pix = abs(float(hdr.get("CD2_2", hdr.get("PC2_2", 1.0) * hdr.get("CDELT2", 1.0)))) * 3600.0
    ny, nx = images["F160W"].shape
    side = int(min(patch_arcsec / pix, nx, ny))
    x = np.asarray(cat["X_IMAGE"], dtype="f8")
    y = np.asarray(cat["Y_IMAGE"], dtype="f8")
    # Patch centre: the catalogue source nearest the median position (inside the footprint).
    k = int(np.argmin(np.hypot(x - np.median(x), y - np.median(y))))
    patch = read_stamps(images, x[[k]], y[[k]], side)
    rgb = calibrated_lupton_rgb(patch, zps, stretch=stretch, Q=Q)[0]
    paths = {"rgb": out_dir / "preview_rgb.png", "stamps": out_dir / "preview_stamps.png"}
    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    ax.imshow(rgb, origin="lower", interpolation="nearest")
    ax.set_title(f"mock GOODS-S patch {side * pix:.0f}\" x {side * pix:.0f}\"  (R,G,B = F160W, F850LP, F435W)")
    ax.set_axis_off()
    with atomic_path(paths["rgb"], suffix=".png") as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)

    rng = np.random.default_rng(random_state)
    classes = [c for c in CLASS_ORDER if np.any(np.asarray(cat["truth_class"]) == c)]
    hmag = np.asarray(cat["Hmag"], dtype="f8")
    fig, axes = plt.subplots(len(classes), per_class, figsize=(1.3 * per_class, 1.4 * len(classes)), dpi=110,
                             squeeze=False)
    picks = []
    for c in classes:
        idx = np.flatnonzero(np.asarray(cat["truth_class"]) == c)
        bright = idx[hmag[idx] < bright_mag]
        pool = bright if len(bright) >= per_class else idx[np.argsort(hmag[idx])]
        pick = rng.choice(pool, size=min(per_class, len(pool)), replace=False) if len(bright) >= per_class else pool[:per_class]
        picks.append(np.sort(pick))
    allp = np.concatenate(picks)
    stamps = read_stamps(images, x[allp], y[allp], stamp_size)
    rgbs = calibrated_lupton_rgb(stamps, zps, stretch=stretch, Q=Q)
    pos = 0
    for r, (c, pick) in enumerate(zip(classes, picks)):
        for j in range(per_class):
            ax = axes[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(pick):
                ax.imshow(rgbs[pos], origin="lower", interpolation="nearest")
                ax.set_title(f"z={float(cat['zbest'][pick[j]]):.2f} H={hmag[pick[j]]:.1f}", fontsize=6)
                pos += 1
            if j == 0:
                ax.set_ylabel(c, fontsize=8)
    fig.suptitle(f"mock stamps per truth class ({stamp_size} px = {stamp_size * pix:.1f}\")", fontsize=9)
    fig.tight_layout()
    with atomic_path(paths["stamps"], suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return paths
