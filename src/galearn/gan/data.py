"""Condition labels and the held-out split of the GAN (per-step seeds: :func:`galearn.runtime.derive_seed`).

The held-out split is drawn BEFORE training and stored in ``WS/gan/split.json``
so that the real stamps used to evaluate the generator (realism metrics and the
balancing test set) were never shown to it.
"""

from __future__ import annotations

import json

import numpy as np

from ..errors import BadValueError, MissingInputError
from ..store import Sample, Workspace, atomic_write_text
from ..survey.uvj import UVJ_COLUMN, uvj_class_of_catalog

__all__ = ["condition_labels", "make_split", "load_or_make_split", "read_split"]

_NO_CLASS = {"", "nan", "none", "--", "n/a", "null"}


def condition_labels(sample: Sample, condition: str | None) -> tuple[str, np.ndarray]:
    """The condition column's name and its labels per stamp (``""``: no class).

    Parameters
    ----------
    sample : Sample
        The real sample.
    condition : str or None
        A categorical catalogue column. None: the UVJ class
        (:func:`galearn.survey.uvj.uvj_class_of_catalog`) when the catalogue has
        rest-frame U, V, J and redshift columns, otherwise ``truth_class``.
        ``"uvj_class"`` asks for the UVJ class explicitly.

    Returns
    -------
    name : str
        The column name used (``"uvj_class"`` for the UVJ class).
    labels : ndarray of str, shape (N,)
        One label per stamp; masked, empty or NaN entries become ``""`` and
        are excluded from training.
    """
    cat = sample.catalog
    if condition is None or condition == UVJ_COLUMN:
        if UVJ_COLUMN in cat.colnames:
            return UVJ_COLUMN, _as_labels(cat[UVJ_COLUMN], UVJ_COLUMN, sample.path)
        uvj = uvj_class_of_catalog(cat, sample.columns)
        if uvj is not None and np.any(uvj != ""):
            return UVJ_COLUMN, np.asarray(uvj, dtype=str)
        if condition is not None:
            raise BadValueError(
                f"--condition {UVJ_COLUMN}: {sample.path} has no usable rest-frame U, V, J and redshift "
                f"columns (roles u_mag, v_mag, j_mag, z); pick a label column instead"
            )
        if "truth_class" not in cat.colnames:
            raise BadValueError(
                f"{sample.path}: no UVJ colours and no truth_class column to condition the GAN on; "
                f"pass --condition COLUMN (columns: {', '.join(cat.colnames)})"
            )
        condition = "truth_class"
    if condition not in cat.colnames:
        raise BadValueError(
            f"--condition {condition!r} is not a column of {sample.path}; columns: {', '.join(cat.colnames)}"
        )
    return condition, _as_labels(cat[condition], condition, sample.path)


def _as_labels(column, name: str, path) -> np.ndarray:
    values = np.ma.asarray(column)
    mask = np.ma.getmaskarray(values)
    data = np.asarray(np.ma.getdata(values))
    if data.dtype.kind == "f":
        finite = data[np.isfinite(data) & ~mask]
        if finite.size and np.any(finite != np.round(finite)):
            raise BadValueError(
                f"--condition {name!r} in {path} holds non-integer numbers; the GAN conditions on a categorical "
                f"column (e.g. uvj_class, truth_class)"
            )
        labels = np.array(["" if (m or not np.isfinite(v)) else str(int(v)) for v, m in zip(data, mask)])
    else:
        labels = np.array(["" if m else str(v).strip() for v, m in zip(data.tolist(), mask)], dtype=object)
        labels = np.array(["" if s.lower() in _NO_CLASS else s for s in labels], dtype=str)
    n_classes = len(set(labels.tolist()) - {""})
    if n_classes == 0:
        raise BadValueError(f"--condition {name!r} in {path} has no labelled rows")
    if n_classes > 64:
        raise BadValueError(f"--condition {name!r} in {path} has {n_classes} distinct values; expected a categorical column")
    return labels.astype(str)


def make_split(labels: np.ndarray, *, heldout_fraction: float, random_state: int) -> dict:
    """Stratified held-out set plus a class-balanced test subset of it.

    Parameters
    ----------
    labels : ndarray of str, shape (N,)
        Condition labels (``""``: no class, never held out, never trained on).
    heldout_fraction : float
        Fraction of every class held out (at least one stamp per class with >= 2 stamps).
    random_state : int
        Seed; same seed, same split.

    Returns
    -------
    dict
        ``heldout``: stamp indices held out from GAN training (stratified, so it
        follows the real class mix); ``balanced_test``: the largest class-balanced
        subset of ``heldout``; ``train``: labelled stamps the GAN may see;
        ``classes``: sorted class names.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise BadValueError(f"gan.heldout_fraction must be in (0, 1), got {heldout_fraction}")
    labels = np.asarray(labels, dtype=str)
    classes = sorted(set(labels.tolist()) - {""})
    rng = np.random.default_rng([int(random_state), 101])
    held: dict[str, np.ndarray] = {}
    for c in classes:
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_held = 0 if len(idx) < 2 else max(1, int(round(heldout_fraction * len(idx))))
        held[c] = idx[:n_held]
    m = min(len(v) for v in held.values()) if held else 0
    heldout = np.sort(np.concatenate([held[c] for c in classes])) if classes else np.zeros(0, int)
    balanced = np.sort(np.concatenate([held[c][:m] for c in classes])) if classes else np.zeros(0, int)
    train = np.setdiff1d(np.flatnonzero(labels != ""), heldout)
    return {"classes": classes, "heldout": heldout, "balanced_test": balanced, "train": train}


def load_or_make_split(ws: Workspace, sample: Sample, condition: str, labels: np.ndarray, *,
                       heldout_fraction: float, random_state: int) -> dict:
    """Read ``WS/gan/split.json`` when it matches this sample/condition/seed, else make and write it."""
    key = {"sample_checksum": sample.checksum, "condition": condition, "heldout_fraction": heldout_fraction,
           "random_state": random_state}
    path = ws.gan_split
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if all(stored.get(k) == v for k, v in key.items()):
            return _from_json(stored)
    split = make_split(labels, heldout_fraction=heldout_fraction, random_state=random_state)
    ids = sample.ids()
    doc = dict(key)
    doc["classes"] = split["classes"]
    for name in ("heldout", "balanced_test", "train"):
        doc[name] = split[name].tolist()
        doc[f"{name}_ids"] = ids[split[name]].tolist()
    atomic_write_text(path, json.dumps(doc, indent=1) + "\n")
    return split


def read_split(ws: Workspace) -> dict:
    """The split written by ``galearn gan train``."""
    path = ws.gan_split
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run `galearn gan train` first")
    doc = json.loads(path.read_text(encoding="utf-8"))
    out = _from_json(doc)
    out.update({k: doc[k] for k in ("sample_checksum", "condition")})
    return out


def _from_json(doc: dict) -> dict:
    return {"classes": list(doc["classes"]),
            **{k: np.asarray(doc[k], dtype=np.int64) for k in ("heldout", "balanced_test", "train")}}
