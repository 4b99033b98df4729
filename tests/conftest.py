"""Shared fixtures of the test suite.

* every test runs offline: ``GALEARN_OFFLINE=1`` and sockets may only connect
  to this machine (loopback, Unix sockets), so a test that would download
  weights fails at once instead of hanging or passing by luck;
* ``stamp_workspace``: a workspace with a ``sample.h5`` (given or random
  stamps, an ``ID`` column, optional extra catalogue columns);
* ``feature_files``: one feature file per backbone for that sample;
* tests needing torch start with ``pytest.importorskip("torch")`` (or
  ``needs_torch``), so the suite skips them cleanly without it.
"""

from __future__ import annotations

import ipaddress
import socket

import numpy as np
import pytest
from astropy.table import Table

from galearn.store import FeatureWriter, Sample, Workspace, open_sample, write_sample

needs_torch = pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="needs torch (pip install 'galearn[gan]')"
)

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _local(address) -> bool:
    if not isinstance(address, tuple):  # AF_UNIX path
        return True
    host = str(address[0])
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No test touches the network: GALEARN_OFFLINE=1 and non-local socket connections fail."""
    monkeypatch.setenv("GALEARN_OFFLINE", "1")

    def connect(self, address):
        if not _local(address):
            raise OSError(f"tests run offline: connection to {address!r} refused by tests/conftest.py")
        return _real_connect(self, address)

    def connect_ex(self, address):
        if not _local(address):
            raise OSError(f"tests run offline: connection to {address!r} refused by tests/conftest.py")
        return _real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)


def make_stamp_workspace(root, *, stamps=None, n: int = 10, size: int = 32, bands=("F435W", "F850LP", "F160W"),
                         ids=None, columns: dict | None = None, roles: dict | None = None, seed: int = 0,
                         **sample_kw) -> Workspace:
    """A workspace at ``root`` whose ``sample.h5`` holds ``stamps`` (float ``(N, C, H, W)``; default uniform noise).

    The catalogue has ``ID`` (``ids``, default 1..N; the ``id`` role) plus
    ``columns`` (name -> values); ``roles`` adds column roles (e.g. ``{"z": "zbest"}``);
    other keywords go to :func:`galearn.store.write_sample` (``physical``, ``kind``, ...).
    """
    ws = Workspace(root)
    if stamps is None:
        stamps = np.random.default_rng(seed).uniform(0, 1, (n, len(bands), size, size)).astype("f4")
    n = len(stamps)
    cat = Table({"ID": np.arange(1, n + 1) if ids is None else ids, **(columns or {})})
    sample_kw.setdefault("physical", None)
    sample_kw.setdefault("kind", "mock")
    write_sample(ws.sample, stamps, cat, bands=list(bands), columns={"id": "ID", **(roles or {})}, **sample_kw)
    return ws


@pytest.fixture
def stamp_workspace(tmp_path):
    """``make(name="ws", **kw)``: :func:`make_stamp_workspace` under the test's temporary folder."""

    def make(name: str = "ws", **kw) -> Workspace:
        return make_stamp_workspace(tmp_path / name, **kw)

    return make


def write_feature_files(ws: Workspace, sample: Sample, backbones, first: np.ndarray, rng: np.random.Generator) -> None:
    """One feature file per backbone: ``first`` for the first, Gaussian noise for the others."""
    n, dim = first.shape
    for i, bb in enumerate(backbones):
        values = first if i == 0 else rng.normal(size=(n, dim))
        w = FeatureWriter(ws.features(bb), n, dim, sample.ids(), {"sample_checksum": sample.checksum})
        w.write(0, values.astype("f4"))
        w.finish({"backbone": bb})


@pytest.fixture
def feature_files():
    """``write(ws, backbones, first, rng)``: feature files for ``ws``'s sample (see :func:`write_feature_files`)."""

    def write(ws: Workspace, backbones, first: np.ndarray, rng: np.random.Generator) -> None:
        write_feature_files(ws, open_sample(ws.sample), backbones, first, rng)

    return write
