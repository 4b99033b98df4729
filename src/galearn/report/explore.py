"""The report's exploration parts: anomaly scores, predictions from labels, neighbour lists.

- :func:`explore_fields`: per-galaxy fields from ``WS/anomalies.ecsv`` (score,
  rank) and ``WS/predictions.ecsv`` (prediction, probability, uncertainty,
  proposal, re-ranked anomaly rank), aligned to the map by id;
- :func:`explore_page_data`: what the page's script needs beyond the map:
  the 12 nearest neighbours of every galaxy on the page (feature space,
  precomputed here so the page stays offline), the "most unusual" and
  "label these next" strips;
- :func:`write_explore_figures`: ``anomalies_top.png`` (the 48 most unusual
  stamps) and ``learn_proposals.png`` (the galaxies proposed for labelling).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import GalearnInputError
from ..store import read_table
from .data import Field, _float, _strings, align_ids

__all__ = ["N_NEIGHBOURS", "N_STRIP", "explore_fields", "explore_page_data", "write_explore_figures"]

N_NEIGHBOURS = 12
N_STRIP = 24
N_TOP_FIGURE = 48


def explore_fields(ws, ids: np.ndarray) -> dict[str, Field]:
    """Fields from ``anomalies.ecsv`` / ``predictions.ecsv`` for the galaxies ``ids`` (map order)."""
    out: dict[str, Field] = {}
    if ws.anomalies.exists():
        t = read_table(ws.anomalies)
        rows = align_ids(_strings(t["id"]), ids)
        ok = rows >= 0
        score = np.full(len(ids), np.nan)
        rank = np.full(len(ids), np.nan)
        score[ok] = _float(t["score"])[rows[ok]]
        rank[ok] = _float(t["rank"])[rows[ok]]
        method = t.meta.get("method", "")
        out["anomaly_score"] = Field("anomaly_score", f"anomaly score ({method}; higher = more unusual)", "num", score)
        out["anomaly_rank"] = Field("anomaly_rank", "anomaly rank (1 = most unusual)", "num", rank, colour=False)
    if ws.predictions.exists():
        t = read_table(ws.predictions)
        rows = align_ids(_strings(t["id"]), ids)
        ok = rows >= 0

        def take(name, kind):
            if name not in t.colnames:
                return None
            if kind == "cat":
                v = np.full(len(ids), "", dtype=object)
                v[ok] = _strings(t[name])[rows[ok]]
                return v.astype(str)
            v = np.full(len(ids), np.nan)
            v[ok] = _float(t[name])[rows[ok]]
            return v

        for name, label, kind, colour in (
            ("prediction", "prediction from your labels (galearn learn)", "cat", True),
            ("uncertainty", "uncertainty of the prediction (1 - margin)", "num", True),
            ("probability", "probability of the prediction", "num", False),
            ("label", "your label (labels.csv)", "cat", False),
            ("proposal", "proposed for labelling (1 = first)", "num", False),
            ("rerank", "anomaly rank after your judgements", "num", False),
        ):
            v = take(name, kind)
            if v is not None:
                key = "learn_" + name
                out[key] = Field(key, label, kind, v, colour=colour)
    return out


def _features_for(data, rows: np.ndarray) -> np.ndarray | None:
    """Feature vectors of sample rows ``rows`` (the primary feature file), or None when there is none."""
    from ..store import load_features, resolve_backbone

    try:
        backbone = resolve_backbone(data.ws, None)
        feats = load_features(data.ws, backbone, sample=data.sample)
    except GalearnInputError:
        return None
    return np.asarray(feats.values)[rows]


def explore_page_data(data, sel: np.ndarray) -> dict:
    """Neighbour lists and strips for the galaxies ``sel`` (rows of the map) shown on the page.

    Indices refer to positions in the page's arrays (0 .. len(sel) - 1).
    Neighbours are searched among the galaxies on the page.
    """
    from ..explore import neighbour_indices

    out: dict = {"k": 0, "neighbours": None, "unusual": [], "proposals": []}
    X = _features_for(data, data.index[sel])
    if X is not None and len(X) > 2:
        nb = neighbour_indices(X, N_NEIGHBOURS)
        out["k"] = int(nb.shape[1])
        out["neighbours"] = nb.ravel().tolist()
    f = data.fields.get("anomaly_score")
    if f is not None:
        s = f.values[sel]
        ok = np.flatnonzero(np.isfinite(s))
        out["unusual"] = ok[np.argsort(-s[ok], kind="stable")][:N_STRIP].tolist()
    f = data.fields.get("learn_proposal")
    if f is not None:
        p = f.values[sel]
        ok = np.flatnonzero(np.isfinite(p) & (p > 0))
        out["proposals"] = ok[np.argsort(p[ok], kind="stable")][:N_STRIP].tolist()
    return out


def _stamp_grid(data, rows: np.ndarray, titles: list[str], path: Path, *, cols: int = 8, title: str = "") -> Path:
    from .data import read_stamps_rgb
    from .figures import _plt, _save

    plt = _plt()
    rgb = read_stamps_rgb(data.sample, data.index[rows], size=64)
    nrow = max(1, int(np.ceil(len(rows) / cols)))
    fig, axes = plt.subplots(nrow, cols, figsize=(cols * 1.35, nrow * 1.5), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(rows):
            ax.imshow(rgb[k], interpolation="nearest")
            ax.set_title(titles[k], fontsize=6)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def write_explore_figures(data, out_dir: Path) -> dict[str, Path]:
    """``anomalies_top.png`` and ``learn_proposals.png`` when their files exist (stale ones removed)."""
    out_dir = Path(out_dir)
    figs: dict[str, Path] = {}
    truth = data.fields.get("truth_rare")
    ids = data.ids
    path = out_dir / "anomalies_top.png"
    f = data.fields.get("anomaly_score")
    if f is not None and np.isfinite(f.values).any():
        ok = np.flatnonzero(np.isfinite(f.values))
        top = ok[np.argsort(-f.values[ok], kind="stable")][:N_TOP_FIGURE]
        titles = [f"#{k + 1} {ids[r]}" + (f"\n{truth.values[r]}" if truth is not None else "") for k, r in enumerate(top)]
        figs["anomalies_top"] = _stamp_grid(data, top, titles, path,
                                            title="The most unusual galaxies (galearn anomalies), rank and id")
    elif path.exists():
        path.unlink()
    path = out_dir / "learn_proposals.png"
    f = data.fields.get("learn_proposal")
    if f is not None and (np.nan_to_num(f.values) > 0).any():
        ok = np.flatnonzero(np.nan_to_num(f.values) > 0)
        top = ok[np.argsort(f.values[ok], kind="stable")][:N_STRIP]
        pred = data.fields.get("learn_prediction")
        unc = data.fields.get("learn_uncertainty")
        titles = [f"{ids[r]}\n{pred.values[r] if pred is not None else ''} u={unc.values[r]:.2f}" if unc is not None
                  else str(ids[r]) for r in top]
        title = ("Label these next (most uncertain predictions, galearn learn)" if pred is not None
                 else "Label these first (representative galaxies: k-means centres, galearn learn)")
        figs["learn_proposals"] = _stamp_grid(data, top, titles, path, title=title)
    elif path.exists():
        path.unlink()
    return figs
