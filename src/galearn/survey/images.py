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


def load_image_stamp(path: str | os.PathLike, size: int, crop_fraction: float) -> np.ndarray:
    """One image -> float32 ``(3, size, size)`` in [0, 1] (R, G, B).

    The central square of side ``crop_fraction * min(width, height)`` is
    resampled to ``size`` x ``size`` with a Lanczos filter (Pillow scales the
    filter support when shrinking, i.e. antialiased).

    Raises
    ------
    OSError
        Pillow cannot read the file (``PIL.UnidentifiedImageError`` is an OSError).
    """
    from PIL import Image

    with Image.open(path) as img:
        img.load()
        rgb = img.convert("RGB")
    w, h = rgb.size
    side = crop_fraction * min(w, h)
    cx, cy = w / 2.0, h / 2.0
    box = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
    out = rgb.resize((size, size), resample=Image.Resampling.LANCZOS, box=box)
    return np.asarray(out, dtype=np.float32).transpose(2, 0, 1) / 255.0


def _read_labels(labels_csv: Path, id_column: str) -> Table:
    if not labels_csv.exists():
        raise MissingInputError(f"label table {labels_csv} does not exist")
    try:
        table = Table.read(labels_csv, format="ascii.csv")
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
    with SampleWriter(workspace.sample, len(matched), BANDS, size, kind="images", pixel_scale_arcsec=None) as w:
        for i, p in tqdm(matched, disable=None if progress is None else not progress, desc="ingest", unit="image"):
            try:
                stamp = load_image_stamp(p, size, cfg.crop_fraction)
            except (OSError, ValueError, SyntaxError) as exc:  # PIL raises these for broken files
                unreadable += 1
                first_error = first_error or f"{p}: {exc}"
                rej_rows.append(i), rej_ids.append(str(labels[cfg.id_column][i]))
                rej_reasons.append(f"unreadable image: {p.name} ({type(exc).__name__})")
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
            stretch={"method": "identity", "formula": "8-bit pixel values / 255 (images are already stretched)"},
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
