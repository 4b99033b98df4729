"""The on-disk layout of a galearn workspace.

This is the only module that knows where files live inside a workspace and
what is inside them. Every other module reads and writes through it.

Layout of a workspace folder ``WS``::

    WS/config.toml                 resolved configuration of the last `galearn run`
    WS/manifest.json               what each stage produced, with which settings (stages read it)
    WS/mock/                       the simulated field (`galearn run` without data)
    WS/sample.h5                   stamps + catalogue of the real galaxies
    WS/library.h5                  generated (GAN) library, same layout as sample.h5
    WS/features/<backbone>.h5      one feature vector per stamp (+ library_<backbone>.h5)
    WS/features/morphology.ecsv    statmorph table of the sample (+ library_morphology.ecsv), --fuse cache
    WS/maps/<method>.h5            2-D map coordinates (+ <method>.pkl: fitted model)
    WS/maps/library_<method>.h5    the GAN library placed on the map
    WS/classes.ecsv                per-galaxy classes
    WS/backbones/adapted.pt        self-supervised fine-tuned backbone (+ adapt-ckpt.pt while training)
    WS/gan/                        GAN run: config.json, stats.csv, split.json, ckpt-<step>.pt, grids/,
                                   morphology.ecsv (gan evaluate)
    WS/report/metrics.json         machine-readable metrics: stages write their keys, only the report reads
    WS/report/index.html, *.png    figures and the HTML page
    WS/.locks/<output>.lock        who is writing an output now (see :func:`workspace_lock`)

A stamp file (``sample.h5`` / ``library.h5``) holds

* ``stamps/physical``  float32 ``(N, C, H, W)`` in the mosaics' own units
  (e.g. electrons/s or nJy per pixel); for RGB image folders the 8-bit pixel
  values divided by 255;
* ``stamps/stretched`` float32 ``(N, C, H, W)``, the display/learning stretch
  (roughly 0..1), see :mod:`galearn.imaging`;
* ``catalog``          the kept catalogue rows (astropy Table, all original
  columns, units and meta), in stamp order;
* ``rejected``         one row per input row that did not become a stamp:
  ``row`` (index in the input catalogue), ``id`` and ``reason``;
* attributes: ``bands`` (band order of axis C), ``pixel_scale_arcsec``,
  ``stamp_size`` (pixels), ``stretch`` (JSON), ``columns`` (JSON: role ->
  catalogue column), ``inputs`` (JSON: files and SHA-256), ``kind``
  (``survey``, ``images``, ``mock``, ``library``), ``galearn_version``,
  ``checksum`` (SHA-256 of the stretched stamps and ids) and ``extra`` (JSON).

All writes go to a temporary file in the same folder that is renamed into
place, so a reader never sees half a file. One process at a time writes each
output: :func:`workspace_lock` holds an exclusive ``fcntl.flock`` on
``WS/.locks/<output>.lock`` for the whole stage, and a resumable partial file
(:class:`FeatureWriter`) is locked by its writer, so no other process deletes
it or renames it into place.

Sharded files (written by partitioned stages, :mod:`galearn.compute`)
--------------------------------------------------------------------
A stage that runs in partitions writes one *shard* per partition,
``WS/sample.parts/part-00000.h5`` or ``WS/features/<backbone>.parts/part-00000.h5``,
each written atomically by the worker that made it, so no two workers ever
write one file. A shard holds its arrays plus ``n_rows``, ``fingerprint`` (of
the stage's inputs and options) and ``checksum`` (SHA-256 of its arrays); a
re-run keeps a shard only when all three check out. When every partition is
done the driver writes the usual ``sample.h5`` / ``<backbone>.h5``: its stamp
or feature arrays are HDF5 *virtual datasets* mapping the shards in order
(paths relative to the file, so a copied workspace stays whole), and the
attribute ``shards`` lists them. Readers (:func:`open_sample`,
:func:`read_features`, :meth:`Sample.iter_batches`) see one array, and check
that every shard is present. Single-file workspaces open as before.

The manifest
------------
``WS/manifest.json`` records what each stage produced and with which settings,
one top-level key per product (:func:`update_manifest` merges one key at a
time under a file lock, so stages on several processes may write it):

* ``features``: the active feature file of the sample -- ``backbone`` (its
  file name stem, e.g. ``efficientnet-lite0`` or ``resnet50+morphology``),
  ``cnn_backbone`` (the plain CNN file), ``path`` and ``settings`` (the
  feature configuration that made it: weights, device, batch size, ...);
* ``features_baseline``: the same for the baseline backbone;
* ``gan``: the GAN run (``run``, ``split``, ``checkpoint``, ``settings``);
* ``library``: the generated library (``path``, ``checkpoint``, ``settings``);
* ``maps``: ``{method: {path, model, backbone}}``.

Stages decide from the manifest or from the files' own attributes, never from
``metrics.json``, which stages only write and only the report reads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import pickle
import re
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from astropy.table import Table

from . import __version__
from .errors import BadValueError, MissingInputError, StaleInputError, WorkspaceBusyError
from .runtime import deep_merge, json_default

__all__ = [
    "Workspace",
    "workspace_lock",
    "file_lock",
    "atomic_path",
    "atomic_write_text",
    "SampleWriter",
    "Sample",
    "open_sample",
    "write_sample",
    "FeatureWriter",
    "Features",
    "read_features",
    "write_map",
    "read_map",
    "load_map_model",
    "write_table",
    "write_table_as",
    "read_table",
    "read_metrics",
    "update_metrics",
    "metrics_digest",
    "read_manifest",
    "update_manifest",
    "record_compute",
    "checkpoint_path",
    "list_checkpoints",
    "resolve_backbone",
    "load_features",
    "check_aligned",
    "require_sample",
    "file_sha256",
    "shard_dir",
    "write_shard",
    "check_shard",
    "read_shard",
    "write_sharded_sample",
    "write_sharded_features",
    "remove_stale_shards",
    "shard_path",
    "sharded_checksum",
    "check_made_from",
    "library_sample_checksum",
]

STAMP_ARRAYS = ("physical", "stretched")


# --------------------------------------------------------------------------- paths


def safe_backbone_name(name: str) -> str:
    """``name`` with every character other than letters, digits and ``._+-`` replaced by ``-`` (file-name safe)."""
    return re.sub(r"[^A-Za-z0-9._+\-]", "-", str(name))


@dataclass(frozen=True)
class Workspace:
    """Paths inside a workspace folder. Creating one does not touch the disk."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def sample(self) -> Path:
        return self.root / "sample.h5"

    @property
    def mock(self) -> Path:
        """Folder of the simulated mock field (mosaics + catalogue) of ``galearn run`` without data."""
        return self.root / "mock"

    @property
    def library(self) -> Path:
        return self.root / "library.h5"

    def features(self, backbone: str, *, library: bool = False) -> Path:
        """Feature file of ``backbone`` for the sample, or for the GAN library.

        Characters that do not belong in a file name (``timm:convnext_nano``'s
        colon, slashes) become ``-``: ``WS/features/timm-convnext_nano.h5``.
        """
        backbone = safe_backbone_name(backbone)
        name = f"library_{backbone}.h5" if library else f"{backbone}.h5"
        return self.root / "features" / name

    def feature_backbones(self, *, library: bool = False) -> list[str]:
        """Backbones with a finished feature file (sample, or GAN library), sorted by name."""
        folder = self.root / "features"
        if not folder.is_dir():
            return []
        names = []
        for path in sorted(folder.glob("*.h5")):
            is_library = path.stem.startswith("library_")
            if is_library == library:
                names.append(path.stem[len("library_"):] if is_library else path.stem)
        return names

    def map(self, method: str) -> Path:
        return self.root / "maps" / f"{method}.h5"

    def map_model(self, method: str) -> Path:
        return self.root / "maps" / f"{method}.pkl"

    def library_map(self, method: str) -> Path:
        """The GAN library placed onto the sample's map (``transform``, no refit)."""
        return self.root / "maps" / f"library_{method}.h5"

    @property
    def manifest(self) -> Path:
        """What each stage produced and with which settings (see the module docstring)."""
        return self.root / "manifest.json"

    def morphology(self, *, library: bool = False) -> Path:
        """Cached statmorph table of the sample (or GAN library): ``WS/features/[library_]morphology.ecsv``."""
        return self.root / "features" / ("library_morphology.ecsv" if library else "morphology.ecsv")

    @property
    def classes(self) -> Path:
        """Per-galaxy classes: id, UVJ class, cluster, map position (ECSV)."""
        return self.root / "classes.ecsv"

    @property
    def anomalies(self) -> Path:
        """Anomaly score and rank per galaxy (``galearn anomalies``, ECSV)."""
        return self.root / "anomalies.ecsv"

    @property
    def predictions(self) -> Path:
        """Predictions of the classifier trained on a person's labels (``galearn learn``, ECSV)."""
        return self.root / "predictions.ecsv"

    @property
    def backbones(self) -> Path:
        return self.root / "backbones"

    @property
    def adapted_backbone(self) -> Path:
        return self.backbones / "adapted.pt"

    @property
    def adapt_checkpoint(self) -> Path:
        """Checkpoint of an unfinished ``galearn adapt`` (resumed by the next call)."""
        return self.backbones / "adapt-ckpt.pt"

    @property
    def gan(self) -> Path:
        """GAN run directory."""
        return self.root / "gan"

    @property
    def gan_split(self) -> Path:
        """Held-out / training split of the GAN (``galearn gan train``)."""
        return self.gan / "split.json"

    @property
    def gan_config(self) -> Path:
        """Resolved training configuration, classes and bands of the GAN run."""
        return self.gan / "config.json"

    @property
    def gan_stats(self) -> Path:
        """One row per GAN training step."""
        return self.gan / "stats.csv"

    @property
    def gan_grids(self) -> Path:
        """Folder of sample grids of the GAN run (PNG)."""
        return self.gan / "grids"

    def gan_realism_encoder(self, k: int = 0) -> Path:
        """Encoder ``k`` of the ``self-supervised`` realism space, trained on the GAN's real training stamps."""
        return self.gan / f"realism-encoder-{int(k)}.pt"

    @property
    def gan_morphology(self) -> Path:
        """statmorph table of the sets compared by ``galearn gan evaluate``."""
        return self.gan / "morphology.ecsv"

    def gan_checkpoints(self) -> list[Path]:
        """Checkpoints of the GAN run, oldest step first."""
        return list_checkpoints(self.gan)

    @property
    def report(self) -> Path:
        return self.root / "report"

    @property
    def metrics(self) -> Path:
        return self.report / "metrics.json"

    @property
    def state(self) -> Path:
        """Pipeline bookkeeping (input fingerprints of finished stages)."""
        return self.root / ".galearn-state.json"

    def lock(self, output: str) -> Path:
        """Lock file of one output (``sample``, ``features``, ``maps``, ...), see :func:`workspace_lock`."""
        return self.root / ".locks" / f"{output}.lock"

    def require(self, path: Path, producer: str) -> Path:
        """Return ``path`` or raise a clear error naming the command that makes it."""
        if not path.exists():
            raise MissingInputError(f"{path} does not exist: run `galearn {producer}` first")
        return path


# --------------------------------------------------------------------------- locks

_HELD: dict[str, int] = {}  # lock file -> depth, locks this process holds (re-entrant per process)


def _holder_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                       "command": " ".join(["galearn", *sys.argv[1:]]) if sys.argv else "python",
                       "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def _describe_holder(text: str) -> tuple[str, dict]:
    try:
        info = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "another process", {}
    return (f"`{info.get('command', '?')}` (PID {info['pid']} on {info.get('host', '?')}, "
            f"since {info.get('started', '?')})"), info


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, OverflowError):
        return True
    return True


@contextlib.contextmanager
def file_lock(lock_path: str | os.PathLike, *, what: str, wait: bool = False,
              poll_seconds: float = 0.5, quiet: bool = False) -> Iterator[Path]:
    """Hold an exclusive lock on ``lock_path`` (``fcntl.flock``) while the block runs.

    The lock file records the holder (PID, host, command, start time). A second
    process asking for the same lock raises :class:`WorkspaceBusyError` at once,
    naming the holder, or with ``wait=True`` waits until it is released. The
    kernel drops a lock when its process dies, so a lock left by a killed run is
    found free; its stale record is replaced (and reported on stderr). Locks
    are re-entrant within one process.

    Parameters
    ----------
    lock_path : path-like
        The lock file (created, never deleted: deleting a locked file would let
        two processes lock two different files of the same name).
    what : str
        What the lock protects, for the message (e.g. ``WS/features``).
    wait : bool
        Wait for the holder instead of raising.
    poll_seconds : float
        Interval between attempts while waiting.
    quiet : bool
        Say nothing on stderr (short internal locks).
    """
    lock_path = Path(lock_path)
    key = str(lock_path.resolve()) if lock_path.parent.exists() else str(lock_path.absolute())
    if _HELD.get(key):
        _HELD[key] += 1
        try:
            yield lock_path
        finally:
            _HELD[key] -= 1
        return
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        told = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder, _ = _describe_holder(_read_fd(fd))
                if not wait:
                    raise WorkspaceBusyError(
                        f"{what} is being written by {holder}; wait for it to finish, re-run with --wait, "
                        f"or stop that process (lock file {lock_path})") from None
                if not told and not quiet:
                    print(f"galearn: waiting for {holder} to finish writing {what} ...", file=sys.stderr)
                    told = True
                time.sleep(poll_seconds)
        old, info = _describe_holder(_read_fd(fd))
        if info and not quiet:
            # We hold the flock yet a holder is recorded: it died without releasing (killed, crashed).
            state = "no longer running" if not _pid_alive(info["pid"]) else "no longer holding it"
            print(f"galearn: cleared a stale lock on {what} left by {old}, {state}", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, _holder_text().encode(), 0)
        os.fsync(fd)
        _HELD[key] = 1
        try:
            yield lock_path
        finally:
            _HELD.pop(key, None)
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _read_fd(fd: int) -> str:
    try:
        return os.pread(fd, 4096, 0).decode("utf-8", "replace")
    except OSError:
        return ""


def workspace_lock(ws: "Workspace | str | os.PathLike", output: str, *, wait: bool = False) -> contextlib.AbstractContextManager:
    """Lock one output of a workspace (``sample``, ``features``, ``maps``, ``classes``, ``gan``,
    ``library``, ``backbones``, ``report``, ``run``) for one writer; see :func:`file_lock`."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    return file_lock(ws.lock(output), what=f"{ws.root}/{output}", wait=wait)


# --------------------------------------------------------------------------- atomic writes


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place on success.

    On an exception the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600; give the final file normal permissions
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.filename is None:  # e.g. a write() hitting ENOSPC, an HDF5 write error: name the file
            raise OSError(exc.errno, exc.strerror or _short(exc), str(path)) from exc
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """SHA-256 of a file's bytes, read in chunks (hex string)."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- tables in HDF5


def _write_table(group: h5py.Group, name: str, table: Table) -> None:
    table = Table(table, copy=False)
    # astropy cannot store object columns; make them strings.
    for col in table.colnames:
        if table[col].dtype == object:
            table[col] = np.array([str(v) for v in table[col]])
    table.write(group, path=name, serialize_meta=True)


def _read_table(group: h5py.Group, name: str) -> Table:
    if name not in group:
        return Table()
    return Table.read(group, path=name, character_as_bytes=False)


def _json_attr(obj: Any) -> str:
    return json.dumps(obj, default=json_default)


# --------------------------------------------------------------------------- stamp files


class SampleWriter:
    """Stream stamps into a new ``sample.h5``-layout file, atomically.

    Parameters
    ----------
    path : path-like
        Final file name (e.g. ``Workspace.sample``).
    n : int
        Number of stamps that will be written.
    bands : list of str
        Band names in the order of axis C (e.g. ``["F435W", "F850LP", "F160W"]``).
    stamp_size : int
        Stamp side in pixels (stamps are ``(C, stamp_size, stamp_size)``).
    kind : str
        ``survey``, ``mock``, ``images`` or ``library``.
    pixel_scale_arcsec : float or None
        Pixel scale of the stamps in arcsec/pixel (None for image folders).
    physical : bool
        Whether a ``stamps/physical`` array is written (default True).

    Use as a context manager: write batches with :meth:`write`, then call
    :meth:`finish` with the catalogue; the file appears only after a clean exit.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        n: int,
        bands: list[str],
        stamp_size: int,
        *,
        kind: str,
        pixel_scale_arcsec: float | None = None,
        physical: bool = True,
        chunk_stamps: int = 64,
    ) -> None:
        self.path = Path(path)
        self.n = int(n)
        self.bands = list(bands)
        self.stamp_size = int(stamp_size)
        self.kind = kind
        self.pixel_scale_arcsec = pixel_scale_arcsec
        self.physical = physical
        self.chunk_stamps = chunk_stamps
        self._ctx: contextlib.AbstractContextManager | None = None
        self._file: h5py.File | None = None
        self._finished = False
        self._written = np.zeros(self.n, dtype=bool)

    def __enter__(self) -> "SampleWriter":
        self._ctx = atomic_path(self.path, suffix=".h5.tmp")
        tmp = self._ctx.__enter__()
        self._file = h5py.File(tmp, "w")
        shape = (self.n, len(self.bands), self.stamp_size, self.stamp_size)
        chunks = (max(1, min(self.n, self.chunk_stamps)),) + shape[1:] if self.n else None
        grp = self._file.create_group("stamps")
        for name in STAMP_ARRAYS:
            if name == "physical" and not self.physical:
                continue
            grp.create_dataset(name, shape=shape, dtype="f4", chunks=chunks, maxshape=(None,) + shape[1:])
        return self

    def truncate(self, n: int) -> None:
        """Shrink the file to its first ``n`` stamps (when fewer passed late checks than planned)."""
        assert self._file is not None, "use SampleWriter as a context manager"
        n = int(n)
        if not 0 <= n <= self.n:
            raise BadValueError(f"cannot truncate {self.n} stamps to {n}")
        for name in STAMP_ARRAYS:
            key = f"stamps/{name}"
            if key in self._file:
                self._file[key].resize(n, axis=0)
        self.n = n
        self._written = self._written[:n]

    def write(self, start: int, stretched: np.ndarray, physical: np.ndarray | None = None) -> None:
        """Write stamps ``start:start+len(stretched)`` (arrays ``(n, C, H, W)``)."""
        assert self._file is not None, "use SampleWriter as a context manager"
        stop = start + len(stretched)
        self._file["stamps/stretched"][start:stop] = np.asarray(stretched, dtype="f4")
        if self.physical:
            if physical is None:
                raise BadValueError("physical stamps are required for this file")
            self._file["stamps/physical"][start:stop] = np.asarray(physical, dtype="f4")
        self._written[start:stop] = True

    def finish(
        self,
        catalog: Table,
        *,
        rejected: Table | None = None,
        stretch: dict | None = None,
        columns: dict | None = None,
        inputs: list | None = None,
        extra: dict | None = None,
    ) -> None:
        """Store the catalogue (stamp order), rejected rows and provenance."""
        assert self._file is not None
        if len(catalog) != self.n:
            raise BadValueError(f"catalogue has {len(catalog)} rows for {self.n} stamps")
        if not self._written.all():
            raise BadValueError(f"{(~self._written).sum()} of {self.n} stamps were never written")
        f = self._file
        _write_table(f, "catalog", catalog)
        _write_table(f, "rejected", rejected if rejected is not None else empty_rejected())
        f.attrs["bands"] = _json_attr(self.bands)
        f.attrs["stamp_size"] = self.stamp_size
        f.attrs["pixel_scale_arcsec"] = (
            np.nan if self.pixel_scale_arcsec is None else float(self.pixel_scale_arcsec)
        )
        f.attrs["kind"] = self.kind
        f.attrs["stretch"] = _json_attr(stretch or {})
        f.attrs["columns"] = _json_attr(columns or {})
        f.attrs["inputs"] = _json_attr(inputs or [])
        f.attrs["extra"] = _json_attr(extra or {})
        f.attrs["galearn_version"] = __version__
        f.attrs["checksum"] = _stamp_checksum(f["stamps/stretched"], catalog)
        self._finished = True

    def __exit__(self, exc_type, exc, tb) -> bool:
        assert self._file is not None and self._ctx is not None
        self._file.close()
        if exc_type is None and not self._finished:
            err = BadValueError(f"{self.path}: SampleWriter closed without finish()")
            self._ctx.__exit__(BadValueError, err, None)  # removes the temporary file
            raise err
        return bool(self._ctx.__exit__(exc_type, exc, tb))


def empty_rejected() -> Table:
    """An empty ``rejected`` table with its columns (row, id, reason)."""
    return Table(
        {"row": np.zeros(0, dtype=np.int64), "id": np.zeros(0, dtype="U1"), "reason": np.zeros(0, dtype="U1")}
    )


def _stamp_checksum(dset: h5py.Dataset, catalog: Table, batch: int = 1024) -> str:
    h = hashlib.sha256()
    for start in range(0, dset.shape[0], batch):
        h.update(np.ascontiguousarray(dset[start : start + batch]).tobytes())
    h.update(str(len(catalog)).encode())
    return h.hexdigest()


def write_sample(
    path: str | os.PathLike,
    stretched: np.ndarray,
    catalog: Table,
    *,
    physical: np.ndarray | None,
    bands: list[str],
    kind: str,
    pixel_scale_arcsec: float | None = None,
    **finish_kwargs: Any,
) -> None:
    """Write a whole in-memory sample at once (see :class:`SampleWriter`)."""
    stretched = np.asarray(stretched, dtype="f4")
    if stretched.ndim != 4:
        raise BadValueError(f"stamps must be (N, C, H, W), got shape {stretched.shape}")
    with SampleWriter(
        path,
        len(stretched),
        bands,
        stretched.shape[-1],
        kind=kind,
        pixel_scale_arcsec=pixel_scale_arcsec,
        physical=physical is not None,
    ) as w:
        if len(stretched):
            w.write(0, stretched, physical)
        w.finish(catalog, **finish_kwargs)


@dataclass
class Sample:
    """Read access to a stamp file; arrays are read lazily, in batches.

    Attributes
    ----------
    path : Path
    n : int
        Number of stamps.
    bands : list of str
        Band order of axis C.
    stamp_size : int
        Stamp side (pixels).
    pixel_scale_arcsec : float or None
    kind, stretch, columns, inputs, extra, checksum, galearn_version
        Provenance, see the module docstring.
    """

    path: Path
    n: int
    bands: list[str]
    stamp_size: int
    pixel_scale_arcsec: float | None
    kind: str
    stretch: dict
    columns: dict
    inputs: list
    extra: dict
    checksum: str
    galearn_version: str
    _catalog: Table | None = field(default=None, repr=False)
    _rejected: Table | None = field(default=None, repr=False)

    @property
    def catalog(self) -> Table:
        """Kept catalogue rows, in stamp order (astropy Table)."""
        if self._catalog is None:
            with h5py.File(self.path, "r") as f:
                self._catalog = _read_table(f, "catalog")
        return self._catalog

    @property
    def rejected(self) -> Table:
        """Rows that did not become stamps: ``row``, ``id``, ``reason``."""
        if self._rejected is None:
            with h5py.File(self.path, "r") as f:
                self._rejected = _read_table(f, "rejected")
        return self._rejected

    @property
    def display_images(self) -> bool:
        """Ingested display images (``kind == "images"``, e.g. SDSS JPEGs / 255): their sky sits on a
        pedestal and their pixel ratios are not colours, so measurements subtract each stamp's border
        median first (:func:`galearn.imaging.subtract_border_background`) and aperture colours are skipped."""
        return self.kind == "images"

    def has(self, which: str) -> bool:
        with h5py.File(self.path, "r") as f:
            return f"stamps/{which}" in f

    def read(self, which: str = "stretched", index: slice | np.ndarray | None = None) -> np.ndarray:
        """Stamps ``(n, C, H, W)`` float32; ``which`` is ``stretched`` or ``physical``."""
        if which not in STAMP_ARRAYS:
            raise BadValueError(f"which must be one of {STAMP_ARRAYS}, got {which!r}")
        with h5py.File(self.path, "r") as f:
            key = f"stamps/{which}"
            if key not in f:
                raise MissingInputError(f"{self.path} has no {which} stamps")
            dset = f[key]
            if index is None:
                return dset[...]
            if isinstance(index, slice):
                return dset[index]
            index = np.asarray(index)
            if index.dtype == bool:
                index = np.flatnonzero(index)
            order = np.argsort(index)
            out = np.empty((len(index),) + dset.shape[1:], dtype=dset.dtype)
            if len(index):
                out[order] = dset[index[order]]  # h5py needs increasing indices
            return out

    def iter_batches(self, batch_size: int = 256, which: str = "stretched") -> Iterator[tuple[slice, np.ndarray]]:
        """Yield ``(slice, stamps)`` batches in order, never holding more than one batch."""
        for start in range(0, self.n, batch_size):
            sl = slice(start, min(start + batch_size, self.n))
            yield sl, self.read(which, sl)

    def column(self, role: str) -> str | None:
        """Catalogue column name that plays ``role`` (e.g. ``id``, ``z``, ``u_mag``), if any."""
        name = self.columns.get(role)
        return name if name in self.catalog.colnames else None

    def ids(self) -> np.ndarray:
        """Galaxy identifiers as strings (the ``id`` role, else the row number)."""
        col = self.column("id")
        if col is None:
            return np.array([str(i) for i in range(self.n)])
        return np.array([str(v) for v in self.catalog[col]])


def open_sample(path: str | os.PathLike) -> Sample:
    """Open a ``sample.h5``/``library.h5`` file (single or sharded) for reading."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist")
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            _check_shards_present(path, a, "cutouts")
            n, _, _, _ = f["stamps/stretched"].shape
            scale = float(a["pixel_scale_arcsec"])
            return Sample(
                path=path,
                n=int(n),
                bands=json.loads(a["bands"]),
                stamp_size=int(a["stamp_size"]),
                pixel_scale_arcsec=None if np.isnan(scale) else scale,
                kind=str(a["kind"]),
                stretch=json.loads(a["stretch"]),
                columns=json.loads(a["columns"]),
                inputs=json.loads(a["inputs"]),
                extra=json.loads(a["extra"]),
                checksum=str(a["checksum"]),
                galearn_version=str(a["galearn_version"]),
            )
    except (OSError, KeyError) as exc:
        raise BadValueError(f"{path} is not a galearn stamp file: {exc}") from exc


# --------------------------------------------------------------------------- features


@dataclass
class Features:
    """Feature vectors of a stamp file: ``values`` is ``(N, D)`` float32, row i = stamp i."""

    values: np.ndarray
    ids: np.ndarray
    attrs: dict


class FeatureWriter:
    """Write features in chunks to ``<path>.partial``; resume an interrupted run.

    ``attrs`` must include ``sample_checksum``; a partial file made for another
    sample or with other attributes is discarded. Call :meth:`finish` to rename
    the completed file into place. The writer holds ``.<name>.lock`` beside the
    file from construction to :meth:`finish` / :meth:`close`, so no other
    process discards, extends or renames its partial file
    (:class:`~galearn.errors.WorkspaceBusyError` unless ``wait``).
    """

    def __init__(self, path: str | os.PathLike, n: int, dim: int, ids: np.ndarray, attrs: dict, *,
                 wait: bool = False) -> None:
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.n, self.dim = int(n), int(dim)
        self.attrs = dict(attrs)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file: h5py.File | None = None
        self._lock = contextlib.ExitStack()
        self._lock.enter_context(file_lock(self.path.with_name(f".{self.path.name}.lock"), what=str(self.path),
                                           wait=wait))
        try:
            self._open(ids)
        except BaseException:
            self._lock.close()
            raise

    def _open(self, ids: np.ndarray) -> None:
        fingerprint = _json_attr(self.attrs)
        if self.partial.exists():
            try:
                f = h5py.File(self.partial, "a")
                if f.attrs.get("fingerprint") == fingerprint and f["features"].shape == (self.n, self.dim):
                    self._file = f
                else:
                    f.close()
            except OSError:
                pass
            if self._file is None:
                self.partial.unlink()
        if self._file is None:
            f = h5py.File(self.partial, "w")
            f.create_dataset("features", shape=(self.n, self.dim), dtype="f4")
            f.create_dataset("ids", data=np.asarray(ids, dtype="S"))
            f.attrs["fingerprint"] = fingerprint
            f.attrs["n_done"] = 0
            self._file = f

    @property
    def n_done(self) -> int:
        """Rows already written (a resumed run starts here)."""
        return int(self._file.attrs["n_done"])

    def write(self, start: int, values: np.ndarray) -> None:
        """Write rows ``start:start+len(values)``; rows must arrive in order."""
        stop = start + len(values)
        self._file["features"][start:stop] = values
        self._file.attrs["n_done"] = stop
        self._file.flush()

    def finish(self, extra_attrs: dict | None = None) -> None:
        attrs = dict(self.attrs, **(extra_attrs or {}))
        self._file.attrs["attrs"] = _json_attr(attrs)
        self._file.close()
        os.replace(self.partial, self.path)
        self._lock.close()

    def close(self) -> None:
        if self._file is not None and self._file.id.valid:
            self._file.close()
        self._lock.close()


def read_feature_block(path: str | os.PathLike, start: int, stop: int, rows=None) -> np.ndarray:
    """Feature vectors ``start:stop`` of a feature file (one partition of a Dask task), or only ``rows`` of them.

    ``rows``: sorted indices into the whole file, all within ``start:stop``.
    The file is read once, front to back (sharded files through their virtual dataset).
    """
    with h5py.File(path, "r") as f:
        block = f["features"][int(start) : int(stop)]
    if rows is None:
        return block
    return block[np.asarray(rows, dtype=np.int64) - int(start)]


def read_features(path: str | os.PathLike) -> Features:
    """Read a feature file written by :class:`FeatureWriter`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run `galearn features` first")
    try:
        with h5py.File(path, "r") as f:
            _check_shards_present(path, f.attrs, "features")
            return Features(
                values=f["features"][...],
                ids=f["ids"][...].astype(str),
                attrs=json.loads(f.attrs["attrs"]),
            )
    except (OSError, KeyError, ValueError) as exc:
        raise BadValueError(f"{path} is damaged or not a galearn feature file ({_short(exc)}): "
                            "delete it and re-run `galearn features`") from exc


# --------------------------------------------------------------------------- shards


def shard_dir(path: str | os.PathLike) -> Path:
    """Folder of the partition shards of ``path`` (``sample.h5`` -> ``sample.parts``)."""
    path = Path(path)
    return path.with_name(path.stem + ".parts")


def shard_path(path: str | os.PathLike, index: int) -> Path:
    """Shard file of partition ``index`` of ``path``."""
    return shard_dir(path) / f"part-{int(index):05d}.h5"


def _arrays_checksum(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode())
        h.update(str(a.dtype.str).encode() + str(a.shape).encode())
        h.update(a.tobytes())
    return h.hexdigest()


def write_shard(path: str | os.PathLike, arrays: dict[str, np.ndarray], *, n_rows: int, fingerprint: str,
                attrs: dict | None = None) -> str:
    """Write one partition's arrays (first axis = rows) atomically; return their checksum.

    ``arrays`` values with a string dtype are stored as byte strings.
    """
    arrays = {k: (np.asarray(v, dtype="S") if np.asarray(v).dtype.kind == "U" else np.asarray(v))
              for k, v in arrays.items()}
    checksum = _arrays_checksum(arrays)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            for name, a in arrays.items():
                f.create_dataset(name, data=a)
            f.attrs["n_rows"] = int(n_rows)
            f.attrs["fingerprint"] = fingerprint
            f.attrs["checksum"] = checksum
            f.attrs["attrs"] = _json_attr(attrs or {})
            f.attrs["galearn_version"] = __version__
    return checksum


def check_shard(path: str | os.PathLike, fingerprint: str, n_rows: int | None = None) -> dict | None:
    """The shard's attributes when it is complete and valid for ``fingerprint``, else None.

    Checked, not assumed: the file must open, carry the fingerprint and row
    count, and its arrays must hash to the stored checksum.
    """
    path = Path(path)
    if not path.exists():
        return None
    try:
        with h5py.File(path, "r") as f:
            a = f.attrs
            if a.get("fingerprint") != fingerprint:
                return None
            if n_rows is not None and int(a.get("n_rows", -1)) != int(n_rows):
                return None
            arrays = {name: f[name][...] for name in f.keys()}
            if _arrays_checksum(arrays) != a.get("checksum"):
                return None
            return {"n_rows": int(a["n_rows"]), "checksum": str(a["checksum"]),
                    "attrs": json.loads(a.get("attrs", "{}")),
                    "shapes": {k: v.shape for k, v in arrays.items()}}
    except (OSError, KeyError, ValueError):
        return None


def read_shard(path: str | os.PathLike, name: str) -> np.ndarray:
    """One array of a shard."""
    with h5py.File(path, "r") as f:
        return f[name][...]


def _virtual(f: h5py.File, name: str, main: Path, shards: list[Path], counts: list[int], tail: tuple,
             dtype: str, source_name: str) -> None:
    n = int(sum(counts))
    layout = h5py.VirtualLayout(shape=(n,) + tuple(tail), dtype=dtype)
    start = 0
    for shard, count in zip(shards, counts):
        if count:
            rel = os.path.relpath(shard, main.parent)
            layout[start : start + count] = h5py.VirtualSource(rel, source_name, shape=(count,) + tuple(tail))
        start += count
    f.create_virtual_dataset(name, layout, fillvalue=np.nan)


def _check_shards_present(path: Path, attrs, producer: str) -> None:
    if "shards" not in attrs:
        return
    for rel in json.loads(attrs["shards"]):
        if not (path.parent / rel).exists():
            raise MissingInputError(f"{path}: its shard {path.parent / rel} is missing; "
                                    f"re-run `galearn {producer}` to rebuild it")


def sharded_checksum(shard_checksums: list[str], n: int) -> str:
    """Checksum of a sharded stamp file: SHA-256 over its shards' checksums (in order) and ``n``."""
    h = hashlib.sha256(b"galearn-sharded-v1")
    for c in shard_checksums:
        h.update(c.encode())
    h.update(str(int(n)).encode())
    return h.hexdigest()


def write_sharded_sample(
    path: str | os.PathLike,
    shards: list[Path],
    counts: list[int],
    shard_checksums: list[str],
    catalog: Table,
    *,
    bands: list[str],
    stamp_size: int,
    kind: str,
    pixel_scale_arcsec: float | None,
    physical: bool = True,
    rejected: Table | None = None,
    stretch: dict | None = None,
    columns: dict | None = None,
    inputs: list | None = None,
    extra: dict | None = None,
) -> None:
    """Write ``sample.h5`` over finished shards (datasets ``stretched`` / ``physical`` of each shard)."""
    path = Path(path)
    n = int(sum(counts))
    if len(catalog) != n:
        raise BadValueError(f"catalogue has {len(catalog)} rows for {n} stamps")
    tail = (len(bands), int(stamp_size), int(stamp_size))
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            grp = f.create_group("stamps")
            for name in STAMP_ARRAYS:
                if name == "physical" and not physical:
                    continue
                _virtual(grp, name, path, shards, counts, tail, "f4", name)
            _write_table(f, "catalog", catalog)
            _write_table(f, "rejected", rejected if rejected is not None else empty_rejected())
            f.attrs["bands"] = _json_attr(list(bands))
            f.attrs["stamp_size"] = int(stamp_size)
            f.attrs["pixel_scale_arcsec"] = np.nan if pixel_scale_arcsec is None else float(pixel_scale_arcsec)
            f.attrs["kind"] = kind
            f.attrs["stretch"] = _json_attr(stretch or {})
            f.attrs["columns"] = _json_attr(columns or {})
            f.attrs["inputs"] = _json_attr(inputs or [])
            f.attrs["extra"] = _json_attr(extra or {})
            f.attrs["galearn_version"] = __version__
            f.attrs["checksum"] = sharded_checksum(shard_checksums, n)
            f.attrs["shards"] = _json_attr([os.path.relpath(s, path.parent) for s in shards])


def write_sharded_features(path: str | os.PathLike, shards: list[Path], counts: list[int], dim: int,
                           ids: np.ndarray, attrs: dict) -> None:
    """Write ``features/<backbone>.h5`` over finished shards (dataset ``features`` of each shard)."""
    path = Path(path)
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            _virtual(f, "features", path, shards, counts, (int(dim),), "f4", "features")
            f.create_dataset("ids", data=np.asarray(ids, dtype="S"))
            f.attrs["attrs"] = _json_attr(attrs)
            f.attrs["shards"] = _json_attr([os.path.relpath(s, path.parent) for s in shards])


def remove_stale_shards(path: str | os.PathLike, keep: list[Path]) -> int:
    """Delete shard files of ``path`` not in ``keep`` (left by an earlier run); return how many."""
    folder = shard_dir(path)
    if not folder.is_dir():
        return 0
    keep_set = {Path(k).resolve() for k in keep}
    n = 0
    for p in folder.iterdir():
        if p.resolve() not in keep_set:
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    return n


# --------------------------------------------------------------------------- maps


def write_map(
    path: str | os.PathLike,
    embedding: np.ndarray,
    ids: np.ndarray,
    attrs: dict,
    *,
    model: Any = None,
    model_path: str | os.PathLike | None = None,
) -> None:
    """Write 2-D map coordinates ``(N, 2)`` (and optionally the fitted model, pickled)."""
    with atomic_path(path, suffix=".h5.tmp") as tmp:
        with h5py.File(tmp, "w") as f:
            f.create_dataset("embedding", data=np.asarray(embedding, dtype="f8"))
            f.create_dataset("ids", data=np.asarray(ids, dtype="S"))
            f.attrs["attrs"] = _json_attr(attrs)
    if model is not None:
        if model_path is None:
            raise BadValueError("model_path is required to store a fitted map model")
        with atomic_path(model_path) as tmp:
            with open(tmp, "wb") as fh:
                pickle.dump(model, fh, protocol=pickle.HIGHEST_PROTOCOL)


def read_map(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, dict]:
    """Return ``(embedding (N, 2), ids, attrs)`` of a map file."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run `galearn embed` first")
    try:
        with h5py.File(path, "r") as f:
            return f["embedding"][...], f["ids"][...].astype(str), json.loads(f.attrs["attrs"])
    except (OSError, KeyError, ValueError) as exc:
        raise BadValueError(f"{path} is damaged or not a galearn map file ({_short(exc)}): "
                            "delete it and re-run `galearn embed`") from exc


def load_map_model(path: str | os.PathLike) -> Any:
    """Load a pickled fitted map model (only load files you wrote yourself)."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist: run `galearn embed` first")
    with open(path, "rb") as fh:
        return pickle.load(fh)


# --------------------------------------------------------------------------- small tables


def write_table(path: str | os.PathLike, table: Table) -> None:
    """Write a small table as ECSV (keeps units and meta), atomically."""
    with atomic_path(path, suffix=".ecsv") as tmp:
        Table(table).write(tmp, format="ascii.ecsv", overwrite=True)


def write_table_as(path: str | os.PathLike, table: Table) -> None:
    """Write ``table`` in the format its file name says (``.ecsv``, ``.csv``, ``.fits``, ...), atomically.

    Raises
    ------
    BadValueError
        Astropy cannot tell a table format from the name.
    """
    from astropy.io.registry import IORegistryError

    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.suffix.lower() in (".gz", ".bz2", ".xz") else path.suffix
    try:
        with atomic_path(path, suffix=suffix or ".tmp") as tmp:
            Table(table).write(tmp, overwrite=True)
    except IORegistryError:
        raise BadValueError(f"{path}: cannot tell a table format from the name; use .ecsv, .csv, .fits, "
                            ".vot or .hdf5") from None


def read_table(path: str | os.PathLike) -> Table:
    """Read a table written by :func:`write_table`."""
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"{path} does not exist")
    try:
        return Table.read(path, format="ascii.ecsv")
    except (OSError, ValueError, KeyError) as exc:
        raise BadValueError(f"{path} is damaged or not an ECSV table ({_short(exc)})") from exc


def _short(exc: BaseException, limit: int = 160) -> str:
    """One line of an exception's text, for messages that name a file."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- stale inputs


def check_made_from(product: str | os.PathLike, recorded: str | None, sample: "Sample", refresh: str) -> None:
    """Refuse a workspace product made from another version of ``sample``.

    Parameters
    ----------
    product : path-like
        The product (map, classes table, library, ...), for the message.
    recorded : str or None
        The ``checksum`` of the stamp file the product was made from, as the
        product records it (None: an older file that records none; not checked).
    sample : Sample
        The stamp file the workspace holds now.
    refresh : str
        The command that makes the product again (e.g. ``galearn embed --workspace WS``).

    Raises
    ------
    StaleInputError
        ``recorded`` differs from ``sample.checksum``.
    """
    if recorded is not None and str(recorded) != sample.checksum:
        raise StaleInputError(f"{product} was made from another version of {sample.path} (it changed since): "
                              f"run `{refresh}` to refresh it")


def library_sample_checksum(library: "Sample") -> str | None:
    """Checksum of the real sample a GAN library was trained on (from its ``inputs``), if recorded."""
    for item in library.inputs:
        if isinstance(item, dict) and item.get("checksum") and str(item.get("file", "")).endswith("sample.h5"):
            return str(item["checksum"])
    return None


# --------------------------------------------------------------------------- metrics


def read_metrics(path: str | os.PathLike) -> dict:
    """The metrics.json object ({} if the file does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadValueError(f"{path} is damaged ({_short(exc)}): delete it and re-run the stages "
                            "(`galearn run` re-runs only what is missing)") from exc
    if not isinstance(metrics, dict):
        raise BadValueError(f"{path} is damaged: not a JSON object")
    return metrics


def update_metrics(path: str | os.PathLike, new: dict, *, replace: tuple[str, ...] = ()) -> dict:
    """Merge ``new`` into metrics.json atomically and return the result.

    Nested dictionaries are merged key by key; top-level keys named in
    ``replace`` are replaced whole.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # stages of two processes may merge keys at once: serialise the read-modify-write
    with file_lock(path.with_name(f".{path.name}.lock"), what=str(path), wait=True, poll_seconds=0.05,
                   quiet=True):
        metrics = read_metrics(path)
        for key in replace:
            metrics.pop(key, None)
        metrics = deep_merge(metrics, new)
        atomic_write_text(path, json.dumps(metrics, indent=2, sort_keys=True, default=json_default) + "\n")
    return metrics


def metrics_digest(path: str | os.PathLike, key: str = "*") -> str | None:
    """SHA-256 of one metrics.json key (``"*"``: everything but ``timing``); None when the key is absent.

    Bookkeeping for ``galearn run`` (is a stage's metrics output there, did the
    report's input change); no stage decides anything from the values.
    """
    metrics = read_metrics(path)
    if key == "*":
        metrics.pop("timing", None)
        value = metrics
    elif key in metrics:
        value = metrics[key]
    else:
        return None
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- GAN checkpoints

_CKPT_NAME = re.compile(r"ckpt-(\d+)\.pt$")


def checkpoint_path(run_dir: str | os.PathLike, step: int) -> Path:
    """Checkpoint file of ``step`` in a GAN run directory: ``ckpt-<step>.pt``."""
    return Path(run_dir) / f"ckpt-{int(step):06d}.pt"


def list_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Checkpoints in ``run_dir``, oldest step first."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := _CKPT_NAME.search(p.name))]
    return [p for _, p in sorted(found)]


# --------------------------------------------------------------------------- manifest


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on ``<path>.lock`` (POSIX; a no-op elsewhere)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    with open(path.with_name(f".{path.name}.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def read_manifest(ws: Workspace | str | os.PathLike) -> dict:
    """``WS/manifest.json`` ({} when no stage has written it yet)."""
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    if not ws.manifest.exists():
        return {}
    try:
        return json.loads(ws.manifest.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BadValueError(f"{ws.manifest} is not valid JSON ({exc}); delete it and re-run the stages") from exc


def update_manifest(ws: Workspace | str | os.PathLike, entries: dict, *, merge: bool = False) -> dict:
    """Record what a stage produced: each top-level key of ``entries`` replaces the manifest's.

    With ``merge=True`` nested dictionaries are merged key by key instead
    (e.g. ``{"maps": {"tsne": ...}}`` keeps the other methods). Paths inside
    the workspace are stored relative to it. The write is atomic and holds a
    lock, so concurrent stages do not lose each other's entries.
    """
    ws = ws if isinstance(ws, Workspace) else Workspace(ws)
    entries = json.loads(json.dumps(entries, default=json_default))
    with _locked(ws.manifest):
        manifest = read_manifest(ws)
        manifest = deep_merge(manifest, entries) if merge else {**manifest, **entries}
        manifest["galearn_version"] = __version__
        atomic_write_text(ws.manifest, json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def record_compute(ws: Workspace | str | os.PathLike, stages: dict) -> None:
    """Record where partitioned stages ran: manifest ``compute.<stage>`` = scheduler, address, workers, partitions.

    ``stages`` maps a stage name to its provenance (``galearn.compute``'s
    ``ComputeSession.record``: ``scheduler``, ``address``, ``n_workers``,
    ``n_partitions``, ``seconds``, task CPU / wall seconds ...); a stage's
    previous entry is replaced, the other stages' kept. Partition bounds are
    left out (they can be long; the sharded files keep them).
    """
    if not stages:
        return
    clean = {name: {k: v for k, v in dict(entry).items() if k != "bounds"} for name, entry in stages.items()}
    update_manifest(ws, {"compute": clean}, merge=True)


def relative_to_workspace(ws: Workspace, path: str | os.PathLike) -> str:
    """``path`` relative to the workspace root when inside it (manifest entries), else as given."""
    path = Path(path)
    try:
        return str(path.resolve().relative_to(ws.root.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- which feature file


def resolve_backbone(ws: Workspace, backbone: str | None = None) -> str:
    """The backbone whose feature file a stage reads.

    ``backbone`` when given; else the active one recorded in the manifest
    (``features.backbone``, written by ``galearn features``); else the only
    feature file present.

    Raises
    ------
    MissingInputError
        No such feature file, or none at all.
    BadValueError
        Several feature files and nothing says which one to use.
    """
    available = ws.feature_backbones()
    folder = ws.features("x").parent
    if backbone:
        path = ws.features(backbone)
        if not path.exists():
            have = f" (available: {', '.join(available)})" if available else ""
            raise MissingInputError(
                f"{path} does not exist: run `galearn features --workspace {ws.root} --backbone {backbone}` "
                f"first{have}"
            )
        return backbone
    if not available:
        raise MissingInputError(f"no feature file in {folder}: run `galearn features --workspace {ws.root}` first")
    named = read_manifest(ws).get("features", {}).get("backbone")
    if named in available:
        return named
    if len(available) == 1:
        return available[0]
    raise BadValueError(
        f"{folder} holds several feature files ({', '.join(available)}) and {ws.manifest.name} names none of "
        "them; choose one with --backbone"
    )


def load_features(ws: Workspace, backbone: str, *, library: bool = False, sample: Sample | None = None) -> Features:
    """Read a feature file; with ``sample``, check that it was computed from that sample."""
    path = ws.features(backbone, library=library)
    feats = read_features(path)
    if feats.values.ndim != 2 or len(feats.values) != len(feats.ids):
        raise BadValueError(f"{path}: malformed feature file (features {feats.values.shape}, {len(feats.ids)} ids)")
    if sample is not None:
        check_aligned(feats, sample, path)
    return feats


def check_aligned(feats: Features, sample: Sample, where) -> None:
    """Raise if ``feats`` does not hold one row per stamp of ``sample``, in order."""
    made_for = feats.attrs.get("sample_checksum")
    if made_for is not None and made_for != sample.checksum:
        raise BadValueError(
            f"{where} was computed from another version of {sample.path}: re-run `galearn features`"
        )
    if len(feats.ids) != sample.n or not np.array_equal(np.asarray(feats.ids, dtype=str), sample.ids()):
        raise BadValueError(
            f"{where} has {len(feats.ids)} rows that do not match the {sample.n} stamps of {sample.path}: "
            "re-run `galearn features`"
        )


def require_sample(ws: Workspace) -> Sample:
    """Open ``WS/sample.h5`` or say which command makes it."""
    if not ws.sample.exists():
        raise MissingInputError(
            f"{ws.sample} does not exist: run `galearn cutouts` or `galearn ingest-images` first"
        )
    return open_sample(ws.sample)
