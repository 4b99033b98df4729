"""Galaxies like this one: nearest neighbours of a galaxy in feature space."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from astropy.table import QTable, Table

from ..errors import BadValueError
from ..maps.reduce import MAX_COMPONENTS_DEFAULT, check_features, reduce_features
from ..runtime import blas_threads
from ..store import Features, Workspace

__all__ = ["similar_galaxies"]


def similar_galaxies(
    source,
    galaxy_id,
    k: int = 10,
    *,
    backbone: str | None = None,
    ids=None,
    catalog: Table | None = None,
    random_state=0,
) -> QTable:
    """The ``k`` galaxies nearest to ``galaxy_id`` in feature space.

    Distances are Euclidean in the space every galearn metric uses: features
    standardised to unit variance and projected onto at most 50 principal
    components (dimensionless units).

    Parameters
    ----------
    source : Workspace, path-like, store.Features or array-like
        A workspace (or its folder): its primary feature file (``backbone``,
        else the one ``galearn features`` recorded) and its catalogue. Or a
        :class:`galearn.store.Features` (``values`` + ``ids``), or an ``(N, D)``
        array together with ``ids``.
    galaxy_id : str or int
        The galaxy to look up (compared as a string with the ``id`` column).
    k : int
        Number of neighbours (the galaxy itself is not among them).
    backbone : str, optional
        Feature file of a workspace to use.
    ids : array-like, optional
        Galaxy ids, required when ``source`` is a plain array.
    catalog : astropy.table.Table, optional
        Catalogue rows in feature order, appended to the result (taken from
        the workspace's sample when ``source`` is a workspace).
    random_state : int or None
        Seed of the PCA solver.

    Returns
    -------
    astropy.table.QTable
        ``rank`` (1 = nearest), ``id``, ``distance`` and the neighbours'
        catalogue rows; ``meta`` holds the query id, backbone and space.

    Raises
    ------
    BadValueError
        Unknown or duplicated id, ``k`` out of range, shapes that do not match.
    """
    meta = {"query_id": str(galaxy_id), "space": "standardised features, PCA <= 50 components"}
    if isinstance(source, (Workspace, str, os.PathLike)):
        from ..store import load_features, require_sample, resolve_backbone

        ws = source if isinstance(source, Workspace) else Workspace(Path(source))
        sample = require_sample(ws)
        backbone = resolve_backbone(ws, backbone)
        feats = load_features(ws, backbone, sample=sample)
        values, ids = feats.values, feats.ids
        if catalog is None:
            from ..survey.uvj import UVJ_COLUMN, uvj_class_of_catalog

            catalog = sample.catalog.copy(copy_data=False)
            id_column = sample.column("id")
            if id_column is not None:
                del catalog[id_column]  # shown as ``id``
            uvj = uvj_class_of_catalog(sample.catalog, sample.columns)
            if uvj is not None and UVJ_COLUMN not in catalog.colnames:
                catalog[UVJ_COLUMN] = uvj
            meta["roles"] = {r: c for r, c in sample.columns.items() if c in catalog.colnames}
        meta["backbone"] = backbone
    elif isinstance(source, Features):
        values, ids = source.values, source.ids if ids is None else ids
        if "backbone" in source.attrs:
            meta["backbone"] = source.attrs["backbone"]
    else:
        values = source
        if ids is None:
            raise BadValueError("similar_galaxies: pass ids=... with a plain feature array")
    values = check_features(values)
    ids = np.asarray(ids).astype(str)
    n = len(values)
    if len(ids) != n:
        raise BadValueError(f"{len(ids)} ids for {n} feature vectors")
    if catalog is not None and len(catalog) != n:
        raise BadValueError(f"catalogue has {len(catalog)} rows for {n} feature vectors")
    k = int(k)
    if not 1 <= k <= n - 1:
        raise BadValueError(f"--k must be between 1 and {n - 1} (the other galaxies), got {k}")
    where = np.flatnonzero(ids == str(galaxy_id))
    if len(where) == 0:
        examples = ", ".join(ids[:5])
        raise BadValueError(f"no galaxy with id {galaxy_id!r} (option --id); ids look like: {examples}, ...")
    if len(where) > 1:
        raise BadValueError(f"id {galaxy_id!r} appears {len(where)} times (rows {where.tolist()[:5]})")
    row = int(where[0])

    with blas_threads(1):
        Z, _ = reduce_features(values, max_components=MAX_COMPONENTS_DEFAULT, random_state=random_state)
    d = np.sqrt(np.sum((Z - Z[row]) ** 2, axis=1))
    d[row] = np.inf
    nearest = np.argpartition(d, k - 1)[:k]
    nearest = nearest[np.lexsort((nearest, d[nearest]))]  # by distance, ties by row

    out = QTable()
    out["rank"] = np.arange(1, k + 1)
    out["id"] = ids[nearest]
    out["distance"] = d[nearest]
    out["row"] = nearest
    if catalog is not None:
        rows = catalog[nearest]
        for name in rows.colnames:
            if name in out.colnames and np.array_equal(np.asarray(rows[name]).astype(str), out[name]):
                continue  # the id column itself
            target = name if name not in out.colnames else f"catalog_{name}"
            out[target] = rows[name]
    out.meta.update(meta)
    return out
