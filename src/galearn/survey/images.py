"""Stamps from a folder of RGB galaxy images (Galaxy Zoo style) plus a label table.

Each JPEG/PNG holds one centred galaxy. The central ``crop_fraction`` of the
image side is kept and resized to ``stamp_size`` pixels with Pillow's Lanczos
filter (antialiased when shrinking); the three channels are the bands
``R``, ``G``, ``B``. ``stamps/physical`` = 8-bit values / 255; ``stamps/stretched``
is the same array (the images are already display-stretched).

The label CSV is keyed by file stem: its ``id_column`` holds the stem
(``587722982820741353`` for ``587722982820741353.jpeg``); numeric ids also
match stems with leading zeros (``00123`` <-> ``123``). Files without a label
row and label rows without a file are reported with a warning and stored in
the ``rejected`` table (``row`` = label row, -1 for a file without a label),
never dropped silently. An unreadable image is rejected with the reason.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from astropy.table import Table

from .. import __version__
from ..config import IngestConfig
from ..errors import BadValueError, EmptySelectionError, EmptySelectionWarning, MissingInputError
from ..store import SampleWriter, Workspace, empty_rejected, file_sha256, open_sample, update_metrics

__all__ = ["IMAGE_SUFFIXES", "load_image_stamp", "make_sample_from_images"]

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
BANDS = ["R", "G", "B"]


def _key(value: object) -> str:
    """Matching key of an id or file stem: numbers compare by value ('00123' == '123' == 123)."""
    text = str(value).strip()
    if text.endswith(".0") and text[:-2].lstrip("-").isdigit():
        text = text[:-2]
    if text.lstrip("-").isdigit():
        return str(int(text))
    return text


#: PIL modes holding 8-bit channels: converted to RGB by Pillow, values / 255.
EIGHT_BIT_MODES = ("1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV")
#: PIL modes holding one 16- or 32-bit integer or float channel (greyscale): scaled by their range.
WIDE_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def image_scaling(mode: str) -> str:
    """How pixel values of a PIL ``mode`` become [0, 1] (the rule stored in the sample's provenance).

    Raises
    ------
    ValueError
        A mode galearn does not read (the message names it).
    """
    if mode in EIGHT_BIT_MODES:
        return "8-bit: value / 255"
    if mode.startswith("I;16"):
        return "16-bit: value / 65535"
    if mode == "I":
        return "32-bit integer: value / 65535 when within 0..65535 (16-bit data), else (value - min) / (max - min)"
    if mode == "F":
        return "float: unchanged when within 0..1, else (value - min) / (max - min)"
    raise ValueError(f"unsupported image mode {mode!r}")


def _wide_to_unit(img) -> np.ndarray:
    """A 16/32-bit or float greyscale PIL image -> float32 (h, w) in [0, 1] by its real range."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16"):
        return arr.astype(np.float32) / 65535.0
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ValueError("image has non-finite pixels")
    lo, hi = float(arr.min()), float(arr.max())
    if img.mode == "I" and lo >= 0 and hi <= 65535:
        return (arr / 65535.0).astype(np.float32)
    if img.mode == "F" and lo >= 0 and hi <= 1:
        return arr.astype(np.float32)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo)).astype(np.float32)


def load_image_stamp(path: str | os.PathLike, size: int, crop_fraction: float) -> np.ndarray:
    """One image -> float32 ``(3, size, size)`` in [0, 1] (R, G, B).

    The central square of side ``crop_fraction * min(width, height)`` is
    resampled to ``size`` x ``size`` with a Lanczos filter (Pillow scales the
    filter support when shrinking, i.e. antialiased). Pixel values are scaled
    by the image's real bit depth (:func:`image_scaling`): 8-bit modes / 255,
    16-bit greyscale / 65535, 32-bit and float greyscale by their range;
    greyscale images give three equal channels.

    Raises
    ------
    OSError
        Pillow cannot read the file (``PIL.UnidentifiedImageError`` is an OSError).
    ValueError
        An image mode galearn does not read, or non-finite float pixels.
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        image_scaling(img.mode)  # raises for modes galearn does not read
        if img.mode in EIGHT_BIT_MODES:
            src, scale = img.convert("RGB"), 255.0
        else:
            src, scale = Image.fromarray(_wide_to_unit(img)), 1.0
    w, h = src.size
    side = crop_fraction * min(w, h)
    cx, cy = w / 2.0, h / 2.0
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    out = np.asarray(src.resize((size, size), resample=Image.Resampling.LANCZOS, box=box), dtype=np.float32)
    if out.ndim == 2:  # greyscale (16-bit, float): the same plane in R, G, B
        out = np.clip(out, 0.0, 1.0)
        return np.repeat(out[None], 3, axis=0)
    return out.transpose(2, 0, 1) / scale


def image_mode(path: str | os.PathLike) -> str:
    """PIL mode of an image file, read from its header only."""
    from PIL import Image

    with Image.open(path) as img:
        return img.mode


def _read_labels(labels_csv: Path, id_column: str) -> Table:
    if not labels_csv.exists():
        raise MissingInputError(f"label table {labels_csv} does not exist")
    try:
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        table = Table.read(labels_csv, format="ascii.csv", encoding="utf-8-sig")
    except Exception as exc:
        raise BadValueError(f"label table {labels_csv}: cannot read it as CSV ({exc})") from exc
    if id_column not in table.colnames:
        raise BadValueError(
            f"label table {labels_csv} has no id column {id_column!r} (--id-column); columns: "
            f"{', '.join(table.colnames)}"
        )
    return table


def make_sample_from_images(
    images_dir: str | os.PathLike,
    labels_csv: str | os.PathLike,
    workspace: Workspace,
    cfg: IngestConfig,
    *,
    progress: bool | None = None,
):
    """Ingest a folder of RGB JPEG/PNG galaxy images into ``WS/sample.h5``.

    Parameters
    ----------
    images_dir : path-like
        Folder with one image per galaxy (``.jpg``, ``.jpeg``, ``.png``; case-insensitive).
    labels_csv : path-like
        CSV with one row per galaxy; ``cfg.id_column`` holds the file stem.
    workspace : Workspace
    cfg : IngestConfig
        ``stamp_size`` (pixels), ``crop_fraction`` (of the image side), ``id_column``.
    progress : bool or None
        tqdm progress bar (None: only on a terminal).

    Returns
    -------
    galearn.store.Sample
        Stamps in label-table order; ``catalog`` holds the label rows of the
        kept images with all columns. Merges ``sample`` into metrics.json.

    Raises
    ------
    MissingInputError
        Folder or label table missing.
    BadValueError
        No id column, bad option, or no image could be read.
    EmptySelectionError
        No image matched a label row.
    """
    from tqdm.auto import tqdm

    images_dir, labels_csv = Path(images_dir), Path(labels_csv)
    size = cfg.stamp_size
    if not isinstance(size, int) or size < 4:
        raise BadValueError(f"--size must be an integer >= 4 pixels, got {size!r}")
    if not 0 < cfg.crop_fraction <= 1:
        raise BadValueError(f"crop_fraction must be in (0, 1], got {cfg.crop_fraction}")
    if not images_dir.is_dir():
        raise MissingInputError(f"image folder {images_dir} does not exist (--images)")
    labels = _read_labels(labels_csv, cfg.id_column)
    files = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MissingInputError(f"image folder {images_dir} holds no {'/'.join(IMAGE_SUFFIXES)} files")

    by_key: dict[str, Path] = {}
    for p in files:
        k = _key(p.stem)
        if k in by_key:
            raise BadValueError(f"{images_dir}: files {by_key[k].name} and {p.name} have the same id {k}")
        by_key[k] = p
    label_keys = [_key(v) for v in labels[cfg.id_column]]
    dup = [k for k, c in Counter(label_keys).items() if c > 1]
    if dup:
        raise BadValueError(f"label table {labels_csv}: id {dup[0]!r} appears {label_keys.count(dup[0])} times")

    rej_rows: list[int] = []
    rej_ids: list[str] = []
    rej_reasons: list[str] = []
    matched: list[tuple[int, Path]] = []
    for i, k in enumerate(label_keys):
        p = by_key.get(k)
        if p is None:
            rej_rows.append(i), rej_ids.append(str(labels[cfg.id_column][i])), rej_reasons.append("no image file")
        else:
            matched.append((i, p))
    used = {p for _, p in matched}
    unlabelled = [p for p in files if p not in used]
    for p in unlabelled:
        rej_rows.append(-1), rej_ids.append(p.stem), rej_reasons.append(f"no label row: {p.name}")
    if unlabelled:
        warnings.warn(f"{len(unlabelled)} image(s) in {images_dir} have no row in {labels_csv} "
                      f"(e.g. {unlabelled[0].name}); recorded as rejected", EmptySelectionWarning, stacklevel=2)
    n_missing_files = len(label_keys) - len(matched)
    if n_missing_files:
        first = rej_ids[0]
        warnings.warn(f"{n_missing_files} label row(s) of {labels_csv} have no image in {images_dir} "
                      f"(e.g. id {first}); recorded as rejected", EmptySelectionWarning, stacklevel=2)
    if not matched:
        raise EmptySelectionError(
            f"no image in {images_dir} matches a row of {labels_csv} (column {cfg.id_column!r}); "
            f"e.g. file stem {files[0].stem!r} vs id {str(labels[cfg.id_column][0])!r}" if len(labels) else
            f"label table {labels_csv} has no rows")

    kept_rows: list[int] = []
    n_written = 0
    unreadable = 0
    first_error = ""
    batch: list[np.ndarray] = []
    batch_size = 256
    modes: Counter = Counter()
    with SampleWriter(workspace.sample, len(matched), BANDS, size, kind="images", pixel_scale_arcsec=None) as w:
        for i, p in tqdm(matched, disable=None if progress is None else not progress, desc="ingest", unit="image"):
            try:
                stamp = load_image_stamp(p, size, cfg.crop_fraction)
                modes[image_mode(p)] += 1
            except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for broken files
                unreadable += 1
                first_error = first_error or f"{p}: {exc}"
                rej_rows.append(i), rej_ids.append(str(labels[cfg.id_column][i]))
                why = str(exc) if str(exc).startswith(("unsupported image mode", "image has")) else type(exc).__name__
                rej_reasons.append(f"unreadable image: {p.name} ({why})")
                continue
            batch.append(stamp)
            kept_rows.append(i)
            if len(batch) == batch_size:
                arr = np.stack(batch)
                w.write(n_written, arr, arr)
                n_written += len(arr)
                batch = []
        if batch:
            arr = np.stack(batch)
            w.write(n_written, arr, arr)
            n_written += len(arr)
        if n_written == 0:
            raise BadValueError(f"none of the {len(matched)} matched images could be read; first: {first_error}")
        if unreadable:
            warnings.warn(f"{unreadable} unreadable image(s) rejected; first: {first_error}",
                          EmptySelectionWarning, stacklevel=2)
        w.truncate(n_written)
        catalog = labels[np.array(kept_rows, dtype=np.int64)]
        catalog["file"] = np.array([by_key[label_keys[i]].name for i in kept_rows])
        order = np.argsort(np.asarray(rej_rows, dtype=np.int64) % (2**62), kind="stable")  # -1 rows last
        rejected = Table({"row": np.asarray(rej_rows, dtype=np.int64)[order],
                          "id": np.asarray(rej_ids, dtype=str)[order],
                          "reason": np.asarray(rej_reasons, dtype=str)[order]}) if rej_rows else empty_rejected()
        reason_counts = dict(sorted(Counter(r.split(":")[0] for r in rej_reasons).items()))
        w.finish(
            catalog,
            rejected=rejected,
            stretch={"method": "identity",
                     "formula": "pixel values scaled to 0..1 by their bit depth (images are already stretched)",
                     "pixel_scaling": {m: image_scaling(m) for m in sorted(modes)},
                     "image_modes": dict(sorted(modes.items()))},
            columns={"id": cfg.id_column},
            inputs=[{"role": "labels", "path": str(labels_csv), "name": labels_csv.name,
                     "sha256": file_sha256(labels_csv)},
                    {"role": "images", "path": str(images_dir), "n_files": len(files),
                     "sha256_of_file_hashes": _folder_hash(files)}],
            extra={"crop_fraction": cfg.crop_fraction, "resize": "PIL Lanczos (antialiased)",
                   "n_files": len(files), "n_labels": len(labels), "n_unlabelled_files": len(unlabelled),
                   "n_missing_files": n_missing_files, "n_unreadable": unreadable,
                   "reason_counts": reason_counts, "galearn_version": __version__},
        )
    sample = open_sample(workspace.sample)
    update_metrics(workspace.metrics, {"sample": {
        "n_images": sample.n, "n_rejected": len(rejected), "bands": BANDS, "stamp_size": size,
        "kind": "images", "n_files": len(files), "n_labels": len(labels),
        "n_unlabelled_files": len(unlabelled), "n_missing_files": n_missing_files, "n_unreadable": unreadable,
        "rejection_reasons": reason_counts,
    }}, replace=("sample",))
    return sample


def _folder_hash(files: list[Path]) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode())
        h.update(file_sha256(p).encode())
    return h.hexdigest()
