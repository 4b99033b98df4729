"""Report figures (matplotlib, Agg backend), each written as ``WS/report/<name>.png``.

* ``thumbnail_map.png`` -- true-colour stamps at their map positions, one per
  cell of a ``grid x grid`` lattice (the galaxy nearest each cell's centre),
  so dense regions do not pile up (cf. the t-SNE thumbnail grids of
  Astronomaly, Lochner & Bassett 2021);
* ``map_colourings.png`` -- the map coloured by UVJ class, redshift, stellar
  mass, SFR, cluster and truth / label classes (one panel each);
* ``uvj_diagram.png`` -- U-V against V-J coloured by cluster, with the
  Williams et al. (2009) quiescent box per redshift bin;
* ``confusion.png`` -- confusion matrices from ``metrics.json``;
* with a GAN library: ``library_map.png`` (the library placed on the real
  map beside the real thumbnail map), ``class_grids.png`` (real against
  generated stamps per class) and ``morphology.png`` (histograms of the
  morphology statistics, real against generated, where the GAN evaluation
  stored them).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path

import numpy as np

__all__ = [
    "thumbnail_cells",
    "thumbnail_mosaic",
    "square_extent",
    "category_colours",
    "viridis_hex",
    "agreement_entries",
    "agreement_label",
    "confusion_of",
    "morphology_samples",
    "morphology_histograms",
    "write_figures",
]

# Fixed colours for well-known classes; other categories cycle through tab10/tab20.
_FIXED = {
    "quiescent": "#d62728",
    "star-forming": "#1f77b4",
    "elliptical": "#d62728",
    "early-type": "#d62728",
    "spiral": "#1f77b4",
    "disk": "#1f77b4",
    "edge-on": "#17becf",
    "irregular": "#2ca02c",
    "merger": "#9467bd",
    "star": "#bcbd22",
}
_CYCLE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]
MISSING_COLOUR = "#b0b0b0"
AGREEMENT_KEYS = ("knn_balanced_accuracy", "linear_balanced_accuracy", "ari", "nmi", "cluster_accuracy")


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


# --------------------------------------------------------------------------- geometry


def square_extent(xy: np.ndarray, pad: float = 0.03, clip: float = 0.5) -> tuple[float, float, float]:
    """``(x0, y0, side)`` of a square box around the points (map units).

    The box spans the ``clip``-th to ``(100 - clip)``-th percentile of each axis
    (so a few outliers do not shrink the populated part of the map), is made
    square about its centre and padded by ``pad`` of its side.
    """
    xy = np.asarray(xy, dtype="f8")
    xy = xy[np.isfinite(xy).all(axis=1)]
    lo, hi = np.percentile(xy, [clip, 100 - clip], axis=0) if len(xy) else (np.zeros(2), np.ones(2))
    side = float(max(hi - lo)) or 1.0
    side *= 1 + 2 * pad
    centre = (lo + hi) / 2
    return float(centre[0] - side / 2), float(centre[1] - side / 2), side


def thumbnail_cells(
    xy: np.ndarray, grid: int, extent: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pick one galaxy per cell of a ``grid x grid`` lattice over the map.

    Each point is snapped to the cell containing it; per occupied cell the
    point nearest the cell centre is kept (vectorised: one lexsort).

    Parameters
    ----------
    xy : array (N, 2)
        Map positions (x, y), map units.
    grid : int
        Cells per side.
    extent : (x0, y0, side), optional
        Square box covered by the lattice (default :func:`square_extent` of ``xy``).
        Points outside it are ignored.

    Returns
    -------
    chosen : int array (M,)
        Indices into ``xy`` of the kept galaxies, one per occupied cell.
    col, row : int arrays (M,)
        Cell of each kept galaxy: ``col`` from the left, ``row`` from the
        bottom (y increases upwards).
    """
    xy = np.asarray(xy, dtype="f8")
    grid = int(grid)
    if grid < 1:
        raise ValueError(f"thumbnail grid must be >= 1 cell per side, got {grid}")
    x0, y0, side = extent if extent is not None else square_extent(xy)
    w = side / grid
    fx = (xy[:, 0] - x0) / w
    fy = (xy[:, 1] - y0) / w
    inside = np.isfinite(fx) & np.isfinite(fy) & (fx >= 0) & (fy >= 0) & (fx <= grid) & (fy <= grid)
    idx = np.flatnonzero(inside)
    col = np.minimum(fx[idx].astype(np.int64), grid - 1)
    row = np.minimum(fy[idx].astype(np.int64), grid - 1)
    d2 = (fx[idx] - col - 0.5) ** 2 + (fy[idx] - row - 0.5) ** 2
    cell = row * grid + col
    order = np.lexsort((d2, cell))
    _, first = np.unique(cell[order], return_index=True)
    pick = order[first]
    return idx[pick], col[pick], row[pick]


def thumbnail_mosaic(
    rgb: np.ndarray, col: np.ndarray, row: np.ndarray, grid: int, background: int = 0
) -> np.ndarray:
    """Place thumbnails ``(M, px, px, 3)`` into a ``(grid*px, grid*px, 3)`` uint8 image (row 0 at the bottom)."""
    m, px = rgb.shape[0], rgb.shape[1]
    canvas = np.full((grid, px, grid, px, 3), background, dtype=np.uint8)
    if m:
        canvas[grid - 1 - np.asarray(row), :, np.asarray(col)] = rgb
    return canvas.reshape(grid * px, grid * px, 3)


# --------------------------------------------------------------------------- colours


def category_colours(values: Iterable[str]) -> dict[str, str]:
    """Hex colour per category (``""`` = no class -> grey); fixed colours for known classes."""
    cats = sorted({str(v) for v in values} - {""})
    out: dict[str, str] = {}
    used = set()
    for c in cats:
        if c.lower() in _FIXED and _FIXED[c.lower()] not in used:
            out[c] = _FIXED[c.lower()]
            used.add(out[c])
    free = [c for c in _CYCLE if c not in used]
    for i, c in enumerate(c for c in cats if c not in out):
        out[c] = free[i % len(free)]
    out[""] = MISSING_COLOUR
    return out


def viridis_hex(n: int = 64) -> list[str]:
    """``n`` hex colours of matplotlib's viridis, low to high."""
    import matplotlib

    cmap = matplotlib.colormaps["viridis"]
    return [matplotlib.colors.to_hex(cmap(i / (n - 1))) for i in range(n)]


def _num_range(values: np.ndarray) -> tuple[float, float]:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [1, 99])
    return (float(lo), float(hi)) if hi > lo else (float(v.min()), float(v.max()) + 1e-9)


# --------------------------------------------------------------------------- metrics helpers


def agreement_entries(metrics: dict) -> list[tuple[str, dict]]:
    """``(label, metrics)`` for every agreement record in ``metrics.json``.

    A record is a dictionary holding any of the agreement keys
    (``knn_balanced_accuracy`` ...). They are searched under ``agreement``
    (the primary backbone), ``agreement_by_backbone`` (every other feature file,
    e.g. the random-weights baseline) and ``baseline``, at any depth.
    """
    out: list[tuple[str, dict]] = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if any(k in node for k in AGREEMENT_KEYS):
            out.append((".".join(path), node))
            return
        for k, v in node.items():
            walk(v, path + [str(k)])

    for top in ("agreement", "agreement_by_backbone", "baseline"):
        if top in metrics:
            walk(metrics[top], [top])
    return out


def _matrix(mat, rows=None, cols=None):
    try:
        mat = np.asarray(mat, dtype="f8")
    except (TypeError, ValueError):
        return None
    if mat.ndim != 2 or mat.size == 0:
        return None
    rows = [str(v) for v in rows] if rows is not None else None
    cols = [str(v) for v in cols] if cols is not None else None
    if rows is None or len(rows) != mat.shape[0]:
        rows = [str(i) for i in range(mat.shape[0])]
    if cols is None or len(cols) != mat.shape[1]:
        cols = rows if mat.shape[0] == mat.shape[1] else [str(i) for i in range(mat.shape[1])]
    return mat, rows, cols


def agreement_label(metrics: dict, label: str) -> str:
    """``backbone: column`` for an :func:`agreement_entries` label (primary backbone from ``features.backbone``)."""
    path = label.split(".")
    if path[0] == "agreement" and len(path) == 2:
        primary = (metrics.get("features") or {}).get("backbone")
        return f"{primary}: {path[1]}" if primary else path[1]
    if path[0] == "agreement_by_backbone" and len(path) == 3:
        return f"{path[1]}: {path[2]}"
    return label


def confusion_of(record: dict) -> list[tuple[str, np.ndarray, list[str], list[str]]]:
    """Confusion matrices of an agreement record: ``[(kind, matrix, row_labels, col_labels)]``.

    Understands the layout of :func:`galearn.evaluate.agreement_metrics`
    (``{"classes": [..], "knn": [[..]], "linear": [[..]], "clusters": {"rows", "columns", "counts"}}``),
    a plain list of lists, ``{"matrix"|"counts": [[..]], "labels"|"classes": [..]}`` and a nested
    mapping ``{true_class: {cluster: count}}``. Unknown layouts give ``[]``.
    """
    conf = record.get("confusion")
    out = []
    if conf is None:
        return out
    if isinstance(conf, list):
        got = _matrix(conf, record.get("classes"), record.get("classes"))
        return [("", *got)] if got else out
    if not isinstance(conf, dict):
        return out
    classes = conf.get("classes") or conf.get("labels") or record.get("classes")
    for kind, title in (("clusters", "clusters vs classes"), ("knn", "kNN prediction (rows: true)")):
        node = conf.get(kind)
        if isinstance(node, dict):
            mat = next((node[k] for k in ("counts", "matrix", "values") if k in node), None)
            got = _matrix(mat, node.get("rows"), node.get("columns")) if mat is not None else None
        elif isinstance(node, list):
            got = _matrix(node, classes, classes)
        else:
            got = None
        if got:
            out.append((title, *got))
    if out:
        return out
    mat = next((conf[k] for k in ("matrix", "counts", "values", "confusion") if k in conf), None)
    rows = cols = None
    if mat is None and conf and all(isinstance(v, dict) for v in conf.values()):
        rows = [str(k) for k in conf]
        cols = sorted({str(c) for v in conf.values() for c in v})
        mat = [[conf[r].get(c, 0) for c in cols] for r in conf]
    if mat is None:
        return out
    rows = rows or next((conf[k] for k in ("labels", "classes", "rows", "true", "row_labels") if k in conf), None)
    cols = cols or next((conf[k] for k in ("clusters", "columns", "predicted", "col_labels") if k in conf), None)
    got = _matrix(mat, rows, cols)
    return [("", *got)] if got else out


def morphology_histograms(gan: dict) -> dict[str, dict]:
    """Per-statistic histograms stored by the GAN evaluation, searched anywhere under ``gan``.

    The layout of :func:`galearn.morphology.statistic_histograms`:
    ``{statistic: {"edges": [...], "<set>": {"counts": [...], ...}, ...}}`` with at least two sets.
    """
    found: dict[str, dict] = {}

    def walk(node):
        if not isinstance(node, dict):
            return
        hits = {k: v for k, v in node.items()
                if isinstance(v, dict) and isinstance(v.get("edges"), list)
                and sum(isinstance(s, dict) and "counts" in s for s in v.values()) >= 2}
        if hits:
            found.update({str(k): v for k, v in hits.items()})
            return
        for v in node.values():
            walk(v)

    walk(gan or {})
    return found


_MORPH_KEYS = ("gini", "m20", "concentration", "asymmetry", "half_light_radius", "r_half", "ellipticity")


def morphology_samples(gan: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-statistic ``(real, generated)`` value arrays found in the ``gan`` metrics.

    Looks for ``{stat: {"real": [...], "generated"|"fake"|"gan": [...]}}`` under
    ``gan["morphology"]``, ``gan["morphology_values"]`` or ``gan["morphology_samples"]``.
    Missing pieces give an empty result (the figure is skipped).
    """
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for key in ("morphology_samples", "morphology_values", "morphology", "morphology_statistics"):
        node = gan.get(key)
        if not isinstance(node, dict):
            continue
        for stat, rec in node.items():
            if not isinstance(rec, dict):
                continue
            real = rec.get("real")
            gen = next((rec[k] for k in ("generated", "fake", "gan", "library") if k in rec), None)
            if isinstance(real, list) and isinstance(gen, list) and len(real) > 1 and len(gen) > 1:
                try:
                    out[str(stat)] = (np.asarray(real, dtype="f8"), np.asarray(gen, dtype="f8"))
                except (TypeError, ValueError):
                    continue
        if out:
            break
    return out


# --------------------------------------------------------------------------- figures


def _save(fig, path: Path, dpi: int = 100) -> Path:
    from ..store import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, facecolor=fig.get_facecolor())
    _plt().close(fig)
    return path


def effective_grid(cfg, n: int, stamp_size: int):
    """``cfg`` with the thumbnail grid adapted to ``n`` galaxies.

    ``thumbnail_grid`` is the most cells per side; small samples get
    ``max(8, ceil(1.5 sqrt(n)))`` cells so the map is not mostly empty, with
    bigger cells (up to the stamp size) keeping the figure's width.
    """
    grid = int(min(cfg.thumbnail_grid, max(8, np.ceil(1.5 * np.sqrt(max(n, 1))))))
    px = int(max(cfg.thumbnail_pixels, min(stamp_size, cfg.thumbnail_grid * cfg.thumbnail_pixels // grid)))
    return dataclasses.replace(cfg, thumbnail_grid=grid, thumbnail_pixels=px)


def _thumb_mosaic(xy, index, sample, cfg, extent):
    from .data import read_stamps_rgb

    grid = cfg.thumbnail_grid
    chosen, col, row = thumbnail_cells(xy, grid, extent)
    rgb = read_stamps_rgb(sample, index[chosen], size=cfg.thumbnail_pixels, crop=cfg.thumbnail_crop)
    return thumbnail_mosaic(rgb, col, row, grid), (chosen, col, row)


def _mosaic_figure(panels: list[tuple[np.ndarray, str]], *, gap: int = 8, title_px: int = 56):
    """A black figure showing mosaics pixel for pixel (``figimage``: no resampling), titles above."""
    plt = _plt()
    dpi = 100
    h = max(m.shape[0] for m, _ in panels)
    w = sum(m.shape[1] for m, _ in panels) + gap * (len(panels) - 1)
    fig = plt.figure(figsize=(w / dpi, (h + title_px) / dpi), dpi=dpi, facecolor="black")
    x = 0
    for k, (mosaic, title) in enumerate(panels):
        if k:  # grey separator between panels
            fig.figimage(np.full((h, gap, 3), 90, dtype=np.uint8), xo=x - gap, yo=0, origin="upper")
        fig.figimage(mosaic, xo=x, yo=0, origin="upper")
        fig.text((x + mosaic.shape[1] / 2) / w, 1 - 4 / (h + title_px), title, color="white", ha="center",
                 va="top", fontsize=float(np.clip(mosaic.shape[1] / 90, 7, 14)))
        x += mosaic.shape[1] + gap
    return fig


def fig_thumbnail_map(data, cfg, path: Path) -> tuple[Path, dict]:
    """The real thumbnail map; returns the path and the chosen cells (for tests/HTML)."""
    extent = square_extent(data.xy)
    cfg = effective_grid(cfg, data.n, data.sample.stamp_size)
    mosaic, (chosen, col, row) = _thumb_mosaic(data.xy, data.index, data.sample, cfg, extent)
    grid = cfg.thumbnail_grid
    if len(row):  # drop empty cell rows above and below (a flat map would leave black bands)
        px = cfg.thumbnail_pixels
        mosaic = mosaic[(grid - 1 - row.max()) * px:(grid - row.min()) * px]
    title = (f"{data.method} map of {data.n} galaxies, true colour ({', '.join(_rgb_bands(data.sample.bands))} "
             f"as R, G, B)\n{len(chosen)} shown: one per cell of a {grid}x{grid} grid, the galaxy nearest "
             "the cell centre")
    fig = _mosaic_figure([(mosaic, title)])
    _save(fig, path)
    return path, {"chosen": chosen, "col": col, "row": row, "extent": extent}


def _rgb_bands(bands: list[str]) -> list[str]:
    from ..imaging import rgb_order

    return [bands[i] for i in rgb_order(bands)]


def _scatter_field(ax, xy, f, *, s, legend=True, fig=None):
    plt = _plt()
    if f.kind == "cat":
        colours = category_colours(f.values)
        cols = np.array([colours[v] for v in colours])  # small: one per category
        lut = {k: i for i, k in enumerate(colours)}
        codes = np.vectorize(lut.get, otypes=[np.int64])(f.values) if len(f.values) else np.zeros(0, int)
        order = np.argsort(codes == lut[""], kind="stable")[::-1]  # missing first (drawn below)
        ax.scatter(xy[order, 0], xy[order, 1], c=cols[codes[order]], s=s, linewidths=0, rasterized=True)
        if legend:
            counts = {k: int((f.values == k).sum()) for k in colours}
            handles = [plt.Line2D([], [], ls="", marker="o", color=c, label=f"{k or 'no class'} ({counts[k]})")
                       for k, c in colours.items() if counts[k]]
            ax.legend(handles=handles, fontsize=7, loc="best", framealpha=0.8, markerscale=1.2)
    else:
        lo, hi = _num_range(f.values)
        ok = np.isfinite(f.values)
        ax.scatter(xy[~ok, 0], xy[~ok, 1], c=MISSING_COLOUR, s=s, linewidths=0, rasterized=True)
        sc = ax.scatter(xy[ok, 0], xy[ok, 1], c=f.values[ok], s=s, cmap="viridis", vmin=lo, vmax=hi,
                        linewidths=0, rasterized=True)
        if fig is not None:
            fig.colorbar(sc, ax=ax, fraction=0.046, pad=0.02)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_aspect("equal", adjustable="datalim")


def fig_colour_maps(data, path: Path) -> Path | None:
    """One panel per colouring (UVJ class, z, mass, SFR, cluster, truth/labels)."""
    fields = data.colourings()
    if not fields:
        return None
    plt = _plt()
    ncol = min(3, len(fields))
    nrow = int(np.ceil(len(fields) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 4.8 * nrow), squeeze=False)
    s = float(np.clip(6000 / max(data.n, 1), 0.5, 12))
    for ax, f in zip(axes.flat, fields):
        _scatter_field(ax, data.xy, f, s=s, fig=fig)
        ax.set_title(f.label, fontsize=10)
    for ax in axes.flat[len(fields):]:
        ax.set_visible(False)
    fig.suptitle(f"{data.method} map of {data.n} galaxies, coloured by catalogue and class columns", fontsize=12)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))
    return _save(fig, path)


def _williams_box(ax, vj_lo: float, uv_hi: float):
    styles = {0.69: ("-", "0 < z <= 0.5"), 0.59: ("--", "0.5 < z <= 1"), 0.49: (":", "z > 1")}
    for c, (ls, label) in styles.items():
        x1 = (1.3 - c) / 0.88
        xs = [vj_lo, x1, 1.6, 1.6]
        ys = [1.3, 1.3, 0.88 * 1.6 + c, uv_hi]
        ax.plot(xs, ys, ls=ls, color="k", lw=1.2, label=f"Williams+09 box, {label}")


def fig_uvj(data, path: Path) -> Path | None:
    """U-V vs V-J coloured by cluster (or UVJ class when no clusters exist), with the Williams et al. box."""
    if "u_v" not in data.fields or "v_j" not in data.fields:
        return None
    uv, vj = data.fields["u_v"].values, data.fields["v_j"].values
    ok = np.isfinite(uv) & np.isfinite(vj)
    if not ok.any():
        return None
    colour = next((f for name, f in data.fields.items() if name.lower().startswith("cluster")), None)
    colour = colour or data.fields.get("uvj_class")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.5, 6))
    xy = np.column_stack([vj, uv])[ok]
    s = float(np.clip(8000 / max(ok.sum(), 1), 1, 16))
    if colour is not None:
        from .data import Field

        sub = Field(colour.name, colour.label, colour.kind, colour.values[ok])
        _scatter_field(ax, xy, sub, s=s, fig=fig)
        title = f"UVJ diagram coloured by {colour.name}"
    else:
        ax.scatter(xy[:, 0], xy[:, 1], s=s, c="k", linewidths=0)
        title = "UVJ diagram"
    lo = np.percentile(xy, 0.5, axis=0)
    hi = np.percentile(xy, 99.5, axis=0)
    span = hi - lo
    ax.set_xlim(lo[0] - 0.1 * span[0], hi[0] + 0.1 * span[0])
    ax.set_ylim(lo[1] - 0.1 * span[1], hi[1] + 0.1 * span[1])
    # keep the whole box in view (its corner is at V-J = 1.6, U-V = 1.3)
    ax.set_xlim(min(ax.get_xlim()[0], 0.0), max(ax.get_xlim()[1], 1.9))
    ax.set_ylim(min(ax.get_ylim()[0], 0.5), max(ax.get_ylim()[1], 2.3))
    _williams_box(ax, ax.get_xlim()[0], ax.get_ylim()[1])
    handles, labels = ax.get_legend_handles_labels()
    old = ax.get_legend()
    if old is not None:
        ax.add_artist(old)
    ax.legend(handles[-3:], labels[-3:], fontsize=7, loc="lower right")
    ax.set_xticks(np.round(np.linspace(*ax.get_xlim(), 6), 1))
    ax.set_yticks(np.round(np.linspace(*ax.get_ylim(), 6), 1))
    ax.set_aspect("auto")
    ax.set_xlabel("V - J (rest-frame, AB mag)")
    ax.set_ylabel("U - V (rest-frame, AB mag)")
    ax.set_title(f"{title}; {ok.sum()} galaxies")
    fig.tight_layout()
    return _save(fig, path)


def fig_confusions(metrics: dict, path: Path) -> Path | None:
    """Confusion matrices of every agreement record (clusters vs classes, kNN predictions ...)."""
    entries = []
    for label, rec in agreement_entries(metrics):
        mats = confusion_of(rec)
        if not label.startswith("agreement."):  # other backbones: the kNN matrix is enough
            mats = [m for m in mats if m[0].startswith("kNN")] or mats[:1]
        entries += [(agreement_label(metrics, label), *m) for m in mats]
    if not entries:
        return None
    plt = _plt()
    ncol = min(4, len(entries))
    nrow = int(np.ceil(len(entries) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.9 * ncol, 3.9 * nrow), squeeze=False)
    for ax, (label, kind, mat, rows, cols) in zip(axes.flat, entries):
        norm = mat / np.maximum(mat.sum(axis=1, keepdims=True), 1)
        ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for (i, j), v in np.ndenumerate(mat):
            ax.text(j, i, f"{int(v) if float(v).is_integer() else round(v, 2)}", ha="center", va="center",
                    fontsize=8, color="white" if norm[i, j] > 0.5 else "black")
        ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right", fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=7)
        ax.set_title(f"{label}\n{kind}" if kind else label, fontsize=8)
    for ax in axes.flat[len(entries):]:
        ax.set_visible(False)
    fig.suptitle("confusion matrices (colour: fraction of the row)", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _save(fig, path)


def fig_library_map(data, cfg, path: Path) -> Path | None:
    """Real thumbnail map beside the generated library placed on the same map (same extent and grid)."""
    if data.library is None or data.library_xy is None or len(data.library_xy) == 0:
        return None
    extent = square_extent(data.xy)
    # two panels: keep the figure at most ~2400 px wide
    cfg = effective_grid(cfg, data.n, data.sample.stamp_size)
    cfg = dataclasses.replace(cfg, thumbnail_pixels=max(8, min(cfg.thumbnail_pixels, 1200 // cfg.thumbnail_grid)))
    real, (rc, _, _) = _thumb_mosaic(data.xy, data.index, data.sample, cfg, extent)
    gen, (gc, _, _) = _thumb_mosaic(data.library_xy, data.library_index, data.library, cfg, extent)
    fig = _mosaic_figure([
        (real, f"real galaxies ({len(rc)} of {data.n} shown)"),
        (gen, f"GENERATED library (GAN, not real galaxies) on the real map, no refit ({len(gc)} of {len(data.library_xy)} shown)"),
    ])
    return _save(fig, path)


def _real_condition(data) -> tuple[str, np.ndarray] | None:
    cond = data.library_condition
    if cond and cond in data.fields and data.fields[cond].kind == "cat":
        return cond, data.fields[cond].values
    if cond and cond in data.sample.catalog.colnames:
        from .data import _strings

        return cond, _strings(data.sample.catalog[cond])[data.index]
    edges = ((getattr(data, "metrics", None) or {}).get("gan") or {}).get("redshift_edges")
    if cond and edges:  # conditioned on class and redshift bin (gan.redshift_bins): the real stamps' joint labels
        from ..gan.data import gan_condition

        return cond, gan_condition(data.sample, cond, edges)[1][data.index]
    return None


def fig_class_grids(data, path: Path, *, per_class: int = 6, random_state: int = 0) -> Path | None:
    """Per condition class: ``per_class`` real stamps (left) and generated stamps (right), drawn at random."""
    from .data import read_stamps_rgb

    if data.library is None or data.library_labels is None:
        return None
    real = _real_condition(data)
    lib_labels = data.library_labels
    classes = sorted(set(lib_labels.tolist()) - {""})
    if not classes:
        return None
    rng = np.random.default_rng(random_state)
    px, pad = 64, 2
    rows = []
    for cls in classes:
        gen_idx = data.library_index[lib_labels == cls]
        gen_pick = rng.choice(gen_idx, size=min(per_class, len(gen_idx)), replace=False)
        real_pick = np.zeros(0, dtype=np.int64)
        if real is not None:
            ridx = data.index[real[1] == cls]
            if len(ridx):
                real_pick = rng.choice(ridx, size=min(per_class, len(ridx)), replace=False)
        row = []
        for sample, pick in ((data.sample, real_pick), (data.library, gen_pick)):
            tiles = np.full((per_class, px + 2 * pad, px + 2 * pad, 3), 255, dtype=np.uint8)
            if len(pick):
                tiles[: len(pick), pad:-pad, pad:-pad] = read_stamps_rgb(sample, pick, size=px)
            row.append(np.concatenate(list(tiles), axis=1))
        rows.append(row)
    title = f"real vs generated stamps per {data.library_condition or 'class'}"
    gan = (getattr(data, "metrics", None) or {}).get("gan") or {}
    if gan.get("verdict"):  # the truth next to the samples (issue 14): how far from real, against the baselines
        import textwrap

        title += "\n" + "\n".join(textwrap.wrap(str(gan["verdict"]), width=70))
    title_height = 0.18 * (title.count("\n") + 1)  # inches: the stamps keep their size under a long verdict
    plt = _plt()
    w = rows[0][0].shape[1]
    width, row_height = 2 * w / 100 + 1.6, (px + 2 * pad) / 100
    height = len(classes) * (row_height + 0.05) + 0.35 + title_height
    fig, axes = plt.subplots(len(classes), 2, figsize=(width, height), squeeze=False, dpi=100)
    fig.subplots_adjust(left=1.3 / width, right=1 - 0.1 / width, bottom=0.05 / height,
                        top=1 - (title_height + 0.25) / height, wspace=0.2 / (w / 100), hspace=0.05 / row_height)
    for r, cls in enumerate(classes):
        for c in range(2):
            ax = axes[r, c]
            ax.imshow(rows[r][c], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for sp in ax.spines.values():
                sp.set_visible(False)
        axes[r, 0].set_ylabel(cls, rotation=0, ha="right", va="center", fontsize=9)
    axes[0, 0].set_title("real", fontsize=10)
    axes[0, 1].set_title("generated", fontsize=10)
    fig.suptitle(title, fontsize=9 if gan.get("verdict") else 11, y=1 - 0.05 / height, va="top",
                 color="#b00000" if gan.get("far_from_real")
                 else "#a05a00" if str(gan.get("verdict", "")).startswith("rough") else "black")
    return _save(fig, path)


def fig_cluster_gallery(data, path: Path) -> Path | None:
    """Per cluster, its typical stamps (``metrics.json`` ``clusters.typical_ids``: nearest the cluster centre)."""
    from .data import read_stamps_rgb

    clusters = (data.metrics or {}).get("clusters") or {}
    typical = clusters.get("typical_ids") or {}
    if not typical:
        return None
    ids = np.asarray(data.sample.ids(), dtype=str)
    row_of = {v: i for i, v in enumerate(ids)}
    sizes = clusters.get("sizes", {})
    summary = {str(r.get("cluster")): r for r in clusters.get("summary", [])}
    keys = sorted(typical, key=lambda k: int(k))
    per = max(len(v) for v in typical.values())
    px, pad = 64, 2
    strips = []
    for key in keys:
        rows = np.array([row_of[i] for i in typical[key] if i in row_of], dtype=np.int64)
        tiles = np.full((per, px + 2 * pad, px + 2 * pad, 3), 255, dtype=np.uint8)
        if len(rows):
            tiles[: len(rows), pad:-pad, pad:-pad] = read_stamps_rgb(data.sample, rows, size=px)
        strips.append(np.concatenate(list(tiles), axis=1))
    plt = _plt()
    w = strips[0].shape[1]
    fig, axes = plt.subplots(len(keys), 1, figsize=(w / 100 + 2.6, len(keys) * (px + 2 * pad) / 100 + 0.6),
                             squeeze=False, dpi=100)
    for ax, key, strip in zip(axes[:, 0], keys, strips):
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for sp in ax.spines.values():
            sp.set_visible(False)
        label = f"cluster {key}\n{sizes.get(key, '?')} galaxies"
        fr = {c: f for c, f in (summary.get(key, {}).get("fractions") or {}).items() if f}
        column = "uvj_class" if "uvj_class" in fr else next(iter(sorted(fr)), None)
        if column:
            cls, frac = max(fr[column].items(), key=lambda kv: kv[1])
            label += f"\n{frac:.0%} {cls}"
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"cluster gallery: {per} stamps nearest each cluster centre "
                 f"({clusters.get('clusterer')} in {clusters.get('space')})", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def fig_morphology(gan: dict, path: Path) -> Path | None:
    """Histograms of morphology statistics, real against generated (only if the GAN metrics hold them)."""
    hists = morphology_histograms(gan or {})
    samples = {} if hists else morphology_samples(gan or {})
    n = len(hists) or len(samples)
    if not n:
        return None
    plt = _plt()
    ncol = min(4, n)
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(3.8 * ncol, 3.0 * nrow), squeeze=False)
    styles = [dict(histtype="stepfilled", alpha=0.45, color="#1f77b4"), dict(histtype="step", lw=1.6, color="#d62728"),
              dict(histtype="step", lw=1.2, ls="--", color="#2ca02c"), dict(histtype="step", lw=1.2, color="#7f7f7f")]
    if hists:
        for ax, (stat, h) in zip(axes.flat, hists.items()):
            edges = np.asarray(h["edges"], dtype="f8")
            sets = [(k, v) for k, v in h.items() if isinstance(v, dict) and "counts" in v]
            sets.sort(key=lambda kv: (not kv[0].startswith("real"), kv[0]))
            for k, (name, rec) in enumerate(sets):
                counts = np.asarray(rec["counts"], dtype="f8")
                if len(counts) != len(edges) - 1 or counts.sum() <= 0:
                    continue
                ax.hist(edges[:-1], bins=edges, weights=counts / counts.sum() / np.diff(edges),
                        label=f"{name} ({int(rec.get('n', counts.sum()))})", **styles[k % len(styles)])
            ax.set_title(stat, fontsize=10)
            ax.legend(fontsize=7)
    else:
        for ax, (stat, (real, gen)) in zip(axes.flat, samples.items()):
            real, gen = real[np.isfinite(real)], gen[np.isfinite(gen)]
            both = np.concatenate([real, gen])
            if both.size < 2:
                continue
            lo, hi = np.percentile(both, [1, 99])
            bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
            ax.hist(real, bins=bins, density=True, label=f"real ({real.size})", **styles[0])
            ax.hist(gen, bins=bins, density=True, label=f"generated ({gen.size})", **styles[1])
            ax.set_title(stat, fontsize=10)
            ax.legend(fontsize=7)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    angles = " and position angles" if any(k.startswith("position angle") for k in hists) else ""
    fig.suptitle(f"morphology statistics (statmorph){angles}, real vs generated", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.3 / fig.get_figheight()))
    return _save(fig, path)


def write_figures(data, cfg, out_dir: Path) -> dict[str, Path]:
    """Write every figure that the workspace's files allow; returns ``{name: path}`` in display order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figs: dict[str, Path] = {}
    figs["thumbnail_map"], _ = fig_thumbnail_map(data, cfg, out_dir / "thumbnail_map.png")
    for name, fn in (
        ("map_colourings", lambda p: fig_colour_maps(data, p)),
        ("uvj_diagram", lambda p: fig_uvj(data, p)),
        ("confusion", lambda p: fig_confusions(data.metrics, p)),
        ("cluster_gallery", lambda p: fig_cluster_gallery(data, p)),
        ("library_map", lambda p: fig_library_map(data, cfg, p)),
        ("class_grids", lambda p: fig_class_grids(data, p, random_state=cfg.random_state)),
        ("morphology", lambda p: fig_morphology(data.metrics.get("gan") or {}, p)),
    ):
        path = out_dir / f"{name}.png"
        got = fn(path)
        if got is not None:
            figs[name] = got
        elif path.exists():
            path.unlink()  # stale figure of an earlier run
    return figs
