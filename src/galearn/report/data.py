"""Everything the report shows, read from the workspace files (store API only).

:func:`load_report_data` gathers the map positions, the catalogue columns used
for colouring and for the hover table, the per-galaxy classes written by
``galearn classify``, the metrics and -- when present -- the GAN library and
its positions on the real map. Nothing here computes science beyond unit
conversions (log10 of mass and SFR, U-V and V-J colours) and the UVJ class
when ``classify`` has not written one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table

from ..errors import BadValueError, MissingInputError
from ..store import (Sample, Workspace, check_made_from, library_sample_checksum, open_sample, read_map,
                     read_metrics, read_table)
from ..survey.uvj import UVJ_COLUMN, uvj_class_of_catalog

__all__ = ["Field", "ReportData", "load_report_data", "align_ids"]

#: Most distinct values a string column may have to be offered as a colouring.
MAX_CATEGORIES = 30


@dataclass
class Field:
    """One per-galaxy quantity.

    Attributes
    ----------
    name : str
        Key (column name or a derived name such as ``log_mass``).
    label : str
        Human-readable label with units.
    kind : str
        ``"cat"`` (categorical, string values; ``""`` = no class) or ``"num"``
        (float, NaN = missing).
    values : numpy.ndarray
        One value per galaxy (map order).
    colour : bool
        Whether the field is offered as a map colouring.
    """

    name: str
    label: str
    kind: str
    values: np.ndarray
    colour: bool = True


@dataclass
class ReportData:
    """What the report draws; arrays are in map order (one row per mapped galaxy).

    ``index`` maps each row to its stamp in ``sample``.
    """

    ws: Workspace
    method: str
    sample: Sample
    index: np.ndarray
    ids: np.ndarray
    xy: np.ndarray
    fields: dict[str, Field]
    metrics: dict
    map_attrs: dict = field(default_factory=dict)
    library: Sample | None = None
    library_index: np.ndarray | None = None
    library_xy: np.ndarray | None = None
    library_labels: np.ndarray | None = None
    library_condition: str | None = None

    @property
    def n(self) -> int:
        return len(self.ids)

    def colourings(self) -> list[Field]:
        """Fields offered as map colourings, in display order."""
        return [f for f in self.fields.values() if f.colour and _has_values(f)]


def _has_values(f: Field) -> bool:
    if f.kind == "num":
        return bool(np.isfinite(f.values).any())
    return bool((f.values != "").any())


def align_ids(reference: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """Index into ``reference`` of every id in ``wanted`` (-1 where absent), vectorised."""
    reference = np.asarray(reference).astype(str)
    wanted = np.asarray(wanted).astype(str)
    if len(reference) == 0:
        return np.full(len(wanted), -1, dtype=np.int64)
    order = np.argsort(reference, kind="stable")
    pos = np.searchsorted(reference[order], wanted)
    pos = np.clip(pos, 0, len(reference) - 1)
    idx = order[pos]
    return np.where(reference[idx] == wanted, idx, -1).astype(np.int64)


def _float(col) -> np.ndarray:
    return np.ma.filled(np.ma.asarray(col, dtype="f8"), np.nan)


def _strings(col) -> np.ndarray:
    arr = np.ma.asarray(col)
    out = np.asarray(arr.astype(str)).astype(object)
    if np.ma.isMaskedArray(arr) and arr.mask is not np.ma.nomask:
        out[np.ma.getmaskarray(arr)] = ""
    return np.array([str(v) for v in out], dtype=str) if len(out) else np.zeros(0, dtype=str)


def _log10(values: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.log10(values)
    out[~np.isfinite(out)] = np.nan
    return out


def _is_label_column(col) -> bool:
    kind = np.asarray(col).dtype.kind
    if kind not in "USO":
        return False
    n_unique = len(np.unique(_strings(col)))
    return 1 < n_unique <= MAX_CATEGORIES


def _catalog_fields(cat: Table, columns: dict, rows: np.ndarray, classes: Table | None,
                    class_rows: np.ndarray | None) -> dict[str, Field]:
    """Colourings and hover columns from the catalogue and the classes table."""
    fields: dict[str, Field] = {}

    def role(name: str) -> str | None:
        col = columns.get(name)
        return col if col in cat.colnames else None

    sub = cat[rows] if len(cat) else cat

    # Classes written by `galearn classify` take precedence over recomputation.
    cls_cols: dict[str, np.ndarray] = {}
    if classes is not None and class_rows is not None:
        ok = class_rows >= 0
        for name in classes.colnames:
            if name.lower() in ("id", "x", "y", "map_x", "map_y"):
                continue
            col = classes[name]
            if np.asarray(col).dtype.kind in "USO":
                vals = np.full(len(rows), "", dtype=object)
                vals[ok] = _strings(col)[class_rows[ok]]
                cls_cols[name] = vals.astype(str)
            else:
                vals = np.full(len(rows), np.nan)
                vals[ok] = _float(col)[class_rows[ok]]
                cls_cols[name] = vals

    # UVJ class
    if UVJ_COLUMN in cls_cols:
        uvj = cls_cols.pop(UVJ_COLUMN)
    else:
        uvj = uvj_class_of_catalog(sub, columns)
    if uvj is not None:
        fields["uvj_class"] = Field("uvj_class", "UVJ class (Williams et al. 2009)", "cat", np.asarray(uvj, dtype=str))

    z = role("z")
    if z:
        fields["z"] = Field("z", f"redshift ({z})", "num", _float(sub[z]))
    mass = role("mass")
    if mass:
        fields["log_mass"] = Field("log_mass", f"log10 stellar mass / Msun ({mass})", "num", _log10(_float(sub[mass])))
    sfr = role("sfr")
    if sfr:
        fields["log_sfr"] = Field("log_sfr", f"log10 SFR / (Msun/yr) ({sfr})", "num", _log10(_float(sub[sfr])))

    # Cluster (from classify): the cluster column, its membership probability (numeric) and, for density
    # methods with outliers, the outlier flag; any other classes column whose name starts with "cluster".
    if "cluster_probability" in cls_cols:
        fields["cluster_probability"] = Field("cluster_probability", "cluster membership probability", "num",
                                              _float(cls_cols.pop("cluster_probability")))
    outlier = cls_cols.pop("cluster_outlier", None)
    if outlier is not None:
        flag = np.asarray(outlier, dtype="f8")  # 1 / 0, NaN where the galaxy has no classes row
        if np.nan_to_num(flag).any():
            fields["cluster_outlier"] = Field("cluster_outlier", "in no cluster (density outlier)", "cat",
                                              np.where(np.isnan(flag), "", np.where(flag > 0, "outlier", "member")))
    for name in list(cls_cols):
        if name.lower().startswith("cluster"):
            vals = cls_cols.pop(name)
            if np.asarray(vals).dtype.kind == "f":
                vals = np.where(np.isfinite(vals), np.char.mod("%d", np.nan_to_num(vals).astype(int)), "")
            fields[name] = Field(name, f"cluster ({name})", "cat", np.asarray(vals, dtype=str))

    # Truth and label columns (strings with few distinct values), truth_class first.
    names = sorted(cat.colnames, key=lambda c: (c != "truth_class", not c.startswith("truth_"), c))
    skip = {columns.get(r) for r in ("id", "ra", "dec")}
    for name in names:
        if name in skip or name in fields:
            continue
        if _is_label_column(cat[name]):
            fields[name] = Field(name, name, "cat", _strings(sub[name]))
    for name, vals in cls_cols.items():
        if name in fields:
            continue
        if np.asarray(vals).dtype.kind in "US":
            if 1 < len(np.unique(vals)) <= MAX_CATEGORIES:
                label = f"kNN prediction of {name[4:]} (cross-validated)" if name.startswith("knn_") else name
                fields[name] = Field(name, label, "cat", vals)
        else:
            fields[name] = Field(name, name, "num", vals, colour=False)

    # Hover-only columns.
    u, v, j = role("u_mag"), role("v_mag"), role("j_mag")
    if u and v:
        fields["u_v"] = Field("u_v", "U-V (rest-frame, AB mag)", "num", _float(sub[u]) - _float(sub[v]), colour=False)
    if v and j:
        fields["v_j"] = Field("v_j", "V-J (rest-frame, AB mag)", "num", _float(sub[v]) - _float(sub[j]), colour=False)
    for name in ("bulge_fraction", "half_light_radius_arcsec", "sersic_index"):
        if name in cat.colnames and name not in fields:
            fields[name] = Field(name, name, "num", _float(sub[name]), colour=False)
    for r, label in (("mag", "magnitude (AB)"),):
        col = role(r)
        if col and col not in fields:
            fields[col] = Field(col, f"{col}: {label}", "num", _float(sub[col]), colour=False)
    return fields


def load_report_data(ws: Workspace, method: str = "tsne") -> ReportData:
    """Read the sample, its map, classes, metrics and the GAN library of a workspace.

    Parameters
    ----------
    ws : Workspace
    method : str
        Map to show (``tsne``, ``umap``, ``pca``): ``WS/maps/<method>.h5``.

    Raises
    ------
    MissingInputError
        When the sample or the map is missing (the message names the command that makes it).
    """
    sample = open_sample(ws.require(ws.sample, "cutouts"))
    map_path = ws.map(method)
    if not map_path.exists():
        raise MissingInputError(f"{map_path} does not exist: run `galearn embed --method {method}` first")
    xy, map_ids, map_attrs = read_map(map_path)
    root = ws.root
    check_made_from(map_path, map_attrs.get("sample_checksum"), sample,
                    f"galearn embed --workspace {root} --method {method}` then `galearn classify --workspace {root}")
    xy = np.asarray(xy, dtype="f8")
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise BadValueError(f"{map_path}: embedding must be (N, 2), got shape {xy.shape}")
    sample_ids = sample.ids()
    index = align_ids(sample_ids, map_ids)
    keep = (index >= 0) & np.isfinite(xy).all(axis=1)
    if not keep.any():
        raise BadValueError(f"{map_path}: none of its {len(map_ids)} ids is in {sample.path}")
    index, xy, ids = index[keep], xy[keep], sample_ids[index[keep]]

    classes = class_rows = None
    if ws.classes.exists():
        classes = read_table(ws.classes)
        check_made_from(ws.classes, classes.meta.get("sample_checksum"), sample,
                        f"galearn classify --workspace {root}")
        id_col = next((c for c in classes.colnames if c.lower() == "id"), None)
        if id_col is not None:
            class_rows = align_ids(_strings(classes[id_col]), ids)
        elif len(classes) == sample.n:
            class_rows = index.copy()
        else:
            classes = None

    fields = {"id": Field("id", "id", "cat", ids, colour=False)}
    fields.update(_catalog_fields(sample.catalog, sample.columns, index, classes, class_rows))

    metrics = read_metrics(ws.metrics)
    check_made_from(f"{ws.metrics} (agreement, clusters)", (metrics.get("clusters") or {}).get("sample_checksum"),
                    sample, f"galearn classify --workspace {root}")
    data = ReportData(ws=ws, method=method, sample=sample, index=index, ids=ids, xy=xy,
                      fields=fields, metrics=metrics, map_attrs=map_attrs)

    if ws.library.exists():
        lib = open_sample(ws.library)
        check_made_from(ws.library, library_sample_checksum(lib), sample,
                        f"galearn gan train --workspace {root}` and `galearn gan sample --workspace {root}")
        data.library = lib
        cond = (data.metrics.get("gan") or {}).get("condition")
        cat = lib.catalog
        if cond not in cat.colnames:
            cond = next((c for c in ("condition", UVJ_COLUMN, "truth_class") if c in cat.colnames), None)
        data.library_condition = cond
        labels = _strings(cat[cond]) if cond else np.full(lib.n, "", dtype=str)
        lib_map = ws.library_map(method)
        if lib_map.exists():
            lxy, lids, lattrs = read_map(lib_map)
            check_made_from(lib_map, lattrs.get("sample_checksum"), lib,
                            f"galearn features --workspace {root} --library` and `galearn embed --workspace {root}")
            lidx = align_ids(lib.ids(), lids)
            ok = (lidx >= 0) & np.isfinite(lxy).all(axis=1)
            data.library_index = lidx[ok]
            data.library_xy = np.asarray(lxy, dtype="f8")[ok]
            data.library_labels = labels[lidx[ok]]
        else:
            data.library_index = np.arange(lib.n)
            data.library_labels = labels
    return data


def read_stamps_rgb(sample: Sample, index: np.ndarray, *, size: int | None = None,
                    crop: float = 1.0, batch_size: int = 1024) -> np.ndarray:
    """True-colour uint8 thumbnails ``(n, size, size, 3)`` of stamps ``index`` (in the order given).

    Stretched stamps go through :func:`galearn.imaging.stamps_to_rgb`
    (reddest band as R); ``crop`` keeps the central fraction of each stamp
    before resizing to ``size`` pixels (block average for integer factors,
    else Lanczos). The file is read in contiguous slices of ``batch_size``
    stamps (HDF5 point selections are slow), keeping only the wanted rows.
    """
    from PIL import Image

    from ..imaging import stamps_to_rgb

    index = np.asarray(index, dtype=np.int64)
    side = sample.stamp_size
    c = int(round(side * min(max(crop, 0.1), 1.0)))
    lo = (side - c) // 2
    size = int(size or c)
    out = np.empty((len(index), size, size, 3), dtype=np.uint8)
    if not len(index):
        return out
    order = np.argsort(index, kind="stable")
    sorted_idx = index[order]
    starts = np.arange(sorted_idx[0] // batch_size * batch_size, sorted_idx[-1] + 1, batch_size)
    for start in starts:
        a, b = np.searchsorted(sorted_idx, [start, start + batch_size])
        if a == b:
            continue
        rows = sorted_idx[a:b]
        block = sample.read("stretched", slice(int(rows[0]), int(rows[-1]) + 1))
        rgb = stamps_to_rgb(block[rows - rows[0]], sample.bands)[:, lo:lo + c, lo:lo + c]
        if size == c:
            small = rgb
        elif c % size == 0:  # integer factor: block average, vectorised
            f = c // size
            small = rgb.reshape(len(rows), size, f, size, f, 3).mean(axis=(2, 4)).round().astype(np.uint8)
        else:
            small = np.stack([np.asarray(Image.fromarray(im).resize((size, size), Image.LANCZOS)) for im in rgb])
        out[order[a:b]] = small
    return out
