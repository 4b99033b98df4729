"""galearn.compute: the same outputs on a real 2-process LocalCluster as in-process; faults lose nothing."""

from __future__ import annotations

import os
import signal
import threading
import time

import h5py
import numpy as np
import pytest

pytest.importorskip("distributed")

from galearn.cli import main  # noqa: E402
from galearn.compute import compute_session, parse_scheduler, partition_bounds, subsample_indices  # noqa: E402
from galearn.config import ComputeConfig, CutoutConfig, FeatureConfig, SimulateConfig  # noqa: E402
from galearn.errors import BadValueError, MissingInputError  # noqa: E402
from galearn.store import Workspace, open_sample, read_features, shard_dir, shard_path  # noqa: E402
from galearn.survey import cutouts as cutouts_mod  # noqa: E402
from galearn.survey import make_sample_from_mosaics  # noqa: E402

#: Features on any scheduler must agree to this (absolute, float32); measured: bit-identical.
FEATURE_ATOL = 1e-5

SMALL = ComputeConfig(cutout_tile_pix=256, cutout_partition=24, feature_partition=16)
FEAT = FeatureConfig(backbone="random-resnet18", input_size=64, tta=1, scales=(1.0,), batch_size=16)
SELECT = "zbest > 0.01 and CLASS_STAR < 0.9"


def _cfg(scheduler: str) -> ComputeConfig:
    import dataclasses

    return dataclasses.replace(SMALL, scheduler=scheduler)


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    from galearn.mock import simulate_field

    out = tmp_path_factory.mktemp("compute_field")
    cfg = SimulateConfig(n_galaxies=150, n_stars=4, random_state=5, density_per_arcmin2=60.0, n_jobs=1)
    paths = simulate_field(out, cfg, progress=False)
    return {"catalog": paths["catalog"], "images": {b: paths[b] for b in ("F435W", "F850LP", "F160W")}}


@pytest.fixture(scope="module")
def cluster():
    """A real LocalCluster of 2 single-threaded worker processes on 127.0.0.1."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as lc, Client(lc) as client:
        yield {"address": lc.scheduler_address, "client": client}


@pytest.fixture(scope="module")
def reference(field, tmp_path_factory):
    """Cutouts + features in-process (``--scheduler none``)."""
    ws = Workspace(tmp_path_factory.mktemp("ws_none"))
    with compute_session(_cfg("none")):
        sample = make_sample_from_mosaics(field["catalog"], field["images"], ws, CutoutConfig(select=SELECT))
        from galearn.features import run_features

        feats = read_features(run_features(ws, FEAT))
    return ws, sample, feats


def test_parse_scheduler():
    assert parse_scheduler("none").kind == "none"
    assert parse_scheduler(None).kind == "auto"
    assert parse_scheduler("local").n_workers is None
    assert parse_scheduler("local:3").n_workers == 3
    assert parse_scheduler("tcp://127.0.0.1:8786").address == "tcp://127.0.0.1:8786"
    for bad in ("local:0", "http://x:1", "cluster", "local:two"):
        with pytest.raises(BadValueError):
            parse_scheduler(bad)
    with pytest.raises(MissingInputError):
        parse_scheduler(None, "/nonexistent/scheduler.json")
    assert partition_bounds(10, 4, multiple=3) == [(0, 6), (6, 10)]
    a, b = subsample_indices(1000, 100, 3), subsample_indices(1000, 100, 3)
    assert np.array_equal(a, b) and len(np.unique(a)) == 100 and np.all(np.diff(a) > 0)


def test_cli_bad_scheduler_one_line(tmp_path, capsys):
    assert main(["features", "--workspace", str(tmp_path), "--scheduler", "http://nowhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scheduler" in err[0]


def _worker_admin_config():
    import dask

    return {k: dask.config.get(k) for k in ("distributed.worker.profile.enabled", "distributed.admin.tick.interval",
                                            "distributed.worker.memory.monitor-interval")}


def test_local_cluster_workers_run_quiet():
    """galearn's own LocalCluster hands its workers LOCAL_CLUSTER_CONFIG (profiler off, rarer admin ticks)."""
    import dask

    from galearn.compute import LOCAL_CLUSTER_CONFIG

    with compute_session(ComputeConfig(scheduler="local:1")) as session:
        seen = list(session.client.run(_worker_admin_config).values())
    assert len(seen) == 1
    assert seen[0] == {k: LOCAL_CLUSTER_CONFIG[k] for k in seen[0]}
    assert dask.config.get("distributed.worker.profile.enabled") is True  # the driver's own config is untouched


def test_reference_is_partitioned(reference):
    ws, sample, feats = reference
    info = sample.extra["compute"]
    assert info["scheduler"] == "none" and info["n_partitions"] >= 4
    assert len(list(shard_dir(ws.sample).glob("part-*.h5"))) == info["n_partitions"]
    assert feats.attrs["compute"]["n_partitions"] == -(-sample.n // 16)
    # the reading API hides the shards: one array, in order
    batches = [b for _, b in sample.iter_batches(batch_size=7)]
    assert np.array_equal(np.concatenate(batches), sample.read())


def test_cluster_matches_in_process(field, reference, cluster, tmp_path):
    from galearn.features import run_features

    ws0, s0, f0 = reference
    ws = Workspace(tmp_path / "ws")
    with compute_session(_cfg(cluster["address"])) as session:
        s1 = make_sample_from_mosaics(field["catalog"], field["images"], ws, CutoutConfig(select=SELECT))
        f1 = read_features(run_features(ws, FEAT))
        assert session.n_workers == 2
    # identical stamps and catalogue rows, whatever the scheduler
    assert s1.checksum == s0.checksum
    assert np.array_equal(s1.read("stretched"), s0.read("stretched"))
    assert np.array_equal(s1.read("physical"), s0.read("physical"))
    for col in s0.catalog.colnames:
        a, b = np.asarray(s0.catalog[col]), np.asarray(s1.catalog[col])
        assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), col
    assert np.array_equal(s1.rejected["row"], s0.rejected["row"])
    assert list(s1.rejected["reason"]) == list(s0.rejected["reason"])
    np.testing.assert_allclose(f1.values, f0.values, rtol=0, atol=FEATURE_ATOL)
    assert list(f1.ids) == list(f0.ids)
    info = s1.extra["compute"]
    assert info["address"] == cluster["address"] and info["n_workers"] == 2
    assert f1.attrs["compute"]["n_workers"] == 2


def test_worker_killed_mid_features(reference, cluster, tmp_path):
    """One worker process is SIGKILLed while features run: the stage still holds every row exactly once."""
    import shutil

    from galearn.features import run_features

    ws0, s0, f0 = reference
    ws = Workspace(tmp_path / "ws")
    ws.root.mkdir()
    shutil.copy(ws0.sample, ws.sample)
    shutil.copytree(shard_dir(ws0.sample), shard_dir(ws.sample))
    client = cluster["client"]
    pids = client.run(os.getpid)  # worker address -> PID
    folder = shard_dir(ws.features("random-resnet18"))
    killed: dict = {}
    finished = threading.Event()

    def killer():
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not finished.is_set():
            if folder.is_dir() and any(folder.glob("part-*.h5")):
                busy = [w for w, tasks in client.processing().items() if tasks]
                victim = busy[0] if busy else next(iter(pids))
                os.kill(pids[victim], signal.SIGKILL)
                killed["pid"] = pids[victim]
                killed["running"] = not finished.is_set()
                return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        with compute_session(_cfg(cluster["address"])):
            f1 = read_features(run_features(ws, FEAT))
    finally:
        finished.set()
        thread.join()
    assert killed.get("running"), "the worker was not killed while the stage ran"
    assert len(f1.values) == s0.n and list(f1.ids) == list(s0.ids())
    np.testing.assert_allclose(f1.values, f0.values, rtol=0, atol=FEATURE_ATOL)
    n_parts = f1.attrs["compute"]["n_partitions"]
    assert len(list(folder.glob("part-*.h5"))) == n_parts
    # the nanny restarts the killed worker; later tests need only one live worker
    client.wait_for_workers(1, timeout=300)


def test_rerun_skips_finished_partitions(field, reference, cluster, tmp_path):
    """A stage interrupted part-way: the re-run checks each shard and recomputes only the missing / bad ones."""
    ws0, s0, _ = reference
    ws = Workspace(tmp_path / "ws")
    with compute_session(_cfg(cluster["address"])):
        make_sample_from_mosaics(field["catalog"], field["images"], ws, CutoutConfig(select=SELECT))
    n_parts = open_sample(ws.sample).extra["compute"]["n_partitions"]
    # "interrupt": no sample.h5, one shard never written, one shard half-written (corrupted)
    ws.sample.unlink()
    shard_path(ws.sample, 1).unlink()
    with h5py.File(shard_path(ws.sample, 2), "a") as f:
        f["stretched"][0, 0, 0, 0] += 1.0
    with compute_session(_cfg(cluster["address"])):
        s2 = make_sample_from_mosaics(field["catalog"], field["images"], ws, CutoutConfig(select=SELECT))
    info = s2.extra["compute"]
    assert info["n_partitions_run"] == 2 and info["n_partitions_skipped"] == n_parts - 2
    assert s2.checksum == s0.checksum
    assert np.array_equal(s2.read(), s0.read())


def test_bad_data_partition_rows_rejected_with_reason(field, reference, tmp_path, monkeypatch):
    ws0, s0, _ = reference
    real = cutouts_mod._cutout_task

    def flaky(part, **kw):
        if part["index"] == 1:
            raise ValueError("corrupt pixels in this tile")
        return real(part, **kw)

    monkeypatch.setattr(cutouts_mod, "_cutout_task", flaky)
    ws = Workspace(tmp_path / "ws")
    with compute_session(_cfg("none")):
        s = make_sample_from_mosaics(field["catalog"], field["images"], ws, CutoutConfig(select=SELECT))
    bad = [r for r in s.rejected if str(r["reason"]).startswith("partition 1 failed: ValueError: corrupt")]
    assert bad, "the failed partition's rows are not named"
    assert s.extra["compute"]["n_partitions_failed"] == 1
    n_input = s.extra["n_input"]
    assert s.n + len(s.rejected) == n_input
    assert len(set(s.catalog["galearn_row"]) | set(s.rejected["row"])) == n_input
    assert s.n == s0.n - len(bad)


def test_map_fit_on_subsample_then_transform(cluster, tmp_path):
    """Maps of millions: fit on a seeded subsample, place the rest in partitions; same on any scheduler."""
    from galearn.maps.embed import TSNEMap
    from galearn.maps.scale import fit_on_subsample

    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (300, 20)), rng.normal(6, 1, (300, 20))]).astype("f4")
    path = tmp_path / "f.h5"
    with h5py.File(path, "w") as f:
        f["features"] = X
    runs = {}
    for sched in ("none", cluster["address"]):
        cfg = ComputeConfig(scheduler=sched)
        with compute_session(cfg):
            est = TSNEMap(perplexity=20, pca_components=10, n_jobs=1, random_state=0, n_iter=250)
            xy, info = fit_on_subsample(est, X, feature_path=path, subsample=200, partition=128, random_state=1)
        runs[sched] = xy
        assert info["n_fit"] == 200 and info["n_placed"] == 400 and info["n_partitions"] == 5
        assert np.isfinite(xy).all()
    a, b = runs.values()
    np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    # the two groups stay apart on the map, placed points included
    centre = lambda rows: a[rows].mean(axis=0)  # noqa: E731
    sep = np.linalg.norm(centre(slice(0, 300)) - centre(slice(300, 600)))
    assert sep > 3 * a[:300].std(axis=0).mean()


def _copy_ws(ws: Workspace, dest) -> Workspace:
    import shutil

    shutil.copytree(ws.root, dest)
    return Workspace(dest)


@pytest.mark.parametrize("space", ["pca:5", pytest.param("umap:5", marks=pytest.mark.slow)])
def test_classify_fit_subsample_same_classes_on_cluster(reference, cluster, tmp_path, space):
    """classify at scale: PCA (+ the space's UMAP) + k-means fitted on a seeded subsample, the rest assigned in
    partitions; the same classes in-process and on a 2-worker cluster; agreement on a stated subsample; provenance.
    The default space (umap:5) is the slow variant: numba compiles UMAP's transform in each new worker (~1 min)."""
    import dataclasses
    import json

    from astropy.table import Table

    from galearn.config import ClassifyConfig
    from galearn.evaluate import run_classify
    from galearn.store import read_manifest

    ws0, sample, _ = reference
    cfg = ClassifyConfig(compare=("truth_morph",), fit_subsample=60, agreement_subsample=90, stability_resamples=1,
                         k_max=4, cluster_space=space)
    out = {}
    for name, sched in (("none", "none"), ("cluster", cluster["address"])):
        ws = _copy_ws(ws0, tmp_path / name)
        with compute_session(dataclasses.replace(SMALL, scheduler=sched, transform_partition=25)):
            metrics = run_classify(ws, cfg)
        out[name] = (Table.read(ws.classes), metrics, read_manifest(ws), json.loads(ws.metrics.read_text()))
    (t0, m0, _, _), (t1, m1, man1, j1) = out["none"], out["cluster"]
    assert len(t0) == sample.n
    assert np.array_equal(np.asarray(t0["cluster"]), np.asarray(t1["cluster"]))
    np.testing.assert_allclose(np.asarray(t0["cluster_probability"]), np.asarray(t1["cluster_probability"]),
                               rtol=0, atol=1e-9)
    scale = m1["clusters"]["scale"]
    assert scale["n_fit"] == 60 and scale["n_assigned"] == sample.n - 60
    assert scale["n_partitions"] == len([a for a in range(0, sample.n, 25)])
    assert scale["agreement_rows"] == 90 and j1["clusters"]["scale"] == scale
    for column, m in m1["agreement"].items():
        assert m["agreement_subsample"] == {"rows": 90, "of": sample.n, "seed": 0}
        assert m["n_galaxies"] + m["n_unlabelled"] + sum(m["excluded_classes"].values()) == 90
        assert m == m0["agreement"][column]
    assert m1["clusters"]["stability"] == m0["clusters"]["stability"] is not None
    # every galaxy has a cluster; the kNN prediction only where the agreement subsample compared it
    assert (np.asarray(t1["cluster"]) >= 0).all()
    rec = man1["compute"]["classify_assign"]
    assert rec["address"] == cluster["address"] and rec["n_workers"] == 2
    assert rec["n_partitions"] == scale["n_partitions"]


def test_gan_evaluate_feature_pass_through_compute(reference, cluster):
    """The feature pass of `gan evaluate` (features_of_rows): partitions, model once per worker; the same
    features as `galearn features` wrote, in-process and on the cluster."""
    from galearn.features.extract import features_of_rows

    ws, sample, feats = reference
    rows = np.arange(3, sample.n, 2)
    spec = {"name": FEAT.backbone, "weights": None, "workspace": str(ws.root), "device": None, "layers": None,
            "random_state": int(FEAT.random_state)}
    got = {}
    for sched in ("none", cluster["address"]):
        with compute_session(_cfg(sched)) as session:
            got[sched] = features_of_rows(sample.path, rows, spec, tta=FEAT.tta, input_size=FEAT.input_size,
                                          scales=FEAT.scales, batch_size=FEAT.batch_size, stage="gan_evaluate_features")
            rec = session.stages["gan_evaluate_features"]
            assert rec["n_partitions"] == -(-len(rows) // 16)
    a, b = got.values()
    np.testing.assert_allclose(a, b, rtol=0, atol=FEATURE_ATOL)
    np.testing.assert_allclose(a, feats.values[rows], rtol=0, atol=FEATURE_ATOL)
    assert rec["n_workers"] == 2 and rec["address"] == cluster["address"]
