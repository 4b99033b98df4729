"""The self-contained HTML report (``WS/report/index.html``) and :func:`run_report`.

One page, no network access needed: figures are inline base64 PNG data URIs,
the hover stamps are one inline JPEG sprite sheet, the map data is an inline
JSON block and the interactive map is plain JavaScript drawn on a canvas.
"""

from __future__ import annotations

import base64
import io
import json
import math
from importlib import resources
from pathlib import Path

import numpy as np

from .. import __version__
from ..config import ReportConfig
from ..errors import BadValueError
from ..store import Workspace, atomic_write_text
from .data import ReportData, load_report_data, read_stamps_rgb
from .figures import (AGREEMENT_KEYS, agreement_entries, agreement_label, category_colours, viridis_hex,
                      write_figures)

__all__ = ["run_report", "build_page_data", "metrics_rows", "cluster_table", "render_html"]

FIGURE_CAPTIONS = {
    "thumbnail_map": "Thumbnail map: true-colour stamps at their map positions, one galaxy per grid cell "
                     "(the one nearest the cell centre), so dense regions do not pile up.",
    "map_colourings": "The map coloured by UVJ class, redshift, stellar mass, SFR, cluster and truth / label "
                      "columns (grey: no value).",
    "uvj_diagram": "Rest-frame UVJ diagram coloured by cluster; lines: the Williams et al. (2009) quiescent "
                   "box for each redshift bin.",
    "confusion": "Confusion matrices of the compared columns (rows) against the unsupervised clusters (columns), "
                 "from metrics.json; colour: fraction of the row.",
    "cluster_gallery": "Cluster gallery: for each unsupervised cluster, the stamps nearest its centre in the "
                       "clustering space (typical members), with its size and its largest UVJ class (else "
                       "that of the first labelled column); the per-cluster table gives medians and class fractions.",
    "library_map": "Left: real galaxies. Right: the GAN library (GENERATED stamps, not galaxies) placed onto the "
                   "same map with the fitted map's transform (no refit), same grid and extent.",
    "class_grids": "Real (left) and generated (right) stamps per condition class, drawn at random.",
    "morphology": ("Morphology statistics (statmorph) of real and generated stamps and, where measured, the "
                   "position angles of the elongated ones (real galaxies point every way)."),
    "anomalies_top": "The 48 most unusual galaxies (galearn anomalies), most unusual first; "
                     "the second line is truth_rare where the catalogue has it.",
    "learn_proposals": "The galaxies to label next (galearn learn): uncertain predictions spread over the map, "
                       "with the predicted class and uncertainty u; before any label, representative galaxies "
                       "(k-means centres) to label first.",
}

_JSON_SHORT_LIST = 12  # lists up to this length are shown in the metrics table


#: How the report names each ``gan.sky_noise`` model a run trained with.
SKY_MODELS = {"measured": "measured white", "measured-correlated": "measured correlated", "learnt": "learnt"}


def gan_realism_caption(gan: dict) -> str:
    """The GAN evaluation's verdict and its realism figures beside their real-vs-real baselines (plain text)."""
    if not gan:
        return ""

    def pair(key: str, label: str, fmt: str = "{:.3g}") -> str | None:
        v, b = gan.get(key), gan.get(f"{key}_real_baseline")
        if v is None:
            return None
        return f"{label} {fmt.format(v)}" + ("" if b is None else f" (real baseline {fmt.format(b)})")

    fid = pair("fid", "FID")
    if fid and (gan.get("draws") or 1) > 1 and gan.get("fid_ratio_draws"):
        lo, _, hi = gan["fid_ratio_draws"]
        fid += f", mean of {gan['draws']} draws (one draw's ratio {lo:.1f}-{hi:.1f}x)"
    parts = [fid, pair("precision", "precision", "{:.2f}"), pair("recall", "recall", "{:.2f}"),
             pair("morphology_wasserstein", "morphology W1"), pair("power_spectrum_wasserstein", "power-spectrum W1"),
             pair("flux_wasserstein", "flux W1"), pair("colour_wasserstein", "colour W1")]
    td = gan.get("typical_distance")
    if td and td.get("heldout_median"):
        parts.append(f"typical stamp {td['ratio']:.1f}x as far from the real ones as a held-out real galaxy "
                     f"(median Mahalanobis distance {td['generated_median']:.1f} against {td['heldout_median']:.1f})")
    mem = gan.get("memorised_fraction")
    if mem is not None:
        ct = (gan.get("data_copying") or {}).get("ct")
        parts.append(f"memorised {100 * mem:.1f} % (nearer a training stamp than 99 % of real galaxies are; about 1 % "
                     "without copying" + (f"; data-copying test C_T {ct:+.1f}, below -3: copies of training stamps"
                                          if ct is not None else "") + ")")
    text = "; ".join(p for p in parts if p)
    verdict = gan.get("verdict") or ""
    space = gan.get("realism_space")
    where = f" in the {space} space (not a network the discriminator looked through)" if space else ""
    augment = gan.get("diffaugment")
    augmented = "" if augment is None else f" (DiffAugment: {augment.replace(',', ', ') or 'none'})"
    setup = [f"{gan['discriminator']} discriminator{augmented}" if gan.get("discriminator") else "",
             f"{SKY_MODELS.get(gan['sky_noise'], gan['sky_noise'])} sky noise" if gan.get("sky_noise") else ""]
    trained = " and ".join(p for p in setup if p)
    return (f"{verdict.upper() if gan.get('far_from_real') else verdict}. " if verdict else "") + (
        f"Realism{where}: {text}." if text else "") + _diagnosis_sentence(gan) + (
        f" Trained with the {trained}." if trained else "")


def _diagnosis_sentence(gan: dict) -> str:
    """Which statistics hold the library's recall down (``gan.realism_diagnosis``), or ""."""
    diag = gan.get("realism_diagnosis") or {}
    group = diag.get("limiting_group")
    if not group:
        return ""
    entry = diag["without_group"][group]
    shifted = [f"{f['name']} {f['shift']:+.1f} sd (spread {f['spread']:.2f}x)" for f in diag.get("features", [])[:3]]
    return (f" Recall is held down most by the {group} statistics: {entry['recall']:.2f} without them "
            f"(real baseline {entry['recall_real_baseline']:.2f})" + (
                f"; largest shifts from the real stamps: {', '.join(shifted)}." if shifted else "."))



# --------------------------------------------------------------------------- data for the page


def _round(values: np.ndarray, digits: int = 4) -> list:
    v = np.asarray(values, dtype="f8")
    out = np.round(v, digits).astype(object)
    out[~np.isfinite(v)] = None
    return out.tolist()


def _sig(values: np.ndarray, sig: int = 4) -> list:
    v = np.asarray(values, dtype="f8")
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(np.isfinite(v) & (v != 0), np.floor(np.log10(np.abs(v))), 0)
    scale = 10.0 ** (sig - 1 - mag)
    out = (np.round(v * scale) / scale).astype(object)
    out[~np.isfinite(v)] = None
    return out.tolist()


def _encode_field(f, sel: np.ndarray) -> dict:
    values = f.values[sel]
    rec = {"name": f.name, "label": f.label, "kind": f.kind, "colour": bool(f.colour)}
    if f.kind == "cat":
        colours = category_colours(values)
        cats = list(colours)
        lut = {c: i for i, c in enumerate(cats)}
        rec["categories"] = cats
        rec["colours"] = [colours[c] for c in cats]
        rec["values"] = [lut[v] for v in values.tolist()]
    else:
        v = values[np.isfinite(values)]
        lo, hi = (np.percentile(v, [1, 99]).tolist() if v.size else [0.0, 1.0])
        rec["range"] = [lo, hi if hi > lo else lo + 1e-9]
        rec["values"] = _sig(values)
    return rec


def _sprite_sheet(rgb: np.ndarray, quality: int = 88) -> tuple[str, int]:
    """Pack thumbnails ``(n, px, px, 3)`` into one JPEG; returns (data URI, columns)."""
    from PIL import Image

    n, px = rgb.shape[0], rgb.shape[1]
    cols = max(1, min(n, int(math.ceil(math.sqrt(n)))))
    rows = max(1, int(math.ceil(n / cols)))
    sheet = np.zeros((rows * cols, px, px, 3), dtype=np.uint8)
    sheet[:n] = rgb
    sheet = sheet.reshape(rows, cols, px, px, 3).transpose(0, 2, 1, 3, 4).reshape(rows * px, cols * px, 3)
    buf = io.BytesIO()
    Image.fromarray(sheet).save(buf, format="JPEG", quality=quality, subsampling=0, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii"), cols


def build_page_data(data: ReportData, cfg: ReportConfig) -> tuple[dict, dict[str, str]]:
    """The JSON object the page's script reads, and the sprite-sheet data URIs.

    At most ``cfg.max_points_html`` galaxies are included (a seeded random subset beyond).
    """
    rng = np.random.default_rng(cfg.random_state)
    n = data.n
    cap = int(cfg.max_points_html)
    if cap < 1:
        raise BadValueError(f"report.max_points_html must be >= 1, got {cap}")
    sel = np.sort(rng.choice(n, size=cap, replace=False)) if n > cap else np.arange(n)
    px = int(cfg.sprite_pixels if len(sel) <= 5000 else min(cfg.sprite_pixels, 32))
    sprite_uri, cols = _sprite_sheet(read_stamps_rgb(data.sample, data.index[sel], size=px))
    page = {
        "version": __version__,
        "method": data.method,
        "n_total": int(n),
        "n": int(len(sel)),
        "x": _round(data.xy[sel, 0]),
        "y": _round(data.xy[sel, 1]),
        "fields": [_encode_field(f, sel) for f in data.fields.values() if len(f.values) == n],
        "viridis": viridis_hex(64),
        "sprite": {"id": "sprite-real", "size": px, "cols": cols},
        "library": None,
    }
    from .explore import explore_page_data  # neighbours, most-unusual and label-next strips

    page["explore"] = explore_page_data(data, sel)
    sprites = {"sprite-real": sprite_uri}
    if data.library is not None and data.library_xy is not None and len(data.library_xy):
        m = len(data.library_xy)
        lsel = np.sort(rng.choice(m, size=cap, replace=False)) if m > cap else np.arange(m)
        lib_uri, lcols = _sprite_sheet(read_stamps_rgb(data.library, data.library_index[lsel], size=px))
        labels = data.library_labels[lsel]
        colours = category_colours(labels)
        cats = list(colours)
        lut = {c: i for i, c in enumerate(cats)}
        page["library"] = {
            "n": int(len(lsel)),
            "n_total": int(m),
            "condition": data.library_condition or "",
            "x": _round(data.library_xy[lsel, 0]),
            "y": _round(data.library_xy[lsel, 1]),
            "ids": [str(v) for v in data.library.ids()[data.library_index[lsel]]],
            "categories": cats,
            "colours": [colours[c] for c in cats],
            "values": [lut[v] for v in labels.tolist()],
            "sprite": {"id": "sprite-library", "size": px, "cols": lcols},
        }
        sprites["sprite-library"] = lib_uri
    return page, sprites


# --------------------------------------------------------------------------- metrics table


def _fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.4e}"
    if isinstance(value, list):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


def _cell(path: list[str], value) -> dict:
    return {"path": json.dumps(path), "value": json.dumps(value), "text": _fmt(value)}


def metrics_rows(metrics: dict) -> dict:
    """The metrics table: an agreement pivot plus one row per other scalar (or short list).

    Every cell carries ``data-path`` (JSON list of keys into metrics.json) and
    ``data-value`` (the exact JSON value), so the table can be checked against the file.
    Long lists (confusion matrices, morphology samples) are shown as figures instead.
    """
    pivot_cols = ["n_classes", "n_galaxies", *AGREEMENT_KEYS, "n_clusters", "cluster_majority_balanced_accuracy",
                  "ami", "majority_rate", "stability", "chance_balanced_accuracy"]
    shown: set[tuple] = set()
    pivot = []
    for label, rec in agreement_entries(metrics):
        path = label.split(".")
        # agreement_entries joins keys with "."; recover the real key path from the metrics object.
        path = _find_path(metrics, rec) or path
        cells = []
        for key in pivot_cols:
            if key in rec and isinstance(rec[key], (int, float)) and not isinstance(rec[key], bool):
                cells.append(_cell(path + [key], rec[key]))
                shown.add(tuple(path + [key]))
            else:
                cells.append(None)
        pivot.append({"label": agreement_label(metrics, ".".join(path)), "cells": cells})

    sections: dict[str, list] = {}

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, path + [str(k)])
            return
        if tuple(path) in shown or "confusion" in path:
            return
        if isinstance(node, list):
            if len(node) > _JSON_SHORT_LIST or any(isinstance(v, (dict, list)) for v in node):
                return
        sections.setdefault(path[0], []).append({"key": ".".join(path[1:]) or path[0], **_cell(path, node)})

    for top, node in metrics.items():
        walk(node, [str(top)])
    order = ["sample", "features", "agreement", "baseline", "gan", "timing"]
    ordered = {k: sections[k] for k in order if k in sections}
    ordered.update({k: v for k, v in sections.items() if k not in ordered})
    return {"pivot_columns": pivot_cols, "pivot": pivot, "sections": ordered}


def cluster_table(metrics: dict) -> dict | None:
    """The per-cluster summary (``metrics.json`` ``clusters.summary``) as a table: header + rows of strings."""
    rows = ((metrics or {}).get("clusters") or {}).get("summary") or []
    if not rows:
        return None
    medians = [k for k in rows[0] if k.startswith("median_")]
    columns = list(rows[0].get("fractions", {}))
    head = ["cluster", "size", "fraction", "mean probability", *medians,
            *[f"{c} fractions" for c in columns]]
    body = []
    for r in rows:
        cells = [str(r["cluster"]), str(r["size"]), f"{r['fraction']:.3f}",
                 _fmt(r.get("mean_probability")) if r.get("mean_probability") is not None else "",
                 *[_fmt(r[m]) if r.get(m) is not None else "" for m in medians]]
        for c in columns:
            fr = r["fractions"].get(c, {})
            cells.append(", ".join(f"{k} {v:.2f}" for k, v in sorted(fr.items(), key=lambda kv: -kv[1])))
        body.append(cells)
    clusters = metrics["clusters"]
    colours = clusters.get("colours") or {}
    caption = (f"{clusters.get('n_clusters')} clusters ({clusters.get('clusterer')} in {clusters.get('space')}, "
               f"k by {clusters.get('select') or 'the method'}, no labels) of the "
               + (f"{clusters.get('backbone')} features with the stamps' aperture "
                  f"{', '.join(colours.get('columns', []))} appended (weight {colours.get('weight')})"
                  if colours.get("fused") else f"{clusters.get('backbone')} features"
                  + (f" (no aperture colours: {colours['reason']})" if colours.get("reason") else "")))
    return {"head": head, "rows": body, "caption": caption}


def _find_path(node, target, path=None) -> list[str] | None:
    path = path or []
    if node is target:
        return path
    if isinstance(node, dict):
        for k, v in node.items():
            got = _find_path(v, target, path + [str(k)])
            if got is not None:
                return got
    return None


# --------------------------------------------------------------------------- page


def _png_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _script_json(obj) -> str:
    """JSON safe inside ``<script type="application/json">``.

    ``<``, ``>`` and ``&`` become ``\\u003c``-style escapes (JSON.parse reads
    them back unchanged), so no data value can close the element (``</script>``)
    or open an HTML comment (``<!--``) that would swallow the rest of the page's
    script; U+2028/U+2029 are escaped too.
    """
    text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
    return text.translate(_SCRIPT_ESCAPES)


_SCRIPT_ESCAPES = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                                 "\u2028": "\\u2028", "\u2029": "\\u2029"})


def _caption(name: str, metrics: dict) -> str:
    base = FIGURE_CAPTIONS.get(name, name)
    if name in ("class_grids", "library_map", "morphology"):
        extra = gan_realism_caption((metrics or {}).get("gan") or {})
        if extra:
            base = f"{base} {extra}"
    return base


def render_html(data: ReportData, cfg: ReportConfig, figures: dict[str, Path]) -> str:
    """Render ``index.html`` (a string) from the report data and written figures."""
    import jinja2

    tmpl_dir = resources.files("galearn.report") / "templates"
    env = jinja2.Environment(autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.StrictUndefined)
    template = env.from_string((tmpl_dir / "index.html.j2").read_text(encoding="utf-8"))
    script = (tmpl_dir / "map.js").read_text(encoding="utf-8")
    script += "\n" + (tmpl_dir / "explore.js").read_text(encoding="utf-8")
    style = (tmpl_dir / "style.css").read_text(encoding="utf-8")
    page, sprites = build_page_data(data, cfg)
    sample = data.sample
    summary = {
        "workspace": str(data.ws.root),
        "kind": sample.kind,
        "n_sample": sample.n,
        "n_map": data.n,
        "bands": ", ".join(sample.bands),
        "stamp_size": sample.stamp_size,
        "pixel_scale": None if sample.pixel_scale_arcsec is None else float(f"{sample.pixel_scale_arcsec:.4g}"),
        "method": data.method,
        "map_attrs": {k: v for k, v in data.map_attrs.items() if isinstance(v, (str, int, float))},
        "library": None if data.library is None else data.library.n,
    }
    return template.render(
        title=f"galearn report: {data.ws.root.name}",
        version=__version__,
        summary=summary,
        figures=[{"name": k, "uri": _png_uri(p), "caption": _caption(k, data.metrics)} for k, p in figures.items()],
        metrics=metrics_rows(data.metrics),
        cluster_table=cluster_table(data.metrics),
        page_json=_script_json(page),
        sprites=sprites,
        script=script,
        style=style,
        has_library=page["library"] is not None,
    )


def run_report(ws: Workspace, cfg: ReportConfig) -> Path:
    """Write the figures (``WS/report/*.png``) and the self-contained ``WS/report/index.html``.

    Reads only workspace files: ``sample.h5``, ``maps/<method>.h5``,
    ``classes.ecsv`` and ``report/metrics.json`` when present, and the GAN
    ``library.h5`` with ``maps/library_<method>.h5`` when present.

    Parameters
    ----------
    ws : Workspace
    cfg : ReportConfig
        ``method`` (which map), ``thumbnail_grid`` (cells per side),
        ``thumbnail_pixels`` / ``thumbnail_crop`` (thumbnail size in pixels /
        central fraction of a stamp), ``max_points_html`` (galaxies on the
        interactive map), ``sprite_pixels`` (hover stamp size in pixels),
        ``random_state`` (subset and example stamps).

    Returns
    -------
    Path
        ``WS/report/index.html``.
    """
    for name in ("thumbnail_grid", "thumbnail_pixels", "sprite_pixels"):
        if int(getattr(cfg, name)) < 1:
            raise BadValueError(f"report.{name} must be >= 1, got {getattr(cfg, name)}")
    if not 0 < cfg.thumbnail_crop <= 1:
        raise BadValueError(f"report.thumbnail_crop must be in (0, 1], got {cfg.thumbnail_crop}")
    data = load_report_data(ws, cfg.method)
    from .explore import explore_fields  # anomalies.ecsv, predictions.ecsv: colourings and hover rows

    data.fields.update(explore_fields(ws, data.ids))
    figures = write_figures(data, cfg, ws.report)
    from .explore import write_explore_figures

    figures.update(write_explore_figures(data, ws.report))
    text = render_html(data, cfg, figures)
    path = ws.report / "index.html"
    atomic_write_text(path, text)
    return path
