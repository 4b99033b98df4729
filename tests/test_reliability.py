"""Reliability (issue 18): each case drives the `galearn` command line as a user would.

Concurrent runs use two real processes; the interrupt test sends a real SIGINT to
a real `galearn gan train` process; disk-full uses a small tmpfs where the
platform allows (root), else a size-limited file (RLIMIT_FSIZE), plus a
simulated ENOSPC in-process. See docs/reliability.md.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

import galearn
from galearn import store
from galearn.cli import main
from galearn.store import Workspace, open_sample

SRC = str(Path(galearn.__file__).resolve().parents[1])
BANDS = ["F435W", "F850LP", "F160W"]


# --------------------------------------------------------------------------- helpers


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _galearn_cmd(*args) -> list[str]:
    return [sys.executable, "-c", "import sys; from galearn.cli import main; sys.exit(main())", *map(str, args)]


def _start(*args, **kw) -> subprocess.Popen:
    return subprocess.Popen(_galearn_cmd(*args), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **kw)


def _galearn(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(_galearn_cmd(*args), env=_env(), capture_output=True, text=True, timeout=timeout, **kw)


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_line(code: int, err: str, *needles: str) -> str:
    assert code == 2, err
    lines = [ln for ln in err.strip().splitlines() if ln.strip() and not ln.startswith("galearn: warning")]
    assert len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    t0 = time.monotonic()
    while not predicate():
        if proc is not None and proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"process ended (rc {proc.returncode}) before {what}: {err[-2000:]}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _blobs(n: int, size: int, seed: int):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    red = rng.random(n) < 0.5
    colours = np.where(red[:, None], [0.3, 0.6, 0.9], [0.8, 0.6, 0.4]) * rng.uniform(0.6, 1.0, (n, 1))
    widths = np.where(red, rng.uniform(1.5, 2.5, n), rng.uniform(3, 5, n))
    img = colours[:, :, None, None] * np.exp(-(xx**2 + yy**2)[None, None] / (2 * widths[:, None, None, None] ** 2))
    img = np.clip(img + 0.02 * rng.standard_normal(img.shape), 0, 1).astype("f4")
    return img, np.where(red, "early", "late")


def sample_workspace(root: Path, n: int = 60, size: int = 32, seed: int = 0, keep: np.ndarray | None = None,
                     labels: np.ndarray | None = None) -> Workspace:
    """A small workspace with ``sample.h5`` only (blobs in two classes), written through the store API."""
    ws = Workspace(root)
    stamps, truth = _blobs(n, size, seed)
    if labels is not None:
        truth = labels
    cat = Table({"ID": np.arange(1, n + 1), "truth_class": truth})
    if keep is not None:  # another selection of the same catalogue
        stamps, cat = stamps[keep], cat[keep]
    store.write_sample(ws.sample, stamps, cat, physical=stamps, bands=BANDS, kind="mock", pixel_scale_arcsec=0.06,
                       columns={"id": "ID"})
    return ws


def _features(ws: Workspace, seed: int = 0) -> None:
    """Feature file whose rows separate the two classes (what a backbone would give)."""
    s = open_sample(ws.sample)
    rng = np.random.default_rng(seed)
    y = (np.asarray(s.catalog["truth_class"]) == "early").astype(float)
    values = (rng.normal(size=(s.n, 8)) + 3 * y[:, None]).astype("f4")
    w = store.FeatureWriter(ws.features("bb"), s.n, 8, s.ids(), {"sample_checksum": s.checksum})
    w.write(0, values)
    w.finish({"backbone": "bb"})


# --------------------------------------------------------------------------- 1. concurrent runs


def _lock_holder(ws: Workspace, name: str) -> dict:
    try:
        text = ws.lock(name).read_text()
        return json.loads(text) if text.strip() else {}
    except (OSError, json.JSONDecodeError):
        return {}


FEATURE_ARGS = ("--backbone", "random-resnet18", "--tta", "1", "--scales", "1", "--input-size", "128")


def test_second_writer_is_refused_naming_the_first_and_wait_queues(tmp_path):
    ws = sample_workspace(tmp_path / "ws", n=96)
    a = _start("features", "-w", ws.root, *FEATURE_ARGS)
    _wait_for(lambda: _lock_holder(ws, "features").get("pid") == a.pid, 120, "the first run to take the lock", a)
    b = _galearn("features", "-w", ws.root, *FEATURE_ARGS, timeout=120)  # refused at once
    c = _start("features", "-w", ws.root, *FEATURE_ARGS, "--wait")  # queues behind the first
    out_a, err_a = a.communicate(timeout=600)
    out_c, err_c = c.communicate(timeout=600)
    assert a.returncode == 0, err_a
    line = _one_line(b.returncode, b.stderr, "is being written by", f"PID {a.pid}", "galearn features", "--wait")
    assert "features.lock" in line
    assert c.returncode == 0, err_c
    assert "waiting for" in err_c and f"PID {a.pid}" in err_c
    feats = store.read_features(ws.features("random-resnet18"))
    assert feats.values.shape[0] == 96 and np.isfinite(feats.values).all()
    assert feats.attrs["sample_checksum"] == open_sample(ws.sample).checksum
    assert not list((ws.root / "features").glob("*.partial"))
    assert _lock_holder(ws, "features") == {}  # released


def test_lock_of_a_killed_run_is_cleared(tmp_path):
    ws = sample_workspace(tmp_path / "ws", n=24)
    a = _start("features", "-w", ws.root, *FEATURE_ARGS)
    _wait_for(lambda: _lock_holder(ws, "features").get("pid") == a.pid, 120, "the first run to take the lock", a)
    a.send_signal(signal.SIGKILL)
    a.communicate(timeout=60)
    assert _lock_holder(ws, "features").get("pid") == a.pid  # the record is left behind
    b = _galearn("features", "-w", ws.root, *FEATURE_ARGS, timeout=600)
    assert b.returncode == 0, b.stderr
    assert "cleared a stale lock" in b.stderr and f"PID {a.pid}" in b.stderr and "no longer running" in b.stderr
    assert store.read_features(ws.features("random-resnet18")).values.shape[0] == 24


def test_lock_in_process_is_reentrant_and_exclusive(tmp_path):
    from galearn.errors import WorkspaceBusyError

    ws = Workspace(tmp_path / "ws")
    with store.workspace_lock(ws, "maps"), store.workspace_lock(ws, "maps"):  # re-entrant in one process
        holder = json.loads(ws.lock("maps").read_text())
        assert holder["pid"] == os.getpid()
        r = _galearn("embed", "-w", ws.root, timeout=120)  # another process: refused, names this one
        _one_line(r.returncode, r.stderr, f"PID {os.getpid()}")
    assert ws.lock("maps").read_text() == ""
    assert issubclass(WorkspaceBusyError, BlockingIOError)


# --------------------------------------------------------------------------- 2. 16-bit PNG


def test_16bit_png_is_scaled_by_its_bit_depth(tmp_path, capsys):
    from PIL import Image

    rng = np.random.default_rng(1)
    d8, d16 = tmp_path / "png8", tmp_path / "png16"
    d8.mkdir(), d16.mkdir()
    yy, xx = np.mgrid[:80, :80] - 39.5
    for i in range(3):
        grey = np.clip(200 * np.exp(-(xx**2 + yy**2) / (2 * (6 + 3 * i) ** 2)) + rng.normal(8, 2, (80, 80)), 0, 255)
        g8 = grey.astype(np.uint8)
        Image.fromarray(g8).save(d8 / f"g{i}.png")
        Image.fromarray(g8.astype(np.uint16) * 257).save(d16 / f"g{i}.png")  # the same image, 16 bits deep
    assert Image.open(d16 / "g0.png").mode == "I;16"
    (tmp_path / "labels.csv").write_text("id,kind\ng0,a\ng1,b\ng2,a\n")
    for d in (d8, d16):
        code, out, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "labels.csv",
                               "-w", tmp_path / f"ws_{d.name}", "--size", "16"], capsys)
        assert code == 0 and "3 stamps, 0 rejected" in out, err
    s8, s16 = open_sample(tmp_path / "ws_png8" / "sample.h5"), open_sample(tmp_path / "ws_png16" / "sample.h5")
    m8, m16 = s8.read().mean(), s16.read().mean()
    assert 0.05 < m8 < 0.3 and abs(m16 - m8) < 0.01, (m8, m16)  # not a white image (mean ~1)
    assert s16.stretch["pixel_scaling"] == {"I;16": "16-bit: value / 65535"}
    assert s16.stretch["image_modes"] == {"I;16": 3}
    assert s8.stretch["pixel_scaling"] == {"L": "8-bit: value / 255"}


def test_unsupported_image_mode_is_rejected_with_the_reason(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from galearn.survey import images

    d = tmp_path / "imgs"
    d.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.full((20, 20), 100, np.uint8)).save(d / f"{stem}.png")
    (tmp_path / "labels.csv").write_text("id\na\nb\n")
    # pretend "L" is a mode galearn cannot read: the file is rejected, named, with the mode
    monkeypatch.setattr(images, "EIGHT_BIT_MODES", tuple(m for m in images.EIGHT_BIT_MODES if m != "L"))
    code, _, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "labels.csv", "-w", tmp_path / "ws"],
                        capsys)
    _one_line(code, err, "none of the 2 matched images could be read", "unsupported image mode 'L'")


# --------------------------------------------------------------------------- 3. stale report


def test_report_refuses_a_map_and_agreement_of_another_selection(tmp_path, capsys):
    ws = sample_workspace(tmp_path / "ws", n=80)
    _features(ws)
    for args in (["embed", "-w", ws.root, "--method", "pca", "--backbone", "bb"],
                 ["classify", "-w", ws.root, "--method", "pca", "--compare", "truth_class", "--backbone", "bb"],
                 ["report", "-w", ws.root, "report.method=pca"]):
        code, out, err = _run(args, capsys)
        assert code == 0, err
    # `galearn cutouts` again with another selection: a new sample.h5 (60 of the 80 galaxies)
    sample_workspace(tmp_path / "ws", n=80, keep=np.arange(80) >= 20)
    code, _, err = _run(["report", "-w", ws.root, "report.method=pca"], capsys)
    _one_line(code, err, "maps/pca.h5", "another version of", "sample.h5", f"galearn embed --workspace {ws.root}")
    # the stages before it refuse too, each naming its refresh command
    code, _, err = _run(["embed", "-w", ws.root, "--method", "pca", "--backbone", "bb"], capsys)
    _one_line(code, err, "bb.h5", "galearn features")
    # refresh features + map only: the report still refuses the old agreement / classes
    _features(ws)
    code, _, err = _run(["embed", "-w", ws.root, "--method", "pca", "--backbone", "bb"], capsys)
    assert code == 0, err
    code, _, err = _run(["report", "-w", ws.root, "report.method=pca"], capsys)
    _one_line(code, err, "classes.ecsv", f"galearn classify --workspace {ws.root}")
    code, _, err = _run(["classify", "-w", ws.root, "--method", "pca", "--compare", "truth_class", "--backbone", "bb"], capsys)
    assert code == 0, err
    code, out, err = _run(["report", "-w", ws.root, "report.method=pca"], capsys)
    assert code == 0, err


# --------------------------------------------------------------------------- 4. typed overrides


@pytest.mark.parametrize("override, key, expected", [
    ("embed.perplexity=abc", "embed.perplexity", "expected a number"),
    ("features.batch_size=abc", "features.batch_size", "expected an integer"),
    ("cutouts.max_bad_fraction=abc", "cutouts.max_bad_fraction", "expected a number"),
    ("gan.lr_g=abc", "gan.lr_g", "expected a number"),
    ("gan.steps=1.5", "gan.steps", "expected an integer"),
    ("embed.perplexity=-5", "embed.perplexity", "must be > 0"),
    ("cutouts.max_bad_fraction=2", "cutouts.max_bad_fraction", "must be in [0, 1]"),
    ("embed.method=tnse", "embed.method", "must be one of tsne, umap, pca"),
    ("report.thumbnail_grid=0", "report.thumbnail_grid", "must be >= 1"),
    ("gan.balance=maybe", "gan.balance", "expected true or false"),
])
def test_dry_run_refuses_what_the_run_would_refuse(override, key, expected, capsys):
    code, out, err = _run(["run", "--dry-run", override], capsys)
    _one_line(code, err, f"configuration key {key}", expected)
    assert out == ""


def test_typed_values_from_toml_and_cli_options(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[embed]\nperplexity = "abc"\n')
    code, _, err = _run(["run", "--dry-run", "--config", cfg], capsys)
    _one_line(code, err, "embed.perplexity", "'abc'")
    code, _, err = _run(["embed", "-w", tmp_path / "ws", "--perplexity", "-1"], capsys)  # a CLI option
    _one_line(code, err, "--perplexity (embed.perplexity)", "must be > 0")
    cfg.write_text('[embed]\nperplexity = 12\n[features]\nscales = [1, 0.5]\ntta = true\n')
    code, out, err = _run(["run", "--dry-run", "--config", cfg, "gan.steps=7", "classify.compare=truth_class"], capsys)
    assert code == 0, err
    assert "perplexity = 12.0" in out and "steps = 7" in out and 'compare = [\n    "truth_class",\n]' in out


def test_subprocess_dry_run_exit_status():
    r = _galearn("run", "--dry-run", "embed.perplexity=abc", timeout=120)
    _one_line(r.returncode, r.stderr, "embed.perplexity")


# --------------------------------------------------------------------------- 5. Ctrl-C during gan train


GAN_OPTS = ["gan.batch_size=8", "gan.z_dim=8", "gan.channels=4", "gan.checkpoint_every=1000", "gan.grid_every=1000",
            "gan.random_state=3", "gan.threads=1"]


def test_sigint_checkpoints_the_current_step_and_resume_is_exact(tmp_path):
    pytest.importorskip("torch")
    from galearn.config import load_config, parse_overrides, section
    from galearn.gan import run_train
    from galearn.gan.checkpoint import latest_checkpoint, load_checkpoint

    ws = sample_workspace(tmp_path / "ws", n=40)
    stats = ws.gan / "stats.csv"
    a = _start("gan", "train", "-w", ws.root, "--condition", "truth_class", "--steps", "100000", *GAN_OPTS)

    def steps_done() -> int:
        return max(0, len(stats.read_text().splitlines()) - 1) if stats.exists() else 0

    _wait_for(lambda: steps_done() >= 3, 300, "3 training steps", a)
    a.send_signal(signal.SIGINT)
    out, err = a.communicate(timeout=120)
    assert a.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err and "interrupted at step" in err
    ckpt = latest_checkpoint(ws.gan)
    k = int(load_checkpoint(ckpt)["step"])
    assert k >= 3 and k % 1000 != 0 and f"step {k} of 100000" in err  # not a scheduled checkpoint
    assert steps_done() == k

    r = _galearn("gan", "train", "-w", ws.root, "--condition", "truth_class", "--steps", k + 2, "--resume",
                 *GAN_OPTS, timeout=600)
    assert r.returncode == 0, r.stderr
    resumed = load_checkpoint(latest_checkpoint(ws.gan))
    assert resumed["step"] == k + 2

    ref_ws = sample_workspace(tmp_path / "ref", n=40)
    cfg = section(load_config(None, parse_overrides(GAN_OPTS)), "gan", condition="truth_class", steps=k + 2)
    run_train(ref_ws, cfg, progress=False)
    ref = load_checkpoint(latest_checkpoint(ref_ws.gan))
    import torch

    for net in ("G", "D", "G_ema"):
        for name, value in ref[net].items():
            torch.testing.assert_close(resumed[net][name], value, rtol=0, atol=0, msg=f"{net}.{name}")


def test_sigterm_in_the_last_gan_step_finishes_the_run_and_stops(tmp_path, monkeypatch):
    """A stop asked for during the last step is not swallowed: the run is saved whole, then Interrupted."""
    pytest.importorskip("torch")
    from galearn.config import load_config, parse_overrides, section
    from galearn.errors import Interrupted
    from galearn.gan import loop
    from galearn.gan.checkpoint import latest_checkpoint, load_checkpoint
    from galearn.store import read_manifest

    ws = sample_workspace(tmp_path / "ws", n=40)
    cfg = section(load_config(None, parse_overrides(GAN_OPTS)), "gan", condition="truth_class", steps=2)
    real_step = loop.train_step

    def step_then_sigterm(step, **kw):  # a real SIGTERM to this process during the last step
        if step == cfg.steps - 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_step(step, **kw)

    monkeypatch.setattr(loop, "train_step", step_then_sigterm)
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=r"after its last step \(2\); the training is complete") as info:
        loop.run_train(ws, cfg, progress=False)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before
    assert load_checkpoint(latest_checkpoint(ws.gan))["step"] == 2
    assert read_manifest(ws)["gan"]["steps"] == 2  # the run is recorded whole
    assert len(ws.gan_stats.read_text().splitlines()) == 3


# --------------------------------------------------------------------------- 6. labels in the page's inline JSON


def test_label_with_html_comment_and_script_keeps_the_map_data_parseable(tmp_path, capsys):
    evil = np.array(["<!--<script>", "</script><b>x</b>&amp;"])
    ws = sample_workspace(tmp_path / "ws", n=40, labels=evil[np.arange(40) % 2])
    _features(ws)
    xy = np.random.default_rng(0).normal(size=(40, 2))
    s = open_sample(ws.sample)
    store.write_map(ws.map("pca"), xy, s.ids(), {"method": "pca", "sample_checksum": s.checksum})
    code, _, err = _run(["report", "-w", ws.root, "report.method=pca"], capsys)
    assert code == 0, err
    html = (ws.report / "index.html").read_text(encoding="utf-8")
    m = re.search(r'<script type="application/json" id="galearn-data">(.*?)</script>', html, re.S)
    assert m is not None
    block = m.group(1)
    assert "<" not in block and ">" not in block and "&" not in block
    data = json.loads(block)
    assert evil[0] in json.dumps(data, ensure_ascii=False) and evil[1] in json.dumps(data, ensure_ascii=False)
    # nowhere in the page does a label open a comment or a script element
    assert "<!--<script>" not in html and "</script><b>" not in html
    assert html.count("<script") == html.count("</script>") == 2  # the JSON block and the page's script


# --------------------------------------------------------------------------- 7. disk full, damaged files


def _report_ws(root: Path) -> Workspace:
    ws = sample_workspace(root, n=40)
    s = open_sample(ws.sample)
    xy = np.random.default_rng(0).normal(size=(40, 2))
    store.write_map(ws.map("tsne"), xy, s.ids(), {"method": "tsne", "sample_checksum": s.checksum})
    return ws


def _tmpfs(path: Path, size_kib: int) -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_report_on_a_full_disk_exits_2_naming_the_file(tmp_path):
    src = _report_ws(tmp_path / "src")
    used = sum(p.stat().st_size for p in src.root.rglob("*") if p.is_file())
    mnt = tmp_path / "small"
    mounted = _tmpfs(mnt, used // 1024 + 64)
    try:
        if mounted:  # a real full disk: a tmpfs barely larger than the workspace
            ws_root = mnt / "ws"
            shutil.copytree(src.root, ws_root)
            r = _galearn("report", "-w", ws_root, timeout=300)
            expected = "no space left on the device"
        else:  # a size-limited file (RLIMIT_FSIZE): writes past the limit fail with EFBIG
            import resource

            ws_root = src.root

            def limit():
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (used + 32 * 1024, used + 32 * 1024))

            r = subprocess.run(_galearn_cmd("report", "-w", ws_root), env=_env(), capture_output=True, text=True,
                               timeout=300, preexec_fn=limit)
            expected = "File too large"
        line = _one_line(r.returncode, r.stderr, expected, str(ws_root / "report"))
        assert len(line) < 400
        # nothing half-written is left under a final name, and the inputs are intact
        assert not list((ws_root / "report").glob(".*.tmp")) and not list((ws_root / "report").glob(".*.png"))
        assert open_sample(ws_root / "sample.h5").n == 40
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], check=False)


def test_simulated_enospc_in_any_write_names_the_file(tmp_path, monkeypatch, capsys):
    ws = _report_ws(tmp_path / "ws")
    real_write_text = Path.write_text

    def full(self, *a, **k):
        if self.name.startswith(".index.html"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write_text(self, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    code, _, err = _run(["report", "-w", ws.root], capsys)
    _one_line(code, err, str(ws.report / "index.html"), "no space left on the device")
    assert not (ws.report / "index.html").exists()


@pytest.mark.parametrize("name, producer", [("maps/tsne.h5", "galearn embed"), ("report/metrics.json", None)])
def test_truncated_workspace_file_is_one_line(tmp_path, capsys, name, producer):
    ws = _report_ws(tmp_path / "ws")
    store.update_metrics(ws.metrics, {"sample": {"n_images": 40}})
    path = ws.root / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, _, err = _run(["report", "-w", ws.root], capsys)
    _one_line(code, err, str(path), "damaged", *([producer] if producer else []))


def test_permission_denied_is_one_line(tmp_path, capsys):
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions")
    ws = _report_ws(tmp_path / "ws")
    ws.report.mkdir()
    ws.report.chmod(0o500)
    try:
        code, _, err = _run(["report", "-w", ws.root], capsys)
        _one_line(code, err, str(ws.report), "ermission")
    finally:
        ws.report.chmod(0o700)


# --------------------------------------------------------------------------- 8. BOM in a labels CSV


def test_labels_csv_with_a_byte_order_mark(tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for stem in ("a", "b"):
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(d / f"{stem}.png")
    (tmp_path / "labels.csv").write_bytes("\ufeffid,kind\na,x\nb,y\n".encode("utf-8"))
    code, out, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "labels.csv", "-w", tmp_path / "ws"],
                          capsys)
    assert code == 0 and "2 stamps, 0 rejected" in out, err
    assert open_sample(tmp_path / "ws" / "sample.h5").catalog.colnames[:2] == ["id", "kind"]


# --------------------------------------------------------------------------- 9. plain catalogue, no preset


def _mosaics(tmp_path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    n = 160
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [150.1, 2.2]
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    w.wcs.cd = np.diag([-0.03, 0.03]) / 3600.0
    yy, xx = np.mgrid[0:n, 0:n]
    px, py = np.array([40.0, 120.0, 40.0, 120.0]), np.array([40.0, 40.0, 120.0, 120.0])
    img = np.random.default_rng(0).normal(0, 0.01, (n, n)).astype("f4")
    for x, y in zip(px, py):
        img += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 8.0).astype("f4")
    paths = {}
    hdr = w.to_header()
    hdr["BUNIT"] = "nJy"  # a flux calibration, which cutouts requires
    for band, name in (("F435W", "A.fits"), ("F850LP", "B.fits")):
        fits.PrimaryHDU(img, header=hdr).writeto(tmp_path / name)
        paths[band] = tmp_path / name
    ra, dec = w.all_pix2world(px, py, 0)
    return paths, ra, dec


def test_plain_catalogue_with_two_mosaics_and_no_preset(tmp_path):
    paths, ra, dec = _mosaics(tmp_path)
    Table({"id": [11, 12, 13, 14], "ra": ra, "dec": dec, "z": [0.3, 0.5, 0.9, 1.2]}).write(tmp_path / "cat.csv")
    r = _galearn("cutouts", "--catalog", tmp_path / "cat.csv", "--image", f"F435W={paths['F435W']}",
                 "--image", f"F850LP={paths['F850LP']}", "-w", tmp_path / "ws", "--size", "16", timeout=300)
    assert r.returncode == 0, r.stderr
    assert "4 stamps, 0 rejected" in r.stdout
    assert "column roles detected from their names: id=id, ra=ra, dec=dec, z=z" in r.stderr
    s = open_sample(tmp_path / "ws" / "sample.h5")
    assert s.columns == {"id": "id", "ra": "ra", "dec": "dec", "z": "z"}
    assert s.extra["column_roles"]["from"] == "detected from common column names"
    assert sorted(s.ids()) == ["11", "12", "13", "14"]


def test_ambiguous_column_role_names_both(tmp_path, capsys):
    paths, ra, dec = _mosaics(tmp_path)
    Table({"ID": [1, 2, 3, 4], "RA": ra, "RAJ2000": ra, "DEC": dec}).write(tmp_path / "cat.fits")
    args = ["cutouts", "--catalog", tmp_path / "cat.fits", "--image", f"F435W={paths['F435W']}", "-w",
            tmp_path / "ws", "--size", "16"]
    code, _, err = _run(args, capsys)
    _one_line(code, err, "cat.fits", "role 'ra' is ambiguous", "'RA'", "'RAJ2000'", "--column ra=NAME")
    code, out, err = _run([*args, "--column", "ra=RAJ2000"], capsys)
    assert code == 0, err


# --------------------------------------------------------------------------- 10. one-line warnings, plain values


def test_warnings_are_one_line_without_python_source(tmp_path):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    for stem in ("a", "b", "c"):
        Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(d / f"{stem}.png")
    (tmp_path / "labels.csv").write_text("id,kind\na,x\nb,y\nzz,y\n")
    r = _galearn("ingest-images", "--images", d, "--labels", tmp_path / "labels.csv", "-w", tmp_path / "ws",
                 timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(ln.startswith("galearn: warning: ") for ln in lines), r.stderr
    assert ".py:" not in r.stderr and "make_sample_from_images" not in r.stderr


def test_messages_show_plain_values(tmp_path, capsys):
    from PIL import Image

    d = tmp_path / "imgs"
    d.mkdir()
    Image.fromarray(np.full((20, 20, 3), 90, np.uint8)).save(d / "x.png")
    (tmp_path / "labels.csv").write_text("id,kind\n1,a\n")
    code, _, err = _run(["ingest-images", "--images", d, "--labels", tmp_path / "labels.csv", "-w", tmp_path / "ws"],
                        capsys)
    line = _one_line(code, err, "vs id '1'")
    assert "np." not in line
    pytest.importorskip("torch")
    weights = tmp_path / "weights.txt"
    weights.write_text("not weights\n")
    ws = sample_workspace(tmp_path / "ws2", n=4)
    code, _, err = _run(["features", "-w", ws.root, "--backbone", "resnet18", "--weights", weights], capsys)
    line = _one_line(code, err, "weights.txt", "nor a PyTorch state dict")
    assert not re.search(r"state dict: \d+$", line)


# --------------------------------------------------------------------------- 5b. SIGTERM during adapt


@pytest.mark.parametrize("signal_in_step", [1, 2], ids=["first step", "last step"])
def test_sigterm_during_adapt_checkpoints_and_resume_is_exact(tmp_path, monkeypatch, signal_in_step):
    torch = pytest.importorskip("torch")
    from galearn.errors import Interrupted
    from galearn.features import adapt as adapt_mod
    from galearn.features import load_backbone

    images = torch.from_numpy(_blobs(16, 32, 0)[0]).clamp(0, 1)
    kw = dict(epochs=1, batch_size=8, random_state=5, freeze_stages=3, progress=False, fingerprint="f")

    def fresh():
        return load_backbone("random-resnet18", device="cpu", random_state=0)

    full = fresh()
    assert adapt_mod.adapt_backbone(full, images, **kw)["step"] == 2

    real_loss, calls = adapt_mod.nt_xent_loss, []

    def loss_then_sigterm(*a, **k):  # a real SIGTERM to this process during the step asked for
        calls.append(1)
        if len(calls) == signal_in_step:
            os.kill(os.getpid(), signal.SIGTERM)
        return real_loss(*a, **k)

    monkeypatch.setattr(adapt_mod, "nt_xent_loss", loss_then_sigterm)
    ckpt = tmp_path / "ckpt.pt"
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted, match=f"interrupted at step {signal_in_step} of 2") as info:
        adapt_mod.adapt_backbone(fresh(), images, checkpoint=ckpt, **kw)
    assert info.value.exit_code == 128 + signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) == before  # handlers restored
    assert torch.load(ckpt, weights_only=True)["step"] == signal_in_step
    monkeypatch.setattr(adapt_mod, "nt_xent_loss", real_loss)
    resumed = fresh()
    h = adapt_mod.adapt_backbone(resumed, images, checkpoint=ckpt, **kw)
    assert h["resumed_from"] == signal_in_step and h["finished"]
    a, b = full.model.state_dict(), resumed.model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
