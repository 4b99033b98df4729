"""`galearn anomalies`, `galearn learn`, the anomaly re-ranking and the page's neighbour lists."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.table import Table
from sklearn.datasets import make_blobs


from galearn.cli import main
from galearn.errors import BadValueError, EmptySelectionError, MissingInputError
from galearn.explore import (anomaly_scores, fit_classifier, neighbour_indices, propose_uncertain, read_labels,
                             rerank_anomalies, run_anomalies, run_learn)
from galearn.explore.anomalies import ranks_of, recall_at
from galearn.store import Workspace, open_sample, read_metrics, read_table, update_metrics, write_sample

from conftest import write_feature_files

N_ORDINARY, DIM = 300, 16


def make_data(seed=0):
    """Two ordinary classes (blobs) plus 12 isolated far-off rare galaxies (rows 300..311)."""
    rng = np.random.default_rng(seed)
    X, y = make_blobs(n_samples=N_ORDINARY, centers=[np.zeros(DIM), np.full(DIM, 3.0)], n_features=DIM,
                      cluster_std=1.0, random_state=seed)
    directions = rng.normal(0, 1, (12, DIM))
    rare = 1.5 + 15.0 * directions / np.linalg.norm(directions, axis=1, keepdims=True)  # isolated, far
    kinds = np.repeat(["lens", "ring", "trail"], 4)
    Xall = np.concatenate([X, rare])
    labels = np.concatenate([np.array(["early-type", "disk"])[y], np.full(12, "disk")])
    truth_rare = np.concatenate([np.full(N_ORDINARY, "none"), kinds])
    return Xall, labels, truth_rare


def make_workspace(root, seed=0):
    ws = Workspace(root)
    X, labels, truth_rare = make_data(seed)
    n = len(X)
    rng = np.random.default_rng(seed)
    cat = Table({"ID": np.arange(n) + 1, "truth_morph": labels, "truth_rare": truth_rare})
    write_sample(ws.sample, rng.uniform(0, 1, (n, 3, 8, 8)), cat, physical=None,
                 bands=["F435W", "F850LP", "F160W"], kind="mock", columns={"id": "ID"})
    write_feature_files(ws, open_sample(ws.sample), ["efficientnet-lite0"], X, rng)
    update_metrics(ws.metrics, {"features": {"backbone": "efficientnet-lite0"}})
    return ws, X, labels, truth_rare


# ----------------------------------------------------------------------------- anomalies


@pytest.mark.parametrize("method", ["iforest", "lof"])
def test_far_galaxies_rank_first(method):
    X, _, truth_rare = make_data()
    scores = anomaly_scores(X, method=method, random_state=0)
    order = np.argsort(ranks_of(scores))
    assert recall_at(order, truth_rare != "none", 12) == 1.0
    np.testing.assert_array_equal(scores, anomaly_scores(X, method=method, random_state=0))


def test_subsample_fit_scores_everything():
    X, _, truth_rare = make_data()
    scores = anomaly_scores(X, max_fit=100, chunk_size=37, random_state=1)
    assert scores.shape == (len(X),) and np.isfinite(scores).all()
    order = np.argsort(ranks_of(scores))
    assert recall_at(order, truth_rare != "none", 20) >= 0.9
    lof = anomaly_scores(X, method="lof", max_fit=150, chunk_size=50, random_state=1)
    assert recall_at(np.argsort(ranks_of(lof)), truth_rare != "none", 20) >= 0.9


def test_anomaly_bad_inputs():
    X, _, _ = make_data()
    with pytest.raises(BadValueError, match="--method"):
        anomaly_scores(X, method="svm")
    with pytest.raises(BadValueError, match="at least 3"):
        anomaly_scores(X[:2])
    bad = X.copy()
    bad[5, 0] = np.nan
    with pytest.raises(BadValueError, match="row 5"):
        anomaly_scores(bad)


def test_run_anomalies_and_cli(tmp_path, capsys):
    ws, X, _, truth_rare = make_workspace(tmp_path / "ws")
    entry = run_anomalies(ws, random_state=0)
    table = read_table(ws.anomalies)
    assert table.colnames == ["id", "score", "rank"]
    assert sorted(table["rank"]) == list(range(1, len(X) + 1))
    assert entry["truth"]["n_rare"] == 12 and entry["truth"]["recall_top50"] == 1.0
    assert entry["truth"]["recall_top50_random"] == pytest.approx(50 / len(X))
    assert read_metrics(ws.metrics)["anomalies"]["method"] == "lof"  # the default, by measurement
    assert main(["anomalies", "--workspace", str(ws.root), "--method", "iforest"]) == 0
    assert "recall in the top 50 1.000" in capsys.readouterr().out
    assert read_metrics(ws.metrics)["anomalies"]["method"] == "iforest"
    assert main(["anomalies", "--workspace", str(ws.root), "--method", "svm"]) == 2
    assert main(["anomalies", "--workspace", str(ws.root), "--max-fit", "1"]) == 2
    assert "--max-fit" in capsys.readouterr().err
    assert main(["anomalies", "--workspace", str(ws.root), "--backbone", "nope"]) == 2
    err = capsys.readouterr().err
    assert "nope.h5 does not exist" in err and len(err.strip().splitlines()) == 1
    assert main(["anomalies", "--workspace", str(tmp_path / "empty")]) == 2
    assert "sample.h5" in capsys.readouterr().err


def test_anomalies_partitioned_same_on_cluster(tmp_path, capsys):
    """Fit on a subsample, score in partitions: identical scores in-process and on a 2-worker LocalCluster."""
    pytest.importorskip("distributed")
    ws, X, _, truth_rare = make_workspace(tmp_path / "ws")
    small = ["compute.anomaly_fit_subsample=150", "compute.anomaly_partition=64"]
    scores = {}
    for scheduler in ("none", "local:2"):
        assert main(["anomalies", "--workspace", str(ws.root), "--scheduler", scheduler, *small]) == 0
        assert f"scored in 5 partition(s) on scheduler {scheduler}" in capsys.readouterr().out
        entry = read_metrics(ws.metrics)["anomalies"]
        assert entry["n_fit"] == 150 and entry["compute"]["n_partitions"] == 5
        assert entry["compute"]["scheduler"] == scheduler
        assert entry["compute"]["n_workers"] == (1 if scheduler == "none" else 2)
        table = read_table(ws.anomalies)
        assert table.meta["compute"]["partition_size"] == 64
        scores[scheduler] = np.asarray(table["score"])
    np.testing.assert_array_equal(scores["none"], scores["local:2"])
    assert recall_at(np.argsort(ranks_of(scores["none"])), truth_rare != "none", 20) >= 0.9
    # the library call with the rows in the tasks gives the same scores as the partitions reading the file
    same = anomaly_scores(X.astype("f4"), max_fit=150, chunk_size=64, random_state=0)
    np.testing.assert_array_equal(same, scores["none"])
    # --max-fit wins over the configuration; bad values of the new settings exit 2 with one line
    assert main(["anomalies", "--workspace", str(ws.root), "--max-fit", "200", *small]) == 0
    assert read_metrics(ws.metrics)["anomalies"]["n_fit"] == 200
    capsys.readouterr()
    for bad, where in (("compute.anomaly_partition=0", "anomaly_partition"),
                       ("compute.anomaly_fit_subsample=2", "anomaly_fit_subsample"),
                       ("compute.anomaly_fit_subsample=many", "anomaly_fit_subsample")):
        assert main(["anomalies", "--workspace", str(ws.root), "--scheduler", "none", bad]) == 2
        err = capsys.readouterr().err
        assert where in err and len(err.strip().splitlines()) == 1
    assert main(["anomalies", "--workspace", str(ws.root), "--scheduler", "local:0"]) == 2


# ----------------------------------------------------------------------------- labels + learn


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, match", [
    ("id,label\n1,disk\n99999,disk\n", "line 3: id '99999' is not in the sample"),
    ("id,label\n1,disk\n2,\n", "line 3: empty label"),
    ("id,label\n1,disk\n,disk\n", "line 3: empty id"),
    ("id,label\n1,disk\n2,disk\n", "every label is 'disk'"),
    ("galaxy,label\n1,disk\n", "line 1: the header"),
    ("id,label\n", "no label rows"),
    ("", "empty file"),
    ("id,label\n1,disk\n2,early-type\n1,early-type\n", "line 4: id '1' is labelled 'early-type', but 'disk' on line 2"),
    ("id,label\n1,disk\n2\n", "line 3: expected 2 fields"),
])
def test_bad_label_files(tmp_path, capsys, text, match):
    ids = np.arange(1, 21).astype(str)
    path = _write(tmp_path / "labels.csv", text)
    with pytest.raises((BadValueError, EmptySelectionError), match=match):
        read_labels(path, ids)


def test_learn_cli_bad_inputs_exit_2(tmp_path, capsys):
    ws, *_ = make_workspace(tmp_path / "ws")
    bad = _write(tmp_path / "bad.csv", "id,label\n1,disk\n2,early-type\n4242,disk\n")
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.csv line 4: id '4242'" in err and len(err.strip().splitlines()) == 1
    one = _write(tmp_path / "one.csv", "id,label\n1,disk\n2,disk\n")
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(one)]) == 2
    assert "at least two classes" in capsys.readouterr().err
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(tmp_path / "missing.csv")]) == 2
    assert "missing.csv" in capsys.readouterr().err
    good = _write(tmp_path / "good.csv", "id,label\n1,disk\n2,early-type\n")
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(good), "--n-propose", "-1"]) == 2
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(good), "--model", "forest"]) == 2
    capsys.readouterr()
    for bad_div in ("0", "-3"):
        assert main(["learn", "--workspace", str(ws.root), "--labels", str(good), "--diversity", bad_div]) == 2
        err = capsys.readouterr().err
        assert "--diversity" in err and len(err.strip().splitlines()) == 1
    assert main(["learn", "--workspace", str(ws.root), "--n-propose", "-2"]) == 2  # cold start checks it too
    with pytest.raises(BadValueError, match="--diversity"):
        run_learn(ws, good, diversity=0)
    with pytest.raises(MissingInputError):
        run_learn(Workspace(tmp_path / "nows"), good)
    with pytest.raises(MissingInputError):
        run_learn(Workspace(tmp_path / "nows"))


def test_learn_cold_start_proposes_representative_galaxies(tmp_path, capsys):
    """No labels yet: `galearn learn` proposes k-means centres, seeded, covering both groups, no outlier."""
    ws, X, labels, truth_rare = make_workspace(tmp_path / "ws")
    assert main(["learn", "--workspace", str(ws.root), "--n-propose", "6", "--seed", "4"]) == 0
    assert "6 representative galaxies proposed" in capsys.readouterr().out
    t = read_table(ws.predictions)
    assert t.colnames == ["id", "label", "proposal"]
    proposal = np.asarray(t["proposal"])
    picked = np.flatnonzero(proposal > 0)
    assert sorted(proposal[picked]) == list(range(1, 7))
    assert set(labels[picked]) == {"disk", "early-type"}  # both groups of the map
    assert (truth_rare[picked] == "none").all()  # the big groups' centres, not the isolated rare ones
    entry = read_metrics(ws.metrics)["learn"]
    assert entry["n_labels"] == 0 and entry["n_proposed"] == 6
    # the same seed gives the same proposals, in the same order
    assert main(["learn", "--workspace", str(ws.root), "--n-propose", "6", "--seed", "4"]) == 0
    np.testing.assert_array_equal(np.asarray(read_table(ws.predictions)["proposal"]), proposal)
    from galearn.explore import propose_representative
    from galearn.explore.anomalies import reduce_for_scoring

    Z, _ = reduce_for_scoring(X, random_state=4)
    again = propose_representative(Z, 6, random_state=4)
    np.testing.assert_array_equal(again, np.argsort(np.where(proposal > 0, proposal, 99))[:6])
    excluded = np.zeros(len(X), bool)
    excluded[again[:3]] = True
    assert not np.isin(propose_representative(Z, 6, exclude=excluded, random_state=4), again[:3]).any()
    # labelling the proposals is the real path: the page exports them, `learn --labels` trains on them
    lines = ["id,label"] + [f"{t['id'][i]},{labels[i]}" for i in picked]
    path = _write(tmp_path / "labels.csv", "\n".join(lines) + "\n")
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(path)]) == 0
    pred = read_table(ws.predictions)
    assert np.mean(np.asarray(pred["prediction"])[:N_ORDINARY] == labels[:N_ORDINARY]) > 0.95


def test_diverse_uncertainty_batches():
    X, labels, _ = make_data()
    rows = np.r_[np.flatnonzero(labels == "disk")[:3], np.flatnonzero(labels == "early-type")[:3]]
    proba = fit_classifier(X, rows, labels[rows], random_state=0).predict_proba(X)
    labelled = np.isin(np.arange(len(X)), rows)
    plain = propose_uncertain(proba, labelled, 5)
    spread = propose_uncertain(proba, labelled, 5, Z=X, diversity=4, random_state=0)
    from galearn.explore.learn import uncertainty

    u = uncertainty(proba)
    top20 = propose_uncertain(proba, labelled, 20)
    assert len(set(spread)) == 5 and np.isin(spread, top20).all() and not np.isin(spread, rows).any()
    assert (np.diff(u[spread]) <= 1e-12).all()  # most uncertain first
    np.testing.assert_array_equal(spread, propose_uncertain(proba, labelled, 5, Z=X, diversity=4, random_state=0))
    np.testing.assert_array_equal(propose_uncertain(proba, labelled, 5, Z=X, diversity=1), plain)

    def spread_of(sel):
        d = np.linalg.norm(X[sel][:, None] - X[sel][None], axis=-1)
        return d[np.triu_indices(len(sel), 1)].min()

    assert spread_of(spread) >= spread_of(plain)
    with pytest.raises(BadValueError, match="--diversity"):
        propose_uncertain(proba, labelled, 5, Z=X, diversity=0)


def test_learn_predicts_and_proposes(tmp_path, capsys):
    ws, X, labels, _ = make_workspace(tmp_path / "ws")
    rng = np.random.default_rng(3)
    picked = np.concatenate([rng.choice(np.flatnonzero(labels[:N_ORDINARY] == c), 5, replace=False)
                             for c in ("disk", "early-type")])
    lines = ["id,label"] + [f"{i + 1},{labels[i]}" for i in picked]
    path = _write(tmp_path / "labels.csv", "\n".join(lines) + "\n")
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(path), "--n-propose", "7"]) == 0
    assert "10 labels" in capsys.readouterr().out
    t = read_table(ws.predictions)
    for col in ("id", "label", "prediction", "probability", "uncertainty", "p_disk", "p_early_type", "proposal"):
        assert col in t.colnames
    acc = np.mean(np.asarray(t["prediction"])[:N_ORDINARY] == labels[:N_ORDINARY])
    assert acc > 0.95
    np.testing.assert_allclose(t["p_disk"] + t["p_early_type"], 1.0, atol=1e-9)
    proposed = np.flatnonzero(np.asarray(t["proposal"]) > 0)
    assert len(proposed) == 7 and not np.isin(proposed, picked).any()
    # default proposals: spread-out galaxies among the 2 x 7 most uncertain unlabelled ones
    free = np.setdiff1d(np.arange(len(t)), picked)
    u_free = np.sort(np.asarray(t["uncertainty"])[free])
    assert np.asarray(t["uncertainty"])[proposed].min() >= u_free[-14] - 1e-12
    # --diversity 1: exactly the most uncertain
    assert main(["learn", "--workspace", str(ws.root), "--labels", str(path), "--n-propose", "7",
                 "--diversity", "1"]) == 0
    t = read_table(ws.predictions)
    proposed = np.flatnonzero(np.asarray(t["proposal"]) > 0)
    assert np.asarray(t["uncertainty"])[proposed].min() >= u_free[-7] - 1e-12
    assert read_metrics(ws.metrics)["learn"]["n_labels"] == 10


def test_learn_gp_and_determinism():
    X, labels, _ = make_data()
    rows = np.r_[0:10, 150:160]
    lab = labels[rows]
    if len(set(lab)) < 2:
        rows = np.r_[np.flatnonzero(labels == "disk")[:5], np.flatnonzero(labels == "early-type")[:5]]
        lab = labels[rows]
    for model in ("logistic", "gp"):
        a = fit_classifier(X, rows, lab, model=model, random_state=0).predict_proba(X)
        b = fit_classifier(X, rows, lab, model=model, random_state=0).predict_proba(X)
        np.testing.assert_array_equal(a, b)
    p = propose_uncertain(a, np.isin(np.arange(len(X)), rows), 5)
    assert len(p) == 5 and not np.isin(p, rows).any()


# ----------------------------------------------------------------------------- re-ranking


def test_rerank_lowers_neighbours_of_boring_and_raises_interesting():
    """Three far groups A, B, C of equally unusual galaxies; one of A marked boring, one of B interesting."""
    rng = np.random.default_rng(0)
    bulk = rng.normal(0, 1, (500, 5))
    centres = np.array([[30, 0, 0, 0, 0], [0, 30, 0, 0, 0], [0, 0, 30, 0, 0]], float)
    groups = [c + rng.normal(0, 0.2, (6, 5)) for c in centres]
    Z = np.concatenate([bulk, *groups])
    A, B, C = (np.arange(500 + 6 * g, 506 + 6 * g) for g in range(3))
    scores = np.r_[rng.uniform(0, 1, 500), rng.uniform(5, 6, 18)]  # the groups are the most unusual
    new = rerank_anomalies(Z, scores, [A[0], B[0]], [False, True])
    assert new[A[0]] == -np.inf and new[B[0]] == -np.inf
    base = rerank_anomalies(Z, scores, [], [])
    np.testing.assert_allclose(new[C], base[C], rtol=1e-3)  # far from every label: (almost) unchanged
    assert new[A[1:]].max() < 0.25 * base[A[1:]].min()  # next to boring: pushed down
    assert new[B[1:]].min() > 1.5 * base[B[1:]].max() and new[B[1:]].min() > new[C].max()  # up
    order = np.argsort(-new)
    assert set(order[:5]) == set(B[1:])  # the interesting group first, then C, A far down
    assert set(order[5:11]) == set(C)
    assert np.all(np.isin(A[1:], order[-400:]))
    # the bulk is ordered as before
    bulk_new, bulk_old = new[:500], base[:500]
    assert np.corrcoef(bulk_new, bulk_old)[0, 1] > 0.99
    with pytest.raises(BadValueError, match="judgements"):
        rerank_anomalies(Z, scores, [1, 2], [True])


# ----------------------------------------------------------------------------- neighbours


def test_neighbour_indices_match_brute_force():
    X, _, _ = make_data()
    nb = neighbour_indices(X, 12, n_components=None)
    assert nb.shape == (len(X), 12)
    assert not (nb == np.arange(len(X))[:, None]).any()
    from sklearn.preprocessing import StandardScaler

    Z = StandardScaler().fit_transform(X)
    d = ((Z[:, None, :] - Z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    brute = np.argsort(d, axis=1)[:, :12]
    np.testing.assert_array_equal(np.sort(d[np.arange(len(X))[:, None], nb], axis=1),
                                  np.sort(d[np.arange(len(X))[:, None], brute], axis=1))
    with pytest.raises(BadValueError):
        neighbour_indices(X[:1])
