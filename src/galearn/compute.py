"""Where work runs: in this process or on a Dask cluster (``dask.distributed``).

Below the stages: they import it, it imports no stage. One option says where
the heavy work of every stage runs (``--scheduler`` / ``[compute] scheduler``):

* ``none``           in this process, no cluster (tests, tiny runs);
* ``local``          a :class:`distributed.LocalCluster` with one single-threaded
                     worker process per core, listening on 127.0.0.1 only;
* ``local:N``        the same with N worker processes;
* ``tcp://HOST:PORT`` an existing scheduler (``dask scheduler`` + ``dask worker``,
                     ``dask-jobqueue``, ``dask-mpi``);
* ``auto`` (default) ``none`` when a stage has fewer than ``auto_threshold``
                     items (a cluster's start-up, ~2-4 s, and per-worker model
                     loading cost more than they save on small samples; see
                     docs/scaling.md), else ``local``.

``--scheduler-file FILE`` (what ``dask scheduler --scheduler-file`` and
``dask-mpi`` write) takes precedence over ``scheduler``.

Stages split their work into partitions (sky tiles of rows for cutouts, runs of
a few hundred to a few thousand stamps for per-stamp stages) and call
:func:`map_partitions`; each partition writes its own output file (see
:mod:`galearn.store`), so workers never share a file, and a partition's result
does not depend on which worker ran it or how many there are. Models are loaded
once per worker process through :func:`worker_cached` (a module-level cache in
each worker; nothing heavy travels inside the task graph).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import BadValueError, MissingInputError

__all__ = [
    "SchedulerSpec",
    "parse_scheduler",
    "ComputeSession",
    "compute_session",
    "current_session",
    "map_partitions",
    "worker_cached",
    "clear_worker_cache",
    "partition_bounds",
    "subsample_indices",
    "PartitionError",
    "setting",
]

log = logging.getLogger("galearn.compute")

_LOCAL = re.compile(r"^local(?::(\d+))?$")
_TCP = re.compile(r"^(tcp|tls|inproc|ucx)://[^\s/]+(:\d+)?/?$")


@dataclass(frozen=True)
class SchedulerSpec:
    """A parsed ``--scheduler`` value.

    Attributes
    ----------
    kind : str
        ``none``, ``auto``, ``local``, ``address`` or ``file``.
    n_workers : int or None
        Worker processes of a ``local`` cluster (None: one per core).
    address : str or None
        Scheduler address (``address``) or scheduler file path (``file``).
    """

    kind: str
    n_workers: int | None = None
    address: str | None = None

    def describe(self) -> str:
        if self.kind == "local":
            return "local" if self.n_workers is None else f"local:{self.n_workers}"
        if self.kind in ("address", "file"):
            return str(self.address)
        return self.kind


def parse_scheduler(scheduler: str | None, scheduler_file: str | os.PathLike | None = None) -> SchedulerSpec:
    """Parse ``--scheduler`` / ``--scheduler-file`` (the file wins when both are given).

    Raises
    ------
    BadValueError
        An unknown form, e.g. ``local:0`` or ``http://...``.
    MissingInputError
        ``scheduler_file`` does not exist.
    """
    if scheduler_file:
        path = os.fspath(scheduler_file)
        if not os.path.exists(path):
            raise MissingInputError(f"--scheduler-file {path} does not exist (start the scheduler first)")
        return SchedulerSpec("file", address=path)
    text = "auto" if scheduler is None else str(scheduler).strip()
    low = text.lower()
    if low in ("none", "auto"):
        return SchedulerSpec(low)
    m = _LOCAL.match(low)
    if m:
        n = None if m.group(1) is None else int(m.group(1))
        if n is not None and n < 1:
            raise BadValueError(f"--scheduler {text}: local:N needs N >= 1 worker processes")
        return SchedulerSpec("local", n_workers=n)
    if _TCP.match(text):
        return SchedulerSpec("address", address=text)
    raise BadValueError(f"--scheduler {text!r}: use none, auto, local, local:N or tcp://HOST:PORT "
                        "(or --scheduler-file FILE)")


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


#: Dask settings of galearn's own ``LocalCluster``: the workers' statistical profiler off and their
#: event loop's periodic work made rarer. With Dask's defaults (a stack sample every 10 ms, an event
#: loop tick every 20 ms, a memory check every 100 ms) a worker's administrative thread used ~6 % of a
#: core beside a feature task, ~0.6 % with these (docs/scaling.md, "1 vs 2 workers"); on a machine with
#: as many workers as cores that time is taken from the tasks. Clusters started elsewhere
#: (``tcp://``, ``--scheduler-file``) keep their own configuration.
LOCAL_CLUSTER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "500ms",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
}


class PartitionError(RuntimeError):
    """A partition failed for a reason that is not its data (e.g. the cluster lost it)."""


@dataclass
class ComputeSession:
    """Where the current stages run: a ``distributed.Client`` or None (in-process).

    Use :func:`compute_session` to make one; stages reach it with
    :func:`current_session`. The cluster starts lazily, at the first stage that
    asks for it with at least ``auto_threshold`` items (``auto``) or at once
    (``local`` / an address).
    """

    spec: SchedulerSpec
    retries: int = 3
    max_in_flight: int | None = None
    auto_threshold: int = 20000
    config: Any = None
    client: Any = None
    cluster: Any = None
    stages: dict = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    # -------------------------------------------------------------- lifecycle
    def get_client(self, n_items: int | None = None):
        """The client for a stage of ``n_items`` items, or None to run in-process."""
        kind = self.spec.kind
        if kind == "none":
            return None
        if kind == "auto" and (n_items is None or n_items < self.auto_threshold):
            return None
        with self._lock:
            if self.client is None:
                self._start()
        return self.client

    def _start(self) -> None:
        try:
            import dask
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - a core dependency
            raise BadValueError("--scheduler needs dask.distributed: pip install 'dask[distributed]'") from exc
        kind = self.spec.kind
        if kind in ("local", "auto"):
            n = self.spec.n_workers or _cores()
            with dask.config.set(LOCAL_CLUSTER_CONFIG):  # the nannies hand this configuration to their workers
                self.cluster = LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                    # the dashboard on a free loopback port: ``None`` does not disable it (dask/distributed#8136)
                    # and falls back to 8787 with a "Port 8787 is already in use" warning when two clusters run.
                    dashboard_address="127.0.0.1:0", scheduler_port=0, silence_logs=logging.ERROR,
                )
            self.client = Client(self.cluster, set_as_default=False)
        elif kind == "address":
            try:
                self.client = Client(self.spec.address, timeout="30s", set_as_default=False)
            except (OSError, TimeoutError) as exc:
                raise BadValueError(f"--scheduler {self.spec.address}: cannot connect ({exc})") from exc
        elif kind == "file":
            try:
                self.client = Client(scheduler_file=self.spec.address, timeout="30s", set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                raise BadValueError(f"--scheduler-file {self.spec.address}: cannot connect ({exc})") from exc
        log.info("dask scheduler %s with %d workers", self.address, self.n_workers)

    def close(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()
        if self.cluster is not None:
            with contextlib.suppress(Exception):
                self.cluster.close()
        self.client = self.cluster = None

    # -------------------------------------------------------------- facts
    @property
    def address(self) -> str:
        if self.client is not None:
            return str(self.client.scheduler.address)
        return "in-process"

    @property
    def n_workers(self) -> int:
        if self.client is None:
            return 1
        try:
            return max(1, len(self.client.scheduler_info(n_workers=-1)["workers"]))
        except Exception:  # noqa: BLE001 - a lost scheduler reports 1
            return 1

    def provenance(self, *names: str, prefix: str | None = None) -> dict:
        """``{stage: record}`` of the named stages (and those starting with ``prefix``) that ran partitions."""
        return {k: dict(v) for k, v in self.stages.items()
                if k in names or (prefix is not None and k.startswith(prefix))}

    def record(self, stage: str, **info: Any) -> dict:
        """Provenance of one stage's partitioned run (kept for the manifest / file attributes)."""
        entry = {"scheduler": self.spec.describe(), "address": self.address,
                 "n_workers": self.n_workers, **info}
        self.stages[stage] = entry
        return entry


_SESSION: contextvars.ContextVar[ComputeSession | None] = contextvars.ContextVar("galearn_compute", default=None)


@contextlib.contextmanager
def compute_session(cfg: Any = None, **overrides: Any) -> Iterator[ComputeSession]:
    """Run the enclosed stages on the scheduler of ``cfg`` (a ``ComputeConfig``; None: defaults).

    Nested calls reuse the outer session (one cluster for a whole ``galearn run``).
    Keyword overrides (``scheduler=``, ``scheduler_file=``) replace the config's.
    """
    outer = _SESSION.get()
    if outer is not None and not overrides:
        yield outer
        return
    get = (lambda k, d: overrides[k] if overrides.get(k) is not None else getattr(cfg, k, d))
    spec = parse_scheduler(get("scheduler", "auto"), get("scheduler_file", None))
    session = ComputeSession(spec, retries=int(get("retries", 3)),
                             max_in_flight=get("max_in_flight", None),
                             auto_threshold=int(get("auto_threshold", 20000)), config=cfg)
    token = _SESSION.set(session)
    try:
        if spec.kind in ("local", "address", "file"):
            session.get_client()
        yield session
    finally:
        _SESSION.reset(token)
        session.close()


def current_session() -> ComputeSession:
    """The active session, or an in-process one when none was opened."""
    session = _SESSION.get()
    return session if session is not None else ComputeSession(SchedulerSpec("none"))


def setting(name: str, default: Any) -> Any:
    """A ``[compute]`` setting of the current session (``default`` when none was configured)."""
    value = getattr(current_session().config, name, None)
    return default if value is None else value


# --------------------------------------------------------------------------- partitions


def partition_bounds(n: int, size: int, *, multiple: int = 1) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(n)`` in runs of ``size`` (rounded up to ``multiple``)."""
    if size < 1:
        raise BadValueError(f"partition size must be >= 1, got {size}")
    size = max(multiple, (int(size) + multiple - 1) // multiple * multiple)
    return [(s, min(s + size, n)) for s in range(0, int(n), size)]


def subsample_indices(n: int, size: int | None, random_state: int = 0) -> np.ndarray:
    """Sorted seeded subsample of ``range(n)`` of ``size`` rows (all rows when ``size`` is None or >= n)."""
    if size is None or size <= 0 or size >= n:
        return np.arange(n)
    rng = np.random.default_rng([int(random_state), 0x5CA1E])
    return np.sort(rng.choice(n, size=int(size), replace=False))


def _infrastructure_error(exc: BaseException) -> bool:
    """Errors of the cluster rather than of the data (never turned into rejected rows)."""
    names = {type(e).__name__ for e in (exc, exc.__cause__) if e is not None}
    return bool(names & {"KilledWorker", "CommClosedError", "CancelledError", "FutureCancelledError",
                         "TimeoutError", "StreamClosedError", "MemoryError"})


def map_partitions(
    func: Callable[..., Any],
    parts: Sequence[Any],
    *,
    desc: str = "partitions",
    stage: str | None = None,
    n_items: int | None = None,
    shared: dict | None = None,
    on_error: Callable[[int, BaseException], Any] | None = None,
    progress: bool | None = None,
    session: ComputeSession | None = None,
) -> Iterator[tuple[int, Any]]:
    """Run ``func(part, **shared)`` for every partition; yield ``(index, result)`` as they finish.

    Parameters
    ----------
    func : callable
        A module-level function (it is pickled by reference onto the workers).
        It must be idempotent: a partition may run twice (retried after a lost
        worker), so it writes its output atomically and returns a small summary.
    parts : sequence
        Small, picklable descriptions of the partitions (index ranges, paths).
    desc : str
        Progress bar label.
    stage : str
        Name recorded in the session's provenance (default ``desc``).
    n_items : int
        Items (stamps, rows) in all partitions; decides ``auto`` scheduling.
    shared : dict
        Keyword arguments common to every call; on a cluster each value is
        scattered to the workers once (a fitted map, a stretch), not per task.
    on_error : callable, optional
        ``on_error(index, exc) -> result`` for a partition whose function
        raised (after the scheduler's retries); its return value is yielded
        instead. Lost workers and other cluster errors are never passed here:
        they raise :class:`PartitionError`.
    progress : bool or None
        tqdm bar (None: only on a terminal).

    At most ``2 x workers`` tasks (``max_in_flight``) are submitted at a time,
    so a million-row stage never builds a million-task graph.
    """
    from tqdm.auto import tqdm

    session = session or current_session()
    shared = dict(shared or {})
    client = session.get_client(n_items if n_items is not None else len(parts))
    t0 = time.perf_counter()
    bar = tqdm(total=len(parts), desc=desc, unit="part", disable=None if progress is None else not progress)
    clock = {"cpu": 0.0, "wall": 0.0, "n": 0}

    def unwrap(out):
        if isinstance(out, _Timed):
            clock["cpu"] += out.cpu_s
            clock["wall"] += out.wall_s
            clock["n"] += 1
            return out.value
        return out

    try:
        if client is None:
            for i, part in enumerate(parts):
                try:
                    result = unwrap(_timed_call(func, part, **shared))
                except Exception as exc:  # noqa: BLE001 - handed to on_error, or re-raised
                    if on_error is None or _infrastructure_error(exc):
                        raise
                    result = on_error(i, exc)
                bar.update(1)
                yield i, result
        else:
            for i, result in _map_distributed(client, session, func, parts, shared, on_error, bar):
                yield i, unwrap(result)
    finally:
        bar.close()
    session.record(stage or desc, n_partitions=len(parts), seconds=round(time.perf_counter() - t0, 3),
                   n_items=None if n_items is None else int(n_items),
                   task_cpu_s=round(clock["cpu"], 3), task_wall_s=round(clock["wall"], 3))


@dataclass
class _Timed:
    """A task's result with the CPU time (``time.process_time``) and wall time it took inside the task."""

    value: Any
    cpu_s: float
    wall_s: float


def _timed_call(func: Callable[..., Any], part: Any, **shared: Any) -> _Timed:
    """``func(part, **shared)`` with its CPU and wall time (seconds) measured where it runs (the worker)."""
    c0, w0 = time.process_time(), time.perf_counter()
    value = func(part, **shared)
    return _Timed(value, time.process_time() - c0, time.perf_counter() - w0)


def _map_distributed(client, session, func, parts, shared, on_error, bar) -> Iterator[tuple[int, Any]]:
    from distributed import as_completed

    shared_futures = {k: client.scatter(v, broadcast=True, hash=False) for k, v in shared.items()}
    limit = int(session.max_in_flight or 2 * session.n_workers)
    limit = max(1, limit)
    todo = list(enumerate(parts))[::-1]
    index_of: dict = {}
    prefix = f"galearn-{getattr(func, '__name__', 'task')}-{os.getpid()}-{time.monotonic_ns()}"

    def submit():
        i, part = todo.pop()
        fut = client.submit(_timed_call, func, part, **shared_futures, key=f"{prefix}-{i}", pure=False,
                            retries=session.retries)
        index_of[fut.key] = i
        return fut

    pool = as_completed([submit() for _ in range(min(limit, len(todo)))], loop=client.loop)
    try:
        for fut in pool:
            i = index_of.pop(fut.key)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001
                if _infrastructure_error(exc):
                    raise PartitionError(f"partition {i} was lost by the cluster: {exc}") from exc
                if on_error is None:
                    raise
                result = on_error(i, exc)
            finally:
                fut.release()
            if todo:
                pool.add(submit())
            bar.update(1)
            yield i, result
    finally:
        for fut in pool.futures if hasattr(pool, "futures") else []:
            with contextlib.suppress(Exception):
                fut.cancel()


# --------------------------------------------------------------------------- per-worker cache

_CACHE: "OrderedDict[Any, Any]" = OrderedDict()
_CACHE_LOCK = threading.Lock()
_CACHE_SIZE = 2


def worker_cached(key: Any, build: Callable[[], Any]) -> Any:
    """``build()`` once per process for ``key`` (hashable); later calls return the same object.

    A worker loads its CNN once and reuses it for every partition it runs; the
    two most recently used entries are kept. Include in ``key`` whatever would
    change the object (weights file size and modification time, device, seed).
    """
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    value = build()
    with _CACHE_LOCK:
        _CACHE[key] = value
        _CACHE.move_to_end(key)
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return value


def clear_worker_cache() -> None:
    """Forget every cached object of this process."""
    with _CACHE_LOCK:
        _CACHE.clear()


def file_key(path: str | os.PathLike | None) -> tuple:
    """``(path, size, mtime_ns)`` of a file (a cache key part that changes when the file does)."""
    if path is None:
        return (None,)
    try:
        st = os.stat(path)
    except OSError:
        return (os.fspath(path),)
    return (os.fspath(path), st.st_size, st.st_mtime_ns)


def iter_chunks(idx: Iterable[int] | np.ndarray, size: int) -> Iterator[np.ndarray]:
    """Consecutive chunks of ``idx`` of at most ``size`` elements."""
    idx = np.asarray(list(idx) if not isinstance(idx, np.ndarray) else idx)
    for s in range(0, len(idx), max(1, int(size))):
        yield idx[s : s + size]
