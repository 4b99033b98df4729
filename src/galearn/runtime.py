"""Low-level run-time helpers shared by every stage, each written once.

* seeds: :func:`derive_seed` (an independent seed from ``(random_state, *keys)``)
  and :func:`as_seed` (a plain int for libraries on the legacy ``RandomState`` API);
* :func:`resolve_device`: the torch device a stage runs on;
* :func:`machine_description`: the torch build and processor a result was computed with;
* :func:`blas_threads`: limit the BLAS / OpenMP pools of numpy and scikit-learn;
* :func:`json_default`: JSON encoding of numpy scalars / arrays, paths and sets;
* :func:`deep_merge`: merge nested dictionaries (configuration overrides,
  metrics.json, the workspace manifest);
* :func:`stop_requests`: SIGINT / SIGTERM as a flag that a training loop reads
  between steps, so it can checkpoint the last finished step and raise
  :class:`~galearn.errors.Interrupted` (a second Ctrl-C stops at once).

This module sits below the stages: it imports nothing from galearn but
:mod:`galearn.errors`, and torch / threadpoolctl only inside the function
that needs them.
"""

from __future__ import annotations

import contextlib
import numbers
import signal
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BadValueError

__all__ = ["derive_seed", "as_seed", "resolve_device", "machine_description", "blas_threads", "json_default", "deep_merge", "StopRequest",
           "stop_requests"]

_SEED_MASK = (1 << 63) - 1


def derive_seed(random_state: int, *keys: int) -> int:
    """A 63-bit seed that depends only on ``(random_state, *keys)``.

    Per-step / per-stream / per-galaxy randomness is derived from the run's
    ``random_state`` and integer keys (e.g. ``(step, stream)``) rather than
    drawn from one shared stream, so results do not depend on the number of
    workers or on where a resumed run restarts. Uses
    :class:`numpy.random.SeedSequence`.
    """
    entropy = [int(random_state), *(int(k) for k in keys)]
    state = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & _SEED_MASK


def as_seed(random_state) -> int | None:
    """A plain ``int`` seed (or None) for libraries that use the legacy ``RandomState`` API.

    ``random_state`` may be None, an int or a :class:`numpy.random.Generator`
    (one integer is drawn from it).
    """
    if random_state is None:
        return None
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(0, 2**31 - 1))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise BadValueError(f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def resolve_device(device: str | None, *, option: str = "device") -> str:
    """The torch device name a stage runs on.

    ``None`` or ``"auto"``: ``"cuda"`` when CUDA is available, else ``"cpu"``.
    Otherwise the name is checked (a CUDA device without CUDA, or a string
    torch does not know, raises :class:`BadValueError` naming ``option``) and
    returned unchanged. The result is a ``str``; ``torch.device(result)`` and
    ``tensor.to(result)`` accept it.
    """
    import torch

    if device is None or device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    try:
        torch.device(device)
    except RuntimeError as exc:
        raise BadValueError(f"{option}={device!r} is not a torch device: {exc}") from exc
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadValueError(f"{option}={device}: CUDA is not available on this machine (use cpu)")
    return device


def machine_description(device: str = "cpu") -> dict:
    """The torch version, the vector instructions its CPU kernels use, the processor and (CUDA) the GPU.

    A seed reproduces a training run bit for bit with the same torch build on
    the same kind of processor. torch picks its CPU kernels by instruction set
    (AVX2, AVX512, ...), whose float sums round differently, and a GAN
    amplifies such last-bit differences over its steps: recorded beside a run
    (``WS/gan/config.json``), this says whether two runs can be compared number
    for number.
    """
    import platform

    import torch

    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), model)
    out = {"torch": torch.__version__, "cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if str(device).startswith("cuda") and torch.cuda.is_available():
        out["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return out


def blas_threads(n: int | None = 1):
    """Context manager limiting BLAS/OpenMP thread pools (numpy, scikit-learn) to ``n`` threads.

    The linear algebra of maps, clustering and agreement metrics is small
    (about 1500 x 1280 at the default size). On a loaded 2-core machine the
    idle-spinning of a 2-thread OpenBLAS/OpenMP pool made a 50-component PCA
    13x slower and a 10-start k-means 35x slower than one thread (measured
    while other jobs ran); one thread is never much slower, so galearn uses
    one by default. ``n=None`` leaves the pools alone.
    """
    if n is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=int(n))


def json_default(obj: Any) -> Any:
    """``default=`` for :func:`json.dumps`: numpy scalars / arrays, paths and sets."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def deep_merge(base: dict, new: dict) -> dict:
    """A copy of ``base`` with ``new`` merged in; nested dictionaries are merged key by key."""
    out = dict(base)
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


# --------------------------------------------------------------------------- interrupts


class StopRequest:
    """Set by the signal handler: ``requested`` is True once a stop was asked for; ``signum`` says which."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def stop_requests(what: str = "training") -> Iterator[StopRequest]:
    """Catch SIGINT and SIGTERM as a :class:`StopRequest` while the block runs; restore the handlers after."""
    guard = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield guard
        return
    names = [n for n in ("SIGINT", "SIGTERM") if hasattr(signal, n)]
    previous = {n: signal.getsignal(getattr(signal, n)) for n in names}

    def handler(signum, frame):
        if guard.requested:  # second signal: stop now
            raise KeyboardInterrupt
        guard.signum = signum
        print(f"\ngalearn: {signal.Signals(signum).name} received: finishing the current {what} step and saving "
              "a checkpoint (press Ctrl-C again to stop at once)", file=sys.stderr, flush=True)

    for n in names:
        signal.signal(getattr(signal, n), handler)
    try:
        yield guard
    finally:
        for n, h in previous.items():
            signal.signal(getattr(signal, n), h)
