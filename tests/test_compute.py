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
