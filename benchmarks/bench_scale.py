"""Scale-out benchmark: cutouts + features (+ statmorph) on 1 and 2 local Dask workers, cost per galaxy vs N.

A large survey is imitated by *repeating the mock field*: the catalogue of one
simulated GOODS-S-like field (``galearn simulate``) is copied ``ceil(N / rows)``
times, each copy's positions shifted by a seeded integer offset of -3..3
pixels (RA/Dec recomputed through the mosaic's WCS), so N distinct stamps are
cut from the same three memory-mapped mosaics. (Tiling the 5456 x 5456-pixel
field into a bigger mosaic costs 0.5 GB of disk per field copy; the repeated
catalogue exercises the same code path, tile partitions and per-row work, but
with the mosaic pages mostly in the page cache, so cutting is an optimistic
case for I/O.)

For each N and each scheduler (``local:1``, ``local:2``, or ``none``) it
measures wall time of the cutouts, the features and statmorph on a fixed
subsample; the CPU time spent inside the tasks (``time.process_time`` on the
worker, recorded by :func:`galearn.compute.map_partitions`), so that costs per
galaxy and the speed-up expected on an idle machine can be read off a loaded
one; cost per galaxy; worker peak resident memory (``ru_maxrss``, fresh
workers per run); bytes on disk per galaxy; the scheduler's overhead per task
(a no-op map over 400 tasks); and a t-SNE map fitted on a subsample +
``transform`` of the rest against one fit of all rows. Finally it projects the
measured costs to 1e6 / 1e7 / 1e8 galaxies on 16 / 128 / 1024 workers.

The scale runs use a *light feature setting* so that tens of thousands of
galaxies fit in minutes: ``random-resnet18`` (random-initialised ResNet-18),
stamps at their native 64 px (``input_size=64``, no resize), no TTA
(``tta=1``), one crop (``scales=(1.0,)``: the whole stamp), batch 64. The
default features (``FeatureConfig()``: EfficientNet-Lite0, 64 px stamps
upsampled to 128 px, 4 quarter turns, 2 crops: 8 forward passes at 4x the
pixels) are measured separately on a few hundred stamps in-process
(``--measure-default-features N``) and the projection uses that CPU cost.

Other modes: ``--map-n N --map-subsample S`` (each map in its own process: wall, CPU, peak memory and a
quality figure of both maps), ``--kmeans`` (k-means vs mini-batch k-means cost), ``--admin-overhead N``
(CPU of a Dask worker's admin thread beside a feature task, Dask's defaults vs galearn's
``LOCAL_CLUSTER_CONFIG``), ``--ceiling N`` (this machine's speed-up for perfectly parallel work: 1 vs 2
plain processes of the light features, no Dask) and ``--project-from JSON...`` (only the projection).

Usage (a few minutes on a loaded 2-core machine at the defaults)::

    PYTHONPATH=src python benchmarks/bench_scale.py --mock /path/to/mock --n 5000 10000 \
        --out /tmp/bench_scale.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import time
from pathlib import Path

import numpy as np


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _noop(part, **kw):
    return part


def repeated_catalog(mock: Path, n: int, out: Path, seed: int = 0) -> Path:
    """N catalogue rows: the mock catalogue repeated, each copy shifted by a seeded integer pixel offset."""
    from astropy.io import fits
    from astropy.table import Table, vstack
    from astropy.wcs import WCS

    cat = Table.read(mock / "catalog.fits")
    w = WCS(fits.getheader(mock / "F160W.fits"))
    ra_col = next(c for c in ("RA_1", "RA", "ra") if c in cat.colnames)
    dec_col = next(c for c in ("DEC_1", "DEC", "dec") if c in cat.colnames)
    x, y = w.all_world2pix(np.asarray(cat[ra_col], float), np.asarray(cat[dec_col], float), 0)
    rng = np.random.default_rng(seed)
    copies = []
    for k in range(math.ceil(n / len(cat))):
        c = cat.copy()
        dx, dy = (rng.integers(-3, 4, size=2) if k else (0, 0))
        ra, dec = w.all_pix2world(x + dx, y + dy, 0)
        c[ra_col], c[dec_col] = ra, dec
        c["ID"] = np.asarray(cat["ID"]) + k * 10**7
        copies.append(c)
    big = vstack(copies)[:n]
    path = out / f"catalog_{n}.fits"
    big.write(path, overwrite=True)
    return path


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


def run_one(mock: Path, catalog: Path, scheduler: str, work: Path, *, n_morph: int, feature_partition: int) -> dict:
    from galearn.compute import compute_session, map_partitions
    from galearn.config import ComputeConfig, CutoutConfig, FeatureConfig
    from galearn.morphology import measure_morphology_parallel
    from galearn.features import run_features
    from galearn.store import Workspace, open_sample, shard_dir
    from galearn.survey import make_sample_from_mosaics

    ws = Workspace(work / scheduler.replace(":", ""))
    shutil.rmtree(ws.root, ignore_errors=True)
    images = {b: mock / f"{b}.fits" for b in ("F435W", "F850LP", "F160W")}
    ccfg = ComputeConfig(scheduler=scheduler, cutout_tile_pix=1024, cutout_partition=2048,
                         feature_partition=feature_partition, morphology_partition=32, auto_threshold=0)
    fcfg = FeatureConfig(backbone="random-resnet18", input_size=64, tta=1, scales=(1.0,), batch_size=64)
    rec: dict = {"scheduler": scheduler}
    t0 = time.perf_counter()
    with compute_session(ccfg) as session:
        if session.spec.kind != "none":
            session.get_client(1)
        rec["cluster_start_s"] = time.perf_counter() - t0
        rec["n_workers"] = session.n_workers
        t = time.perf_counter()
        sample = make_sample_from_mosaics(catalog, images, ws, CutoutConfig())
        rec["cutouts_s"] = time.perf_counter() - t
        rec["n_stamps"] = sample.n
        rec["cutout_partitions"] = sample.extra["compute"]["n_partitions"]
        t = time.perf_counter()
        run_features(ws, fcfg)
        rec["features_s"] = time.perf_counter() - t
        rec["feature_partitions"] = -(-sample.n // feature_partition)
        phys = sample.read("physical", slice(0, min(n_morph, sample.n)))
        noise = np.asarray(sample.stretch["noise_sigma"])
        t = time.perf_counter()
        measure_morphology_parallel(phys, sample.bands, noise_sigma=noise, progress=False)
        rec["statmorph_s"] = time.perf_counter() - t
        rec["statmorph_n"] = len(phys)
        for stage, key in (("cutouts", "cutouts"), ("features", "features"), ("morphology", "statmorph")):
            st = session.stages.get(stage, {})
            rec[f"{key}_task_cpu_s"] = st.get("task_cpu_s")
            rec[f"{key}_task_wall_s"] = st.get("task_wall_s")
            rec[f"{key}_stage_partitions"] = st.get("n_partitions")
        client = session.client
        if client is not None:
            rss = client.run(_maxrss_mb)
            rec["worker_peak_rss_mb"] = sorted(round(v, 1) for v in rss.values())
            # scheduler overhead per task: a no-op over many small tasks
            n_tasks = 400
            t = time.perf_counter()
            for _ in map_partitions(_noop, list(range(n_tasks)), desc="noop", progress=False):
                pass
            rec["overhead_per_task_ms"] = 1000 * (time.perf_counter() - t) / n_tasks
        else:
            rec["worker_peak_rss_mb"] = [round(_maxrss_mb(), 1)]
    rec["bytes_per_galaxy"] = {
        "stamps": _du(shard_dir(ws.sample)) / sample.n,
        "features": _du(shard_dir(ws.features("random-resnet18"))) / sample.n,
        "catalogue_and_index": ws.sample.stat().st_size / sample.n,
    }
    rec["cost_per_galaxy_ms"] = {
        "cutouts": 1000 * rec["cutouts_s"] / sample.n,
        "features": 1000 * rec["features_s"] / sample.n,
        "statmorph": 1000 * rec["statmorph_s"] / max(1, rec["statmorph_n"]),
    }
    # CPU time spent inside the tasks (time.process_time on the worker): what the work costs a core,
    # whatever else competes for the machine
    rec["cpu_per_galaxy_ms"] = {
        "cutouts": 1000 * (rec["cutouts_task_cpu_s"] or 0) / sample.n,
        "features": 1000 * (rec["features_task_cpu_s"] or 0) / sample.n,
        "statmorph": 1000 * (rec["statmorph_task_cpu_s"] or 0) / max(1, rec["statmorph_n"]),
    }
    # driver-side (serial) part of each stage: its wall time minus the time spent inside tasks, 1 worker only
    if rec["n_workers"] == 1:
        rec["serial_s"] = {k: max(0.0, rec[f"{k}_s"] - (rec[f"{k}_task_wall_s"] or 0)) for k in ("cutouts", "features")}
    shutil.rmtree(ws.root, ignore_errors=True)
    return rec


def _map_data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` points of 10 seeded Gaussian clusters in 64 dimensions (centres ~ N(0, 4^2), unit noise), and labels."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, size=(10, 64))
    labels = rng.integers(0, 10, n)
    return (centres[labels] + rng.normal(size=(n, 64))).astype("f4"), labels


def _map_variant(n: int, subsample: int | None, work: str, out: str) -> None:
    """One map of :func:`map_bench` in a fresh process (so its peak memory is its own): fit (+ transform)."""
    import h5py

    from galearn.compute import compute_session
    from galearn.config import ComputeConfig
    from galearn.maps.embed import TSNEMap
    from galearn.maps.scale import fit_on_subsample

    X, _ = _map_data(n)
    path = Path(work) / f"map_features_{os.getpid()}.h5"
    with h5py.File(path, "w") as f:
        f["features"] = X
    rss0 = _maxrss_mb()
    with compute_session(ComputeConfig(scheduler="none")) as session:
        t, c = time.perf_counter(), time.process_time()
        emb, info = fit_on_subsample(TSNEMap(n_jobs=1, random_state=0), X, feature_path=path, subsample=subsample,
                                     partition=20000)
        total, cpu = time.perf_counter() - t, time.process_time() - c
        placed = session.stages.get("embed_transform", {})
    path.unlink()
    np.save(Path(out).with_suffix(".npy"), emb)
    Path(out).write_text(json.dumps({"seconds": total, "cpu_s": cpu, "fit_cpu_s": cpu - placed.get("task_cpu_s", 0.0),
                                     "transform_s": placed.get("seconds", 0.0),
                                     "transform_cpu_s": placed.get("task_cpu_s", 0.0),
                                     "fit_s": total - placed.get("seconds", 0.0), "peak_rss_mb": _maxrss_mb(),
                                     "rss_before_fit_mb": rss0, **info}))


def map_quality(X: np.ndarray, labels: np.ndarray, emb: np.ndarray, n_query: int = 2000, k: int = 10,
                seed: int = 1) -> dict:
    """Neighbourhood preservation and cluster recovery of a 2-D map, on a seeded sample of ``n_query`` points.

    ``knn_preserved``: mean fraction of a point's ``k`` nearest neighbours in the data (64-D, all N points)
    that are also among its ``k`` nearest on the map; ``knn_label_accuracy``: fraction of points whose
    ``k`` nearest map neighbours' majority label is their own cluster; ``kmeans_ari``: adjusted Rand index
    of k-means (10 clusters, seeded) on the map against the true clusters, all N points.
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score
    from sklearn.neighbors import NearestNeighbors

    q = np.sort(np.random.default_rng(seed).choice(len(X), size=min(n_query, len(X)), replace=False))

    def neighbours(data):
        idx = NearestNeighbors(n_neighbors=k + 1).fit(data).kneighbors(data[q], return_distance=False)
        return [[j for j in row if j != i][:k] for i, row in zip(q, idx)]

    hi, lo = neighbours(X), neighbours(emb)
    kept = np.mean([len(set(a) & set(b)) / k for a, b in zip(hi, lo)])
    votes = np.array([np.bincount(labels[b], minlength=10).argmax() for b in lo])
    km = KMeans(10, n_init=4, random_state=0).fit_predict(emb)
    return {"knn_preserved": round(float(kept), 4), "knn_label_accuracy": round(float(np.mean(votes == labels[q])), 4),
            "kmeans_ari": round(float(adjusted_rand_score(labels, km)), 4), "n_query": len(q), "k": k}


def map_bench(n: int, subsample: int, work: Path, seed: int = 0) -> dict:
    """t-SNE of n points: one fit of all rows vs a fit on ``subsample`` + transform of the rest (1 thread each).

    Each variant runs in its own process (wall time, peak resident memory of that process); both maps are
    scored by :func:`map_quality` on the same seeded points.
    """
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               NUMBA_NUM_THREADS="1")
    out = {"n": n, "subsample_rows": subsample, "data": "10 Gaussian clusters in 64 dimensions (seeded)",
           "load_average_at_start": round(os.getloadavg()[0], 2)}
    X, labels = _map_data(n, seed)
    for name, sub in (("subsample", subsample), ("single", 0)):
        res = work / f"map_{name}_{n}.json"
        subprocess.run([sys.executable, __file__, "--map-variant", str(n), str(sub), str(work), str(res)],
                       env=env, check=True)
        rec = json.loads(res.read_text())
        emb = np.load(res.with_suffix(".npy"))
        rec["quality"] = map_quality(X, labels, emb)
        out[name] = rec
        print(json.dumps({name: rec}), flush=True)
        res.unlink()
        res.with_suffix(".npy").unlink()
    out["single_fit_s"] = out["single"]["seconds"]
    out["subsample_fit_plus_transform_s"] = out["subsample"]["seconds"]
    return out


def expected_speedup(one: dict, workers: int = 2) -> dict:
    """Speed-up of ``workers`` over 1 worker on an idle machine, predicted from a 1-worker run's measurements.

    A stage on 1 worker takes ``serial + sum(task wall)``; on an idle machine with
    ``w`` single-threaded workers each task takes its CPU time, and the tasks are
    spread over the workers in rounds: ``serial + cpu / P * ceil(P / w)`` for P
    equal partitions.
    """
    out = {}
    for k in ("cutouts", "features"):
        p = max(1, int(one.get(f"{k}_stage_partitions") or 1))
        cpu = float(one.get(f"{k}_task_cpu_s") or 0.0)
        serial = float(one.get("serial_s", {}).get(k, 0.0))
        t1 = serial + cpu
        tw = serial + cpu / p * math.ceil(p / workers)
        out[k] = {"t1_idle_s": round(t1, 2), f"t{workers}_idle_s": round(tw, 2), "speedup": round(t1 / tw, 2)}
    return out


def default_feature_cost(mock_ws: Path | None, catalog: Path, mock: Path, work: Path, n: int) -> dict:
    """CPU ms per galaxy of the *default* features (FeatureConfig()), in-process, one thread, on ``n`` stamps."""
    from galearn.compute import compute_session
    from galearn.config import ComputeConfig, CutoutConfig, FeatureConfig
    from galearn.features import run_features
    from galearn.store import Workspace
    from galearn.survey import make_sample_from_mosaics

    ws = Workspace(work / "default-features")
    shutil.rmtree(ws.root, ignore_errors=True)
    images = {b: mock / f"{b}.fits" for b in ("F435W", "F850LP", "F160W")}
    with compute_session(ComputeConfig(scheduler="none")):
        sample = make_sample_from_mosaics(catalog, images, ws, CutoutConfig())
        c0, t0 = time.process_time(), time.perf_counter()
        cfg = FeatureConfig()
        run_features(ws, cfg)
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    out = {"n": sample.n, "setting": f"FeatureConfig() defaults: backbone {cfg.backbone}, input {cfg.input_size}, "
                                     f"tta {cfg.tta}, scales {cfg.scales}",
           "cpu_ms_per_galaxy": round(1000 * cpu / sample.n, 1), "wall_ms_per_galaxy": round(1000 * wall / sample.n, 1)}
    shutil.rmtree(ws.root, ignore_errors=True)
    return out


def _ceiling_worker(sample_path: str, n: int, out: str) -> None:
    """One process of :func:`parallel_ceiling`: the light features of ``n`` stamps, one thread, no Dask."""
    import torch

    torch.set_num_threads(1)
    from galearn.features.extract import _batches, _features_of_batch, cached_backbone
    from galearn.store import open_sample

    sample = open_sample(sample_path)
    base = sample.read("stretched", slice(0, sample.n))
    stamps = np.concatenate([base] * math.ceil(n / len(base)))[:n]  # cost does not depend on the pixels
    backbone = cached_backbone({"name": "random-resnet18", "random_state": 0})
    _features_of_batch(stamps[:64], sample.bands, backbone, None, 1)  # warm-up: fast inference copy, allocator
    c0, w0 = time.process_time(), time.perf_counter()
    for sl in _batches(n, 64):
        _features_of_batch(stamps[sl], sample.bands, backbone, None, 1)
    Path(out).write_text(json.dumps({"cpu_s": time.process_time() - c0, "wall_s": time.perf_counter() - w0,
                                     "t_start": w0, "n": n}))


def _main_thread_cpu_s() -> float:
    """CPU seconds (user + system) of this process's main thread: a Dask worker's event loop / admin thread."""
    pid = os.getpid()
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _admin_task(n: int, sample_path: str) -> dict:
    """The light features of ``n`` stamps on a worker; CPU of the task thread and of the worker's main thread."""
    from galearn.features.extract import _batches, _features_of_batch, cached_backbone
    from galearn.store import open_sample

    sample = open_sample(sample_path)
    base = sample.read("stretched", slice(0, sample.n))
    stamps = np.concatenate([base] * math.ceil(n / len(base)))[:n]
    backbone = cached_backbone({"name": "random-resnet18", "random_state": 0})
    _features_of_batch(stamps[:64], sample.bands, backbone, None, 1)
    m0, c0, t0, w0 = _main_thread_cpu_s(), time.process_time(), time.thread_time(), time.perf_counter()
    for sl in _batches(n, 64):
        _features_of_batch(stamps[sl], sample.bands, backbone, None, 1)
    return {"process_cpu_s": time.process_time() - c0, "task_thread_cpu_s": time.thread_time() - t0,
            "admin_thread_cpu_s": _main_thread_cpu_s() - m0, "wall_s": time.perf_counter() - w0}


def admin_overhead(sample_path: Path, n: int) -> dict:
    """CPU a Dask worker's main (admin) thread spends beside a feature task: Dask defaults vs galearn's.

    A 1-worker ``LocalCluster`` runs the light features of ``n`` stamps, once with Dask's default worker
    settings (statistical profiler every 10 ms, event loop tick 20 ms, memory check 100 ms) and once with
    :data:`galearn.compute.LOCAL_CLUSTER_CONFIG`. The admin thread's CPU per second of wall is what a
    worker takes from a core besides its task (on a machine with as many workers as cores, from the tasks).
    """
    import dask
    from distributed import Client, LocalCluster

    from galearn.compute import LOCAL_CLUSTER_CONFIG

    out = {"n": n, "load_average_at_start": round(os.getloadavg()[0], 2)}
    for name, cfg in (("dask_defaults", {}), ("galearn_local_cluster", LOCAL_CLUSTER_CONFIG)):
        with dask.config.set(cfg), LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                                 host="127.0.0.1", dashboard_address="127.0.0.1:0") as lc, \
                Client(lc) as client:
            client.submit(_admin_task, 64, str(sample_path), pure=False).result()  # imports, model, warm-up
            r = client.submit(_admin_task, n, str(sample_path), pure=False).result()
        r = {k: round(v, 3) for k, v in r.items()}
        r["admin_cpu_per_wall"] = round(r["admin_thread_cpu_s"] / r["wall_s"], 4)
        r["admin_cpu_per_task_cpu"] = round(r["admin_thread_cpu_s"] / r["task_thread_cpu_s"], 4)
        out[name] = r
        print(json.dumps({name: r}), flush=True)
    return out


def parallel_ceiling(sample_path: Path, n: int, work: Path, repeats: int = 2) -> dict:
    """This machine's speed-up for perfectly parallel feature work: 1 process alone vs 2 at once (no Dask).

    Each process runs the light setting's features (random-resnet18, 64 px, no TTA, one crop, batch 64, one
    thread) of ``n`` stamps of ``sample_path`` (tiled to ``n``); the speed-up is the throughput of two
    simultaneous processes (2 n stamps over the wall time until both are done) over one process's.
    """
    import subprocess
    import sys

    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--ceiling-worker", str(sample_path), str(n)]
    rounds = []
    for r in range(repeats):
        load = os.getloadavg()[0]
        outs = [work / f"ceiling-{r}-{k}.json" for k in range(3)]
        subprocess.run(cmd + [str(outs[0])], env=env, check=True)
        one = json.loads(outs[0].read_text())
        procs = [subprocess.Popen(cmd + [str(o)], env=env) for o in outs[1:]]
        for p in procs:
            if p.wait():
                raise RuntimeError("ceiling worker failed")
        pair = [json.loads(o.read_text()) for o in outs[1:]]
        # both timed loops run from the earlier start to the later end
        span = max(p["t_start"] + p["wall_s"] for p in pair) - min(p["t_start"] for p in pair)
        rounds.append({"load_average_at_start": round(load, 2), "one_wall_s": round(one["wall_s"], 2),
                       "one_cpu_s": round(one["cpu_s"], 2),
                       "pair_wall_s": [round(p["wall_s"], 2) for p in pair],
                       "pair_cpu_s": [round(p["cpu_s"], 2) for p in pair], "pair_span_s": round(span, 2),
                       "speedup": round(2 * n / span / (n / one["wall_s"]), 3)})
        print(json.dumps(rounds[-1]), flush=True)
    return {"n_per_process": n, "setting": "random-resnet18, native 64 px, tta 1, one crop, batch 64, 1 thread",
            "rounds": rounds}


def kmeans_bench(sizes=(20000, 50000, 200000), n_predict: int = 1_000_000, k: int = 8, seed: int = 0) -> dict:
    """k-means (galearn's default clusterer: sklearn KMeans, n_init 10) vs MiniBatchKMeans, fit and predict cost.

    Points: ``k`` seeded Gaussian clusters in 5 dimensions (the default clustering space is a 5-D UMAP).
    For each fit size: CPU seconds of one fit at ``k`` clusters for both estimators and the adjusted Rand
    index between their labels; then CPU seconds per million rows of ``predict``. ``fit_clusters`` fits at
    most ``DEFAULT_MAX_FIT`` rows whatever ``classify.fit_subsample`` is, so the fit's cost is bounded.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.metrics import adjusted_rand_score

    from galearn.maps.clusters import DEFAULT_MAX_FIT

    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, size=(k, 5))

    def points(n):
        return centres[rng.integers(0, k, n)] + rng.normal(size=(n, 5))

    out = {"k": k, "dims": 5, "default_max_fit": DEFAULT_MAX_FIT, "fits": []}
    for n in sizes:
        S = points(n)
        c = time.process_time()
        km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(S)
        t_km = time.process_time() - c
        c = time.process_time()
        mb = MiniBatchKMeans(n_clusters=k, n_init=3, batch_size=4096, random_state=seed).fit(S)
        t_mb = time.process_time() - c
        out["fits"].append({"n": n, "kmeans_cpu_s": round(t_km, 3), "minibatch_cpu_s": round(t_mb, 3),
                            "ari_between": round(float(adjusted_rand_score(km.labels_, mb.labels_)), 4)})
        print(json.dumps(out["fits"][-1]), flush=True)
    P = points(n_predict)
    c = time.process_time()
    km.predict(P)
    out["predict_cpu_s_per_million"] = round((time.process_time() - c) * 1e6 / n_predict, 3)
    return out


def project(results: list[dict], default_feature_ms: float, map_rec: dict | None = None) -> list[dict]:
    """Time / storage / scheduler load for 1e6..1e8 galaxies on 16..1024 workers, from the measured costs.

    Cutouts + features: per galaxy and worker core, the measured cutout CPU cost + ``default_feature_ms``;
    partitions of 2048 / 1024 stamps; the measured no-op overhead per task counted as if paid serially.
    The map (``map_rec``, a :func:`map_bench` record): the measured fit of the subsample (serial, in the
    driver) + the measured ``transform`` CPU per placed row spread over the workers.
    """
    two = [r for r in results if r["scheduler"] == "local:1"] or results
    last = two[-1]
    c = last.get("cpu_per_galaxy_ms") or last["cost_per_galaxy_ms"]
    bpg = sum(last["bytes_per_galaxy"].values())
    overhead = next((r["overhead_per_task_ms"] for r in results if "overhead_per_task_ms" in r), 2.0)
    rows = []
    for n in (10**6, 10**7, 10**8):
        for w in (16, 128, 1024):
            per_gal_s = (c["cutouts"] + default_feature_ms) / 1000.0  # one worker-core
            tasks = n / 2048 + n / 1024  # cutout + feature partitions
            wall_h = (n * per_gal_s / w + tasks * overhead / 1000.0) / 3600.0
            row = {"n": n, "workers": w, "hours": round(wall_h, 2), "tasks": int(tasks),
                   "scheduler_tasks_per_s": round(tasks / (wall_h * 3600), 1),
                   "storage_tb": round(n * bpg / 1e12, 3)}
            if map_rec:
                sub = map_rec["subsample"]
                per_row = sub["transform_cpu_s"] / max(1, sub["n_placed"])
                row["map_hours"] = round((sub["fit_cpu_s"] + (n - sub["n_fit"]) * per_row / w) / 3600.0, 2)
            rows.append(row)
    return rows


def main() -> None:
    import sys

    if len(sys.argv) == 6 and sys.argv[1] == "--map-variant":
        _map_variant(int(sys.argv[2]), int(sys.argv[3]) or None, sys.argv[4], sys.argv[5])
        return
    if len(sys.argv) == 5 and sys.argv[1] == "--ceiling-worker":
        _ceiling_worker(sys.argv[2], int(sys.argv[3]), sys.argv[4])
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mock", type=Path, required=True, help="folder of a `galearn simulate` field")
    ap.add_argument("--n", type=int, nargs="+", default=[5000, 10000])
    ap.add_argument("--schedulers", nargs="+", default=["local:1", "local:2"])
    ap.add_argument("--n-morph", type=int, default=128)
    ap.add_argument("--feature-partition", type=int, default=1024)
    ap.add_argument("--map-n", type=int, nargs="*", default=[10000])
    ap.add_argument("--map-subsample", type=int, default=5000)
    ap.add_argument("--default-feature-ms", type=float, default=100.0,
                    help="cost per galaxy per core of the default features (128 px, 4 rotations, 2 scales); "
                         "DESIGN.md: ~20 galaxies/s on 2 cores -> 100 ms per core")
    ap.add_argument("--measure-default-features", type=int, default=0, metavar="N",
                    help="also measure the default features' CPU cost on the first N catalogue rows (in-process) and "
                         "project with it instead of --default-feature-ms")
    ap.add_argument("--ceiling", type=int, default=0, metavar="N",
                    help="measure the machine's 2-process ceiling: light features of N stamps in 1 process alone vs "
                         "2 processes at once (no Dask), twice; stamps from --ceiling-sample")
    ap.add_argument("--ceiling-sample", type=Path, default=None,
                    help="a sample.h5 whose stamps are tiled to N (--ceiling, --admin-overhead)")
    ap.add_argument("--admin-overhead", type=int, default=0, metavar="N",
                    help="CPU of a Dask worker's admin thread beside a feature task of N stamps: Dask's defaults vs "
                         "galearn's LOCAL_CLUSTER_CONFIG")
    ap.add_argument("--kmeans", action="store_true", help="k-means vs mini-batch k-means fit / predict cost")
    ap.add_argument("--project-from", type=Path, nargs="+", default=None, metavar="JSON",
                    help="only the projection, from the runs of earlier --out files (the last run given is used)")
    ap.add_argument("--skip-runs", action="store_true", help="only the map benchmark (and default-feature cost)")
    ap.add_argument("--work", type=Path, default=Path("/tmp/galearn-bench-scale"))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"machine": f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
                    "features_setting": "random-resnet18, 64 px input, tta 1, scales (1.0,), batch 64",
                    "runs": [], "maps": []}
    if args.admin_overhead:
        report["admin_overhead"] = admin_overhead(args.ceiling_sample, args.admin_overhead)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))
    if args.ceiling:
        report["ceiling"] = parallel_ceiling(args.ceiling_sample, args.ceiling, args.work)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))
    if args.kmeans:
        report["kmeans"] = kmeans_bench()
        print(json.dumps(report["kmeans"]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))
    map_rec = None
    if args.project_from:
        loaded = [json.loads(f.read_text()) for f in args.project_from]
        runs = [r for d in loaded for r in d.get("runs", [])]
        maps = [m for d in loaded for m in d.get("maps", []) if "subsample" in m and isinstance(m["subsample"], dict)]
        map_rec = max(maps, key=lambda m: m["n"]) if maps else None
        report["projection_from"] = [str(f) for f in args.project_from]
        report["projection_runs"] = [{"n_input": r["n_input"], "scheduler": r["scheduler"]} for r in runs]
        args.skip_runs, args.map_n, report["runs"] = True, [], runs
    for n in ([] if args.skip_runs else args.n):
        cat = repeated_catalog(args.mock, n, args.work)
        for sched in args.schedulers:
            rec = run_one(args.mock, cat, sched, args.work, n_morph=args.n_morph,
                          feature_partition=args.feature_partition)
            rec["n_input"] = n
            report["runs"].append(rec)
            print(json.dumps(rec), flush=True)
            if args.out:
                args.out.write_text(json.dumps(report, indent=1))
    for n in args.map_n:
        rec = map_bench(n, args.map_subsample, args.work)
        report["maps"].append(rec)
        print(json.dumps(rec), flush=True)
        if args.out:
            args.out.write_text(json.dumps(report, indent=1))
    ones = [r for r in report["runs"] if r["scheduler"] == "local:1"]
    for r in ones:
        r["expected_idle_speedup_2_workers"] = expected_speedup(r, 2)
        print(json.dumps({"n_input": r["n_input"], "expected_idle_speedup_2_workers":
                          r["expected_idle_speedup_2_workers"]}), flush=True)
    feature_ms = args.default_feature_ms
    if args.measure_default_features:
        cat = repeated_catalog(args.mock, args.measure_default_features, args.work)
        report["default_features"] = default_feature_cost(None, cat, args.mock, args.work,
                                                          args.measure_default_features)
        feature_ms = report["default_features"]["cpu_ms_per_galaxy"]
        print(json.dumps(report["default_features"]), flush=True)
    if report["runs"]:
        report["projection"] = project(report["runs"], feature_ms, map_rec)
    else:
        report["projection"] = []
    report["projection_assumptions"] = (
        f"per galaxy and worker core: measured cutout CPU cost + {feature_ms} ms CPU default features "
        "(measured with --measure-default-features when given); perfect scaling across workers except the measured per-task "
        "scheduler overhead, paid serially; partitions of 2048 (cutouts) and 1024 (features) stamps; storage "
        "= measured bytes/galaxy (float32 physical + stretched 3x64x64 stamps, features, catalogue)")
    for row in report["projection"]:
        print(json.dumps(row))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
