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

__all__ = ["condition_labels", "gan_condition", "class_condition", "split_cells", "redshift_bin_edges",
           "redshift_bin_labels", "REDSHIFT_BIN", "make_split", "load_or_make_split", "read_split", "stratified_like",
           "capped_counts", "training_rows"]

#: Catalogue column of the generated library that holds each stamp's redshift bin (``gan.redshift_bins``).
REDSHIFT_BIN = "redshift_bin"

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


def redshift_bin_edges(sample: Sample, bins: tuple | list) -> tuple[float, ...]:
    """Redshift bin edges for ``gan.redshift_bins``.

    ``()``: no redshift conditioning. ``(n,)``: ``n`` bins of about equal
    count over the sample's finite redshifts (the ``z`` role), edges rounded
    to 0.01 and widened outwards so that every galaxy falls in a bin.
    Two or more numbers: those edges (strictly increasing, ``>= 0``).
    """
    bins = tuple(bins or ())
    if not bins:
        return ()
    col = sample.column("z")
    if col is None:
        raise BadValueError(f"gan.redshift_bins={list(bins)}: {sample.path} has no redshift column (role z); "
                            f"leave gan.redshift_bins empty")
    if len(bins) == 1:
        n = bins[0]
        if isinstance(n, bool) or not isinstance(n, (int, float)) or n != int(n) or not 2 <= n <= 10:
            raise BadValueError(f"gan.redshift_bins={list(bins)}: one number is a count of equal-count bins, 2 to 10; "
                                f"or give two or more bin edges")
        z = np.asarray(np.ma.filled(np.ma.asarray(sample.catalog[col], dtype="f8"), np.nan))
        z = z[np.isfinite(z)]
        if len(z) < 2 * int(n):
            raise BadValueError(f"gan.redshift_bins={int(n)}: {sample.path} has only {len(z)} finite redshifts "
                                f"in column {col!r}")
        edges = np.round(np.quantile(z, np.linspace(0.0, 1.0, int(n) + 1)), 2)
        edges[0], edges[-1] = np.floor(z.min() * 100) / 100, np.ceil(z.max() * 100) / 100
        edges = np.unique(edges)
        if len(edges) < 3:
            raise BadValueError(f"gan.redshift_bins={int(n)}: the redshifts in {sample.path} column {col!r} "
                                f"do not split into two or more bins")
        return tuple(float(e) for e in edges)
    if any(isinstance(e, bool) or not isinstance(e, (int, float)) or not np.isfinite(e) or e < 0 for e in bins) \
            or np.any(np.diff(np.asarray(bins, dtype="f8")) <= 0):
        raise BadValueError(f"gan.redshift_bins={list(bins)}: bin edges must be strictly increasing redshifts >= 0")
    return tuple(float(e) for e in bins)


def redshift_bin_labels(z: np.ndarray, edges: tuple | list) -> np.ndarray:
    """Label ``"z0.50-1.20"`` per redshift (``[lo, hi)``, the last bin closed); ``""`` outside the edges or not finite."""
    z = np.asarray(np.ma.filled(np.ma.asarray(z, dtype="f8"), np.nan))
    edges = np.asarray(edges, dtype="f8")
    names = np.array([f"z{lo:.2f}-{hi:.2f}" for lo, hi in zip(edges[:-1], edges[1:])] + [""])
    inside = np.isfinite(z) & (z >= edges[0]) & (z <= edges[-1])
    k = np.clip(np.searchsorted(edges, np.where(inside, z, edges[0]), side="right") - 1, 0, len(edges) - 2)
    return np.where(inside, names[k], "").astype(str)


def class_condition(condition: str | None) -> str | None:
    """The class column of a GAN condition name: ``"uvj_class+redshift_bin"`` -> ``"uvj_class"``; others unchanged."""
    suffix = "+" + REDSHIFT_BIN
    return condition[: -len(suffix)] if condition and condition.endswith(suffix) else condition


def split_cells(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Joint labels ``"<class> <bin>"`` of :func:`gan_condition` -> their classes and redshift bins (string arrays)."""
    parts = np.char.rpartition(np.asarray(labels, dtype=str), " ")
    return parts[..., 0], parts[..., 2]


def gan_condition(sample: Sample, condition: str | None, redshift_edges: tuple | list = ()) -> tuple[str, np.ndarray]:
    """The GAN's condition name and labels: :func:`condition_labels`, joined with the redshift bin when binned.

    With ``redshift_edges`` (:func:`redshift_bin_edges`) the name is
    ``"<condition>+redshift_bin"`` and each label ``"<class> <bin>"`` (e.g.
    ``"SF z0.50-1.20"``); a stamp with no class or outside the edges gets
    ``""`` (not trained on). ``condition`` may also be such a joined name
    (as stored in the checkpoint and ``gan/split.json``).
    """
    base = class_condition(condition)
    name, labels = condition_labels(sample, base)
    if not redshift_edges:
        if base != condition:
            raise BadValueError(f"condition {condition!r} needs the redshift bin edges it was trained with")
        return name, labels
    zbin = redshift_bin_labels(sample.catalog[sample.column("z")], redshift_edges)
    joint = np.where((labels != "") & (zbin != ""), np.char.add(np.char.add(labels, " "), zbin), "")
    return f"{name}+{REDSHIFT_BIN}", joint.astype(str)


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


def stratified_like(labels: np.ndarray, pool: np.ndarray, target_counts: dict[str, int], rng: np.random.Generator) -> np.ndarray:
    """Indices from ``pool`` with (at most) ``target_counts[c]`` rows of each class ``c``, sorted."""
    out = []
    for c, n in target_counts.items():
        cand = pool[labels[pool] == c]
        out.append(cand[rng.permutation(len(cand))[: min(n, len(cand))]])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, np.int64)


def capped_counts(counts: dict[str, int], max_n: int | None) -> dict[str, int]:
    """Per-class ``counts`` as they are, or (over ``max_n`` in all) scaled to about ``max_n``: each class its share,
    rounded down, and at least one."""
    total = sum(counts.values())
    if max_n is None or total <= max_n:
        return dict(counts)
    scale = max_n / total
    return {c: max(1, int(n * scale)) for c, n in counts.items()}


def training_rows(labels: np.ndarray, train: np.ndarray, max_n: int | None, random_state: int) -> np.ndarray:
    """The training rows the GAN learns from: all of ``train``, or at most ``max_n`` of them (``gan.train_max_n``).

    Beyond ``max_n`` rows each class keeps its share (at least one row), drawn with a generator of its
    own from ``random_state``, so a survey of millions trains on a seeded, class-stratified subset that
    fits in memory (the stamps are read whole; ``float32`` ``C x H x W`` each). Sorted row indices.
    """
    train = np.asarray(train)
    if max_n is None or len(train) <= max_n:
        return train
    target = capped_counts(dict(zip(*np.unique(labels[train], return_counts=True))), max_n)
    return stratified_like(labels, train, target, np.random.default_rng([int(random_state), 912]))


def load_or_make_split(ws: Workspace, sample: Sample, condition: str, labels: np.ndarray, *,
                       heldout_fraction: float, random_state: int, redshift_edges: tuple | list = ()) -> dict:
    """Read ``WS/gan/split.json`` when it matches this sample/condition/seed, else make and write it."""
    key = {"sample_checksum": sample.checksum, "condition": condition, "heldout_fraction": heldout_fraction,
           "random_state": random_state, "redshift_edges": [float(e) for e in redshift_edges]}
    path = ws.gan_split
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        if all(stored.get(k, [] if k == "redshift_edges" else None) == v for k, v in key.items()):
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
    out["redshift_edges"] = tuple(doc.get("redshift_edges") or ())
    return out


def _from_json(doc: dict) -> dict:
    return {"classes": list(doc["classes"]),
            **{k: np.asarray(doc[k], dtype=np.int64) for k in ("heldout", "balanced_test", "train")}}
