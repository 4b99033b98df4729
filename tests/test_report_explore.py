"""The page's exploration parts: anomaly colouring and strip, neighbours, labels from clicks.

The browser test drives headless Chromium through the DevTools protocol with
real (trusted) mouse events; it is skipped where Chromium is not installed.
"""

from __future__ import annotations

import csv
import io
import json
import time

import numpy as np
import pytest

from _cdp import Browser, find_chromium
from conftest import write_feature_files
from test_report import _Page, make_workspace

from galearn.config import ReportConfig
from galearn.explore import neighbour_indices, run_anomalies, run_learn
from galearn.store import open_sample, read_table, update_metrics


@pytest.fixture(scope="module")
def explored(tmp_path_factory):
    """The report test's workspace plus features, anomalies, predictions from 12 labels, and its page."""
    from galearn.report import run_report

    root = tmp_path_factory.mktemp("ws")
    ws = make_workspace(root / "ws", n=240, library=False)
    sample = open_sample(ws.sample)
    rng = np.random.default_rng(1)
    truth = np.asarray(sample.catalog["truth_class"]).astype(str)
    centres = {"elliptical": 0.0, "spiral": 4.0, "irregular": 8.0}
    X = np.array([centres[t] for t in truth])[:, None] + rng.normal(0, 1, (len(truth), 8))
    X[:5] += 25.0 * rng.normal(0, 1, (5, 8))  # five far-off galaxies: the most unusual
    write_feature_files(ws, sample, ["efficientnet-lite0"], X, rng)
    update_metrics(ws.metrics, {"features": {"backbone": "efficientnet-lite0"}})
    run_anomalies(ws, random_state=0)
    ids = sample.ids()
    labels = root / "labels.csv"
    rows = [i for c in ("elliptical", "spiral") for i in np.flatnonzero(truth == c)[:6]]
    labels.write_text("id,label\n" + "".join(f"{ids[i]},{truth[i]}\n" for i in rows))
    run_learn(ws, labels, n_propose=10)
    path = run_report(ws, ReportConfig(thumbnail_grid=12, thumbnail_pixels=16))
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return ws, X, path, text, page


def _data(page):
    return json.loads(page.scripts["galearn-data"])


def test_page_data_has_neighbours_strips_and_fields(explored):
    ws, X, path, text, page = explored
    data = _data(page)
    fields = {f["name"]: f for f in data["fields"]}
    ex = data["explore"]
    n = data["n"]
    assert ex["k"] == 12 and len(ex["neighbours"]) == 12 * n
    # neighbours of the page's galaxies: those of the same features (page order = sample order here)
    sample_ids = open_sample(ws.sample).ids()
    page_ids = [fields["id"]["categories"][v] for v in fields["id"]["values"]]
    where = {str(v): i for i, v in enumerate(sample_ids)}
    rows = np.array([where[p] for p in page_ids])  # the page follows the map's order, not the sample's
    expect = neighbour_indices(X[rows], 12)
    np.testing.assert_array_equal(np.asarray(ex["neighbours"]).reshape(n, 12), expect)
    # colour by anomaly score, and the most-unusual strip in score order
    assert fields["anomaly_score"]["colour"] and fields["anomaly_score"]["kind"] == "num"
    score = np.array([np.nan if v is None else v for v in fields["anomaly_score"]["values"]])
    assert len(ex["unusual"]) == 24 and np.all(np.diff(score[ex["unusual"]]) <= 0)
    assert {page_ids[i] for i in ex["unusual"][:5]} == {str(v) for v in sample_ids[:5]}
    # predictions from the labels: colourings and the label-next strip
    assert fields["learn_prediction"]["colour"] and fields["learn_uncertainty"]["colour"]
    pred = read_table(ws.predictions)
    assert len(ex["proposals"]) == 10
    proposed = {str(i) for i in pred["id"][np.asarray(pred["proposal"]) > 0]}
    assert {page_ids[i] for i in ex["proposals"]} == proposed
    for fig in ("anomalies_top", "learn_proposals"):
        assert (ws.report / f"{fig}.png").exists()
        assert any(img.get("data-figure") == fig for img in page.imgs)
    assert 'id="labels-box"' in text and 'id="export-labels"' in text


def test_page_without_features_has_no_neighbours(tmp_path):
    from galearn.report import run_report

    ws = make_workspace(tmp_path / "ws", n=40, library=False)
    page = _Page()
    page.feed(run_report(ws, ReportConfig(thumbnail_grid=5, thumbnail_pixels=8)).read_text(encoding="utf-8"))
    ex = _data(page)["explore"]
    assert ex["neighbours"] is None and ex["unusual"] == [] and ex["proposals"] == []
    assert not (ws.report / "anomalies_top.png").exists()


@pytest.mark.skipif(find_chromium() is None, reason="needs a headless Chromium (Debian package chromium)")
def test_clicks_neighbours_labels_export_and_anomaly_colouring(explored, tmp_path):
    """Real mouse events: a click shows 12 neighbours; two labelled galaxies export as two CSV rows."""
    ws, X, path, text, page = explored
    data = _data(page)
    fields = {f["name"]: f for f in data["fields"]}
    page_ids = [fields["id"]["categories"][v] for v in fields["id"]["values"]]
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    b = Browser(tmp_path / "profile", downloads=downloads)
    try:
        b.goto(path.as_uri())
        # galaxies at least 15 CSS pixels from any other on the screen, so a click cannot hit a neighbour
        isolated = b.eval("(function(){var D=window.galearnData, P=[], out=[]; for (var i=0;i<D.n;i++) "
                          "P.push(window.galearnToScreen(i)); for (i=0;i<D.n;i++){var ok=true; for (var j=0;j<D.n;j++)"
                          "{if (j!==i && Math.hypot(P[i][0]-P[j][0], P[i][1]-P[j][1]) < 15) {ok=false; break;}}"
                          " if (ok) out.push(i);} return out;})()")
        assert len(isolated) >= 3
        k, a, c = isolated[0], isolated[1], isolated[-1]
        # 1. click a galaxy (with "look only" active): its neighbours appear, as stamps and on the map
        b.click(*b.eval(f"window.galearnToScreen({k})"))
        shown = b.eval("window.galearnNeighbours()")
        assert shown == data["explore"]["neighbours"][12 * k:12 * (k + 1)]
        assert b.eval("document.querySelectorAll('#nb-strip canvas').length") == 12
        assert page_ids[k] in b.eval("document.getElementById('nb-caption').textContent")
        hover = b.eval("document.getElementById('hover-table').textContent")
        assert page_ids[k] in hover
        assert b.eval("window.galearnLabelsCSV()") == "id,label\n"  # looking labels nothing
        # 2. label two galaxies with two labels by clicking, then export
        b.click_selector('#palette .chip[data-label="interesting"]')
        b.click(*b.eval(f"window.galearnToScreen({a})"))
        b.click_selector('#palette .chip[data-label="boring"]')
        b.click(*b.eval(f"window.galearnToScreen({c})"))
        assert "1)" in b.eval("document.querySelector('#palette .chip[data-label=\"boring\"]').textContent")
        b.click_selector("#export-labels")
        target = downloads / "labels.csv"
        deadline = time.time() + 30
        # the download can appear before Chromium has written it all (seen once under load): wait for its rows
        while (not target.exists() or target.read_text().count("\n") < 3) and time.time() < deadline:
            time.sleep(0.2)
        rows = list(csv.DictReader(io.StringIO(target.read_text())))
        assert sorted((r["id"], r["label"]) for r in rows) == sorted(
            [(page_ids[a], "interesting"), (page_ids[c], "boring")])
        # the labels survive a reload (local storage)
        b.goto(path.as_uri())
        assert b.eval("window.galearnLabelsCSV()").count("\n") == 3
        # 3. lasso: every galaxy inside a drawn square gets the active label
        b.click_selector('#palette .chip[data-label="boring"]')
        b.click_selector('input[name=label-mode][value=lasso]')
        b.eval("window.scrollTo(0, 0)")
        r = b.eval("(function(){var r=document.getElementById('map-canvas').getBoundingClientRect();"
                   "return [r.left, r.top, r.width, r.height];})()")
        x0, y0, w, h = r[0] + 0.1 * r[2], r[1] + 0.1 * r[3], 0.3 * r[2], 0.3 * r[3]
        square = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h), (x0, y0 + 1)]
        inside = b.eval("(function(){var n=0, M=window.galearnMap, D=M.D, c=document.getElementById('map-canvas')"
                        ".getBoundingClientRect(); for (var i=0;i<D.n;i++){var p=window.galearnToScreen(i);"
                        f"if (p[0]>{x0}&&p[0]<{x0 + w}&&p[1]>{y0}&&p[1]<{y0 + h}) n++;}} return n;}})()")
        b.drag(square)
        assert f"{inside} galaxies in the lasso" in b.eval("document.getElementById('lasso-result').textContent")
        # 4. colour by anomaly score: legend and the point colour of an isolated unusual galaxy
        b.eval("(function(){var s=document.getElementById('colour-by'); s.value='anomaly_score';"
               "s.dispatchEvent(new Event('change'));})()")
        assert "anomaly score" in b.eval("document.getElementById('legend').textContent")
        assert b.eval("document.querySelectorAll('#unusual-strip canvas').length") == 24
        b.click_selector("#unusual-strip canvas")  # the most unusual galaxy: selected, neighbours shown
        assert b.eval("window.galearnNeighbours()") == data["explore"]["neighbours"][
            12 * data["explore"]["unusual"][0]:12 * (data["explore"]["unusual"][0] + 1)]
    finally:
        b.close()
