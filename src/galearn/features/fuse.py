"""Fused features: the CNN vector plus colours and non-parametric morphology.

``galearn features --fuse morphology`` (``FeatureConfig.fuse = "morphology"``)
appends to every galaxy's CNN feature vector a small block of hand-made
quantities measured on the same stamp:

* statmorph's Gini, M20, concentration, asymmetry, log10 half-light radius
  (pixels) and ellipticity of the central source (measurement band: the
  reddest), see :mod:`galearn.morphology`;
* the colour of every pair of adjacent bands (``-2.5 log10`` of the flux ratio
  inside the source's segment).

The option is never on by default and the result is never silent: the fused
features are written to their own file, ``WS/features/<backbone>+morphology.h5``
(the plain CNN file stays), and ``metrics.json`` ``features`` names the fused
file as ``backbone`` and says what was fused (``fused``).

``--fuse catalog:COL1,COL2,...`` appends catalogue columns instead (e.g.
``catalog:zbest,mag_F435W,mag_F850LP,mag_F160W``: redshift and observed
magnitudes, on which rest-frame UVJ colours depend). Each column must be
numeric; missing values (NaN / masked) are set to the median. The file is
``WS/features/<backbone>+catalog.h5`` and ``fused.columns`` lists the
columns. Never on by default: a catalogue column is not an image feature,
and classes agreeing with catalogue-derived labels (UVJ) are then partly
built in.

Weighting
---------
Every consumer of a feature file (``agreement_metrics``, ``embed``,
``classify``) standardises each column before PCA, so a per-column scale
cannot weight a block. The morphology block (``m`` columns, ~8) is therefore
weighted by *repetition*: after a robust standardisation (median, 1.4826 MAD,
clipped at +-5; failed measurements set to the median, i.e. 0) its columns are
repeated ``r`` times, so that after per-column standardisation the block holds
the fraction ``weight`` of the total variance::

    r = max(1, round(weight / (1 - weight) * D_cnn / m))

``weight`` is ``FeatureConfig.fuse_weight`` (measured default
:data:`DEFAULT_FUSE_WEIGHT`, see ``docs/features.md``). Repetition changes no
distance ratio within a block, only the balance between the blocks.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from astropy.table import Table

from ..errors import BadValueError
from ..imaging import subtract_border_background

__all__ = [
    "FUSE_CHOICES",
    "DEFAULT_FUSE_WEIGHT",
    "FUSED_STATISTICS",
    "check_fuse",
    "catalog_matrix",
    "CATALOG_PREFIX",
    "measure_stamp_morphology",
    "morphology_matrix",
    "robust_standardise",
    "append_block",
    "fuse_blocks",
    "fuse_repeats",
    "fused_name",
    "sample_morphology",
    "write_fused_features",
]

log = logging.getLogger("galearn.features")

#: Values of ``--fuse`` / ``FeatureConfig.fuse`` (plus ``catalog:COL1,COL2,...``).
FUSE_CHOICES = ("none", "morphology")
CATALOG_PREFIX = "catalog:"
#: Share of the (standardised) total variance given to the morphology block (measured, docs/features.md).
DEFAULT_FUSE_WEIGHT = 0.1
#: statmorph statistics appended (names of :data:`galearn.morphology.MORPHOLOGY_STATISTICS`).
FUSED_STATISTICS = ("gini", "m20", "concentration", "asymmetry", "half_light_radius", "ellipticity")
_CLIP = 5.0


def check_fuse(fuse: str | None, weight: float | None = None) -> tuple[str, float]:
    """Validate ``--fuse`` and ``fuse_weight``; return ``(fuse, weight)`` (``fuse`` in :data:`FUSE_CHOICES`)."""
    value = "none" if fuse in (None, "", False) else str(fuse).strip()
    if value.lower().startswith(CATALOG_PREFIX):
        cols = [c.strip() for c in value[len(CATALOG_PREFIX):].split(",")]
        if not cols or any(not c for c in cols):
            raise BadValueError(f"--fuse {fuse!r}: name the catalogue columns, e.g. catalog:zbest,mag_F435W")
        value = CATALOG_PREFIX + ",".join(dict.fromkeys(cols))
    else:
        value = value.lower()
        if value not in FUSE_CHOICES:
            raise BadValueError(f"--fuse {fuse!r} is not known; choose one of: {', '.join(FUSE_CHOICES)}, "
                                "catalog:COL1,COL2,...")
    w = DEFAULT_FUSE_WEIGHT if weight is None else float(weight)
    if not 0.0 < w < 1.0:
        raise BadValueError(f"features.fuse_weight must be in (0, 1) (share of the variance), got {weight!r}")
    return value, w


def fused_name(backbone: str, fuse: str) -> str:
    """Feature-file name of fused features, e.g. ``efficientnet-lite0+morphology`` (``+catalog`` for catalogue columns)."""
    if fuse == "none":
        return backbone
    return f"{backbone}+catalog" if fuse.startswith(CATALOG_PREFIX) else f"{backbone}+{fuse}"


def catalog_matrix(sample, columns: list[str]) -> tuple[np.ndarray, list[str]]:
    """Numeric catalogue columns of a sample as a float matrix (NaN where missing).

    Raises
    ------
    BadValueError
        A column that does not exist or is not numeric (the message names it and the file).
    """
    cat = sample.catalog
    cols = []
    for name in columns:
        if name not in cat.colnames:
            raise BadValueError(f"--fuse catalog: no column {name!r} in the catalogue of {sample.path} "
                                f"(columns: {', '.join(cat.colnames)})")
        col = cat[name]
        if col.ndim != 1 or np.asarray(col).dtype.kind not in "biuf":
            raise BadValueError(f"--fuse catalog: column {name!r} of {sample.path} is not numeric")
        cols.append(np.ma.filled(np.ma.asarray(col, dtype="f8"), np.nan))
    return np.stack(cols, axis=1), list(columns)


def measure_stamp_morphology(
    physical: np.ndarray,
    bands: list[str],
    *,
    background: bool = False,
    n_jobs: int = 1,
    chunk: int = 64,
    progress: bool | None = None,
) -> Table:
    """statmorph statistics and colours of every stamp, in chunks, optionally in parallel.

    Parameters
    ----------
    physical : array (N, C, H, W)
        Stamps in physical (linear) units; display images are accepted too.
    bands : list of str
    background : bool
        Subtract the border median first (:func:`subtract_border_background`);
        for ingested images, whose sky level is not zero.
    n_jobs : int
        Worker processes (statmorph is single-threaded, ~0.1-0.4 s per stamp);
        1: in this process; -1: all cores. The result does not depend on it.
    chunk : int
        Fewest stamps per worker task
        (:func:`galearn.morphology.measure_morphology_parallel`).
    progress : bool or None
        tqdm bar when measured in this process (None: only on a terminal).

    Returns
    -------
    astropy.table.Table
        As :func:`galearn.morphology.measure_morphology` (one row per stamp).
    """
    from ..morphology import measure_morphology_parallel
    from ..imaging import robust_noise

    x = np.asarray(physical, dtype="f8")
    if x.ndim != 4 or x.shape[1] != len(bands):
        raise BadValueError(f"stamps must be (N, {len(bands)}, H, W), got shape {x.shape}")
    if background:
        x = subtract_border_background(x)
    # one noise level for all chunks (the same segmentation threshold everywhere)
    noise = np.array([robust_noise(x[:, b]) for b in range(x.shape[1])])
    jobs = (os.cpu_count() or 1) if n_jobs == -1 else max(1, int(n_jobs))
    table = measure_morphology_parallel(x, list(bands), noise_sigma=noise, n_jobs=jobs, min_chunk=chunk,
                                        progress=progress)
    table.meta["background_subtracted"] = bool(background)
    return table


def morphology_matrix(table: Table) -> tuple[np.ndarray, list[str]]:
    """The fused quantities of a morphology table as a float matrix (NaN where not measured).

    Columns: :data:`FUSED_STATISTICS` (``half_light_radius`` as log10 pixels)
    followed by the table's ``colour_*`` columns.
    """
    names, cols = [], []
    for stat in FUSED_STATISTICS:
        if stat not in table.colnames:
            raise BadValueError(f"morphology table has no column {stat!r}")
        v = np.asarray(table[stat], dtype="f8")
        if stat == "half_light_radius":
            with np.errstate(divide="ignore", invalid="ignore"):
                v = np.where(v > 0, np.log10(v), np.nan)
            names.append("log10_half_light_radius")
        else:
            names.append(stat)
        cols.append(v)
    for name in table.colnames:
        if name.startswith("colour_"):
            names.append(name)
            cols.append(np.asarray(table[name], dtype="f8"))
    return np.stack(cols, axis=1), names


def robust_standardise(
    values: np.ndarray, center: np.ndarray | None = None, scale: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(x - median) / (1.4826 MAD)`` per column, clipped to +-5; NaN -> 0 (the median).

    ``center`` / ``scale`` (from an earlier call, e.g. the sample's) are used
    when given, so that another set (the GAN library) is put on the same scale.
    Returns ``(z, center, scale)``.
    """
    x = np.asarray(values, dtype="f8")
    if center is None or scale is None:
        center = np.nanmedian(x, axis=0)
        mad = 1.4826 * np.nanmedian(np.abs(x - center), axis=0)
        std = np.nanstd(x, axis=0)
        scale = np.where(mad > 0, mad, np.where(std > 0, std, 1.0))
        center = np.where(np.isfinite(center), center, 0.0)
        scale = np.where(np.isfinite(scale), scale, 1.0)
    center, scale = np.asarray(center, dtype="f8"), np.asarray(scale, dtype="f8")
    z = np.clip((x - center) / scale, -_CLIP, _CLIP)
    return np.where(np.isfinite(z), z, 0.0), center, scale


def fuse_repeats(cnn_dim: int, block_dim: int, weight: float) -> int:
    """Repetitions ``r`` giving the block the share ``weight`` of the standardised variance."""
    _, w = check_fuse("morphology", weight)
    return max(1, int(round(w / (1.0 - w) * int(cnn_dim) / max(1, int(block_dim)))))


def append_block(X: np.ndarray, block: np.ndarray, repeats: int = 1) -> np.ndarray:
    """``[X, block x repeats]`` as float32."""
    X = np.asarray(X, dtype=np.float32)
    block = np.asarray(block, dtype=np.float32)
    if X.ndim != 2 or block.ndim != 2 or len(X) != len(block):
        raise BadValueError(f"cannot fuse features {X.shape} with a block {block.shape}")
    return np.concatenate([X, np.tile(block, (1, max(1, int(repeats))))], axis=1)


def fuse_blocks(cnn: np.ndarray, block: np.ndarray, weight: float) -> tuple[np.ndarray, int]:
    """``[cnn, block x r]`` as float32, with ``r`` from :func:`fuse_repeats`; returns ``(fused, r)``."""
    cnn, block = np.asarray(cnn), np.asarray(block)
    r = fuse_repeats(cnn.shape[1] if cnn.ndim == 2 else 0, block.shape[1] if block.ndim == 2 else 1, weight)
    return append_block(cnn, block, r), r


def sample_morphology(ws, sample, *, library: bool = False, n_jobs: int = 1, progress: bool | None = None) -> Table:
    """The morphology table of a sample (or GAN library), cached in ``WS/features/[library_]morphology.ecsv``.

    The cache is used while its ``sample_checksum`` matches the stamps. Physical
    stamps are measured where the file has them, else the stretched ones;
    ingested images (``Sample.display_images``) and stretched-only files get the
    border-median background subtracted first.
    """
    from ..store import read_table, write_table

    cache = ws.morphology(library=library)
    if cache.exists():
        try:
            table = read_table(cache)
            if table.meta.get("sample_checksum") == sample.checksum and len(table) == sample.n:
                return table
        except Exception:  # noqa: BLE001 - a damaged cache is measured again
            pass
    physical = sample.has("physical") and not sample.display_images
    stamps = sample.read("physical" if physical else "stretched")
    log.info("measuring statmorph morphology of %d stamps (%s)", sample.n, "physical" if physical else "stretched")
    table = measure_stamp_morphology(stamps, sample.bands, background=not physical, n_jobs=n_jobs,
                                     progress=progress)
    table.meta["sample_checksum"] = sample.checksum
    table.meta["stamps"] = "physical" if physical else "stretched"
    write_table(cache, table)
    return table


def write_fused_features(
    ws, sample, cnn_path: Path, *, fuse: str, weight: float, library: bool = False, n_jobs: int = 1
) -> tuple[Path, dict]:
    """Write ``WS/features/<backbone>+<fuse>.h5`` next to the CNN feature file ``cnn_path``.

    Returns the path and the ``fused`` description (also stored in the file's
    attributes). For the GAN library the morphology block is standardised with
    the sample's centre and scale (from the sample's fused file) when present,
    so that both lie on one scale.
    """
    from ..store import FeatureWriter, read_features

    fuse, weight = check_fuse(fuse, weight)
    cnn = read_features(cnn_path)
    if fuse.startswith(CATALOG_PREFIX):
        X, names = catalog_matrix(sample, fuse[len(CATALOG_PREFIX):].split(","))
        finite = np.isfinite(X).all(axis=1)
        table = Table({"ok": finite})
        table.meta.update(stamps="catalogue", background_subtracted=False)
    else:
        table = sample_morphology(ws, sample, library=library, n_jobs=n_jobs)
        X, names = morphology_matrix(table)
    name = fused_name(str(cnn.attrs.get("backbone", Path(cnn_path).stem)), fuse)
    center = scale = None
    source = "own"
    if library:
        ref = ws.features(name)
        if ref.exists():
            ra = read_features(ref).attrs.get("fused", {})
            if ra.get("columns") == names:
                center, scale, source = np.asarray(ra["center"]), np.asarray(ra["scale"]), str(ref)
    z, center, scale = robust_standardise(X, center, scale)
    fused, r = fuse_blocks(cnn.values, z, weight)
    ok = np.asarray(table["ok"], dtype=bool)
    info = {
        "with": "catalog" if fuse.startswith(CATALOG_PREFIX) else fuse,
        "columns": names,
        "measurement_band": table.meta.get("measurement_band"),
        "stamps": table.meta.get("stamps"),
        "background_subtracted": bool(table.meta.get("background_subtracted", False)),
        "standardisation": "median / (1.4826 MAD), clipped at +-5, unmeasured -> 0",
        "standardisation_from": source,
        "center": [float(v) for v in center],
        "scale": [float(v) for v in scale],
        "weight": float(weight),
        "repeats": int(r),
        "cnn_dim": int(cnn.values.shape[1]),
        "block_dim": int(z.shape[1]),
        "n_measured": int(ok.sum()),
        "n_failed": int((~ok).sum()),
    }
    path = ws.features(name, library=library)
    attrs = {**cnn.attrs, "backbone": name, "cnn_backbone": cnn.attrs.get("backbone"), "dim": int(fused.shape[1]),
             "fused": info}
    writer = FeatureWriter(path, len(fused), fused.shape[1], cnn.ids, attrs)
    try:
        writer.write(0, fused)
        writer.finish()
    finally:
        writer.close()
    log.info("fused %s: %d CNN + %d x %d morphology columns -> %s", name, info["cnn_dim"], info["block_dim"], r, path)
    return path, info
