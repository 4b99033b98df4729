"""galearn.report: figures (thumbnail map, coloured maps, UVJ diagram, confusion
matrices, GAN library comparisons) and the self-contained HTML page.

``run_report(ws, cfg)`` reads only workspace files (through :mod:`galearn.store`)
and writes ``WS/report/*.png`` and ``WS/report/index.html``. matplotlib and
jinja2 are imported lazily, so ``import galearn.report`` stays cheap.
"""

from __future__ import annotations

from .._lazy import lazy_exports


__all__ = [
    "run_report",
    "render_html",
    "build_page_data",
    "metrics_rows",
    "load_report_data",
    "ReportData",
    "thumbnail_cells",
    "thumbnail_mosaic",
    "write_figures",
    "agreement_entries",
]

_WHERE = {
    "run_report": ".html",
    "render_html": ".html",
    "build_page_data": ".html",
    "metrics_rows": ".html",
    "load_report_data": ".data",
    "ReportData": ".data",
    "thumbnail_cells": ".figures",
    "thumbnail_mosaic": ".figures",
    "write_figures": ".figures",
    "agreement_entries": ".figures",
}


__getattr__, __dir__ = lazy_exports(__name__, _WHERE, __all__)
