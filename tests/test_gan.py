"""Conditional GAN: networks, augmentation, exact resume, reproducible library, --balance."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from galearn.config import GanConfig  # noqa: E402
from galearn.errors import BadValueError  # noqa: E402
from conftest import make_stamp_workspace  # noqa: E402
from galearn.store import Workspace, open_sample  # noqa: E402
from galearn.imaging import AsinhStretch  # noqa: E402

BANDS = ["F435W", "F850LP", "F160W"]


def synthetic_galaxies(n: int, seed: int, size: int = 32, *, classes=("disk", "spheroid"), weights=(0.6, 0.4)):
    """Physical stamps (N, 3, size, size) of noisy exponential profiles and their classes.

    ``spheroid``: compact, round, red; ``disk``: larger, elongated, blue.
    """
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array(classes), size=n, p=np.asarray(weights) / np.sum(weights))
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    out = np.empty((n, 3, size, size), dtype="f8")
    disk = labels == classes[0]
    re = np.where(disk, rng.uniform(3, 6, n), rng.uniform(1.5, 3, n)) * size / 32
    q = np.where(disk, rng.uniform(0.25, 0.6, n), rng.uniform(0.75, 1.0, n))
    th = rng.uniform(0, np.pi, n)
    dx, dy = rng.normal(0, 0.7, (2, n))
    flux = 10 ** rng.uniform(0.3, 1.0, n)
    colours = np.where(disk[:, None], [1.0, 0.8, 0.6], [0.3, 0.8, 1.4]) * rng.uniform(0.85, 1.15, (n, 3))
    x = xx[None] - dx[:, None, None]
    y = yy[None] - dy[:, None, None]
    c, s = np.cos(th)[:, None, None], np.sin(th)[:, None, None]
    r = np.hypot(x * c + y * s, (-x * s + y * c) / q[:, None, None])
    prof = flux[:, None, None] * np.exp(-1.68 * r / re[:, None, None])
    out[:] = prof[:, None] * colours[:, :, None, None]
    out += rng.normal(0, 0.02, out.shape)
    return out.astype("f4"), labels.astype(str)


def make_workspace(tmp_path, n: int = 80, seed: int = 0, size: int = 32) -> Workspace:
    physical, labels = synthetic_galaxies(n, seed, size)
    stretch = AsinhStretch.fit(physical)
    return make_stamp_workspace(tmp_path / "ws", stamps=stretch.forward(physical), bands=BANDS,
                                columns={"truth_class": labels}, physical=physical, pixel_scale_arcsec=0.06,
                                stretch=stretch.to_dict())


TINY = GanConfig(steps=4, batch_size=8, z_dim=8, channels=4, checkpoint_every=2, grid_every=2, random_state=3, d_steps=2)


def _states_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=f"parameter {k} differs")


def assert_resume_exact(tmp_path, cfg, n: int = 40):
    """Train ``cfg`` (4 steps, checkpoints every 2) in one go and as 2 + 2 resumed steps; G, D, G_ema bit-identical.

    Returns the uninterrupted run's workspace and its last checkpoint.
    """
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint

    ws_a, ws_b = make_workspace(tmp_path / "a", n=n), make_workspace(tmp_path / "b", n=n)
    run_train(ws_a, cfg, progress=False)
    run_train(ws_b, dataclasses.replace(cfg, steps=2), progress=False)
    run_train(ws_b, cfg, resume=True, progress=False)
    a, b = load_checkpoint(ws_a.gan / "ckpt-000004.pt"), load_checkpoint(ws_b.gan / "ckpt-000004.pt")
    for key in ("G", "D", "G_ema"):
        _states_equal(a[key], b[key])
    return ws_a, a


def assert_sample_reproducible(ws, cfg, n_per_class: int = 4) -> None:
    """``gan sample`` twice from the workspace's checkpoint gives bit-identical libraries (seeded)."""
    from galearn.gan import run_sample
    from galearn.store import open_sample

    run_sample(ws, dataclasses.replace(cfg, n_per_class=n_per_class), progress=False)
    first = open_sample(ws.library).read("stretched")
    run_sample(ws, dataclasses.replace(cfg, n_per_class=n_per_class), progress=False)
    np.testing.assert_array_equal(first, open_sample(ws.library).read("stretched"))


def test_networks_shapes_any_bands_and_power_of_two_sizes():
    from galearn.gan.networks import Discriminator, Generator

    for c, size in [(1, 32), (5, 64)]:
        G = Generator(3, c, size, z_dim=8, channels=4)
        D = Discriminator(3, c, size, channels=4)
        y = torch.tensor([0, 2])
        x = G(torch.randn(2, 8), y)
        assert x.shape == (2, c, size, size) and x.abs().max() <= 1
        assert D(x, y).shape == (2,)
    with pytest.raises(BadValueError, match="power of two"):
        Generator(2, 3, 48)


def test_diffaugment_is_a_symmetry_and_keeps_band_ratios():
    from galearn.gan.augment import diff_augment, parse_policy

    x = torch.rand(16, 3, 32, 32) * 2 - 1
    g = torch.Generator().manual_seed(0)
    y = diff_augment(x, "flip,rot90", g)
    # Flips / rotations permute pixels: per-stamp, per-band pixel values are unchanged.
    torch.testing.assert_close(y.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)
    assert not torch.equal(x, y)
    t = diff_augment(x, "translation", torch.Generator().manual_seed(1))
    assert t.shape == x.shape
    # Translation is a circular shift (no fill value, hence no artificial frame at the
    # shift's reach that G would learn to paint): pixel values are only permuted.
    torch.testing.assert_close(t.flatten(2).sort(-1).values, x.flatten(2).sort(-1).values)
    assert not torch.equal(t, x)
    # translation32: at most 1 pixel at a 32-pixel side -- each stamp is one of the 9 rolls.
    t32 = diff_augment(x, "translation32", torch.Generator().manual_seed(1))
    rolls = [torch.roll(x, (dy, dx), (2, 3)) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
    assert all(any(torch.equal(t32[i], r[i]) for r in rolls) for i in range(len(x)))
    # translation-half: translation's rolls (up to 2 pixels at 32) on about half of the stamps, the others untouched
    big = torch.rand(400, 3, 32, 32) * 2 - 1
    th = diff_augment(big, "translation-half", torch.Generator().manual_seed(3))
    rolls2 = [torch.roll(big, (dy, dx), (2, 3)) for dy in range(-2, 3) for dx in range(-2, 3)]
    assert all(any(torch.equal(th[i], r[i]) for r in rolls2) for i in range(0, len(big), 7))
    untouched = float((th == big).flatten(1).all(1).float().mean())  # 1/2 kept + 1/2 x 1/25 rolled by (0, 0)
    assert 0.44 < untouched < 0.60
    torch.testing.assert_close(th, diff_augment(big, "translation-half", torch.Generator().manual_seed(3)))
    # cutout: one square hole per stamp, up to half the side (clipped at the border), the same
    # pixels in every band, filled with that stamp's own per-band median (its sky level).
    c = diff_augment(x, "cutout", torch.Generator().manual_seed(2))
    hole = (c != x).any(1)  # (a pixel already at its median value is unchanged in that band)
    for i in range(len(x)):
        rows, cols = hole[i].any(1).nonzero(), hole[i].any(0).nonzero()
        assert 0 < len(rows) <= 16 and 0 < len(cols) <= 16
        assert hole[i, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # a rectangle
        fill = c[i][:, hole[i]]
        torch.testing.assert_close(fill, x[i].flatten(1).median(1).values[:, None].expand_as(fill))
        torch.testing.assert_close(c[i][:, ~hole[i]], x[i][:, ~hole[i]])
    # Same generator seed -> same augmentation (resumable), and gradients flow.
    xr = x.clone().requires_grad_(True)
    a = diff_augment(xr, "flip,rot90,translation", torch.Generator().manual_seed(5))
    b = diff_augment(x, "flip,rot90,translation", torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.detach(), b)
    a.sum().backward()
    assert xr.grad is not None
    with pytest.raises(BadValueError, match="color"):
        parse_policy("flip,color")


def test_auto_diffaugment_is_per_discriminator_recorded_and_kept_on_resume(tmp_path):
    """gan.diffaugment = auto: no flips or turns for the projected D (so it sees orientation), all three for
    SNGAN; the resolved policy is what the checkpoint records, and resuming with auto keeps it."""
    from galearn.gan import run_train
    from galearn.gan.augment import resolve_policy
    from galearn.gan.checkpoint import load_checkpoint

    assert resolve_policy("auto", "projected") == "translation"
    assert resolve_policy("auto", "sngan") == "flip,rot90,translation"
    assert resolve_policy("flip,translation", "projected") == "flip,translation"  # named policies stay
    with pytest.raises(BadValueError, match="no policy for gan.discriminator"):
        resolve_policy("auto", "stylegan")
    with pytest.raises(BadValueError, match="known: auto"):
        run_train(make_workspace(tmp_path / "bad"), dataclasses.replace(TINY, diffaugment="auto,flip"), progress=False)

    ws = make_workspace(tmp_path)
    cfg = dataclasses.replace(TINY, steps=2)
    assert cfg.diffaugment == "auto"
    run_train(ws, cfg, progress=False)
    assert load_checkpoint(ws.gan / "ckpt-000002.pt")["config"]["diffaugment"] == "flip,rot90,translation"
    # A run started with a named policy keeps it when resumed with auto; another named one is refused.
    ws_t = make_workspace(tmp_path / "t")
    run_train(ws_t, dataclasses.replace(cfg, diffaugment="translation"), progress=False)
    run_train(ws_t, dataclasses.replace(cfg, steps=4), resume=True, progress=False)
    assert load_checkpoint(ws_t.gan / "ckpt-000004.pt")["config"]["diffaugment"] == "translation"
    with pytest.raises(BadValueError, match="gan.diffaugment was 'translation'"):
        run_train(ws_t, dataclasses.replace(cfg, steps=6, diffaugment="flip,rot90,translation"), resume=True,
                  progress=False)
    # A checkpoint from before the setting was recorded was trained with all three policies.
    ckpt_file = ws.gan / "ckpt-000002.pt"
    ckpt = torch.load(ckpt_file, map_location="cpu", weights_only=False)
    del ckpt["config"]["diffaugment"]
    torch.save(ckpt, ckpt_file)
    with pytest.raises(BadValueError, match="gan.diffaugment was 'flip,rot90,translation', now 'translation'"):
        run_train(ws, dataclasses.replace(cfg, steps=4, diffaugment="translation"), resume=True, progress=False)


def test_resumed_training_matches_uninterrupted_run(tmp_path):
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint

    ws_a = make_workspace(tmp_path / "a")
    ws_b = make_workspace(tmp_path / "b")
    run_train(ws_a, TINY, progress=False)
    run_train(ws_b, dataclasses.replace(TINY, steps=2), progress=False)
    assert sorted(p.name for p in ws_b.gan.glob("ckpt-*.pt")) == ["ckpt-000002.pt"]
    run_train(ws_b, TINY, resume=True, progress=False)

    a = load_checkpoint(ws_a.gan / "ckpt-000004.pt")
    b = torch.load(ws_b.gan / "ckpt-000004.pt", weights_only=True)
    assert a["step"] == b["step"] == 4
    for key in ("G", "D", "G_ema"):
        _states_equal(a[key], b[key])
    assert a["classes"] == ["disk", "spheroid"] and a["bands"] == BANDS and a["stamp_size"] == 32
    assert set(a["rng"]) == {"torch", "numpy", "python"}
    # The training log is continuous and the same.
    log_a = (ws_a.gan / "stats.csv").read_text().splitlines()
    log_b = (ws_b.gan / "stats.csv").read_text().splitlines()
    assert log_a[0].split(",") == ["step", "loss_G", "loss_D", "D_real", "D_fake", "seconds", "cpu_seconds"]
    assert [r.split(",")[:5] for r in log_a] == [r.split(",")[:5] for r in log_b]
    assert len(log_a) == 5
    assert (ws_a.gan / "grids" / "step-000004.png").exists() and (ws_a.gan / "grids" / "disk.png").exists()
    info = json.loads((ws_a.gan / "config.json").read_text())
    assert info["condition"] == "truth_class"
    # Held-out stamps never reach training.
    split = json.loads((ws_a.gan / "split.json").read_text())
    assert not set(split["heldout"]) & set(split["train"])
    # Resuming with a changed network is refused.
    with pytest.raises(BadValueError, match="channels"):
        run_train(ws_a, dataclasses.replace(TINY, channels=8, steps=6), resume=True, progress=False)


def test_training_rows_are_a_seeded_class_stratified_draw_beyond_train_max_n():
    from galearn.gan.data import training_rows

    labels = np.array(["disk"] * 900 + ["spheroid"] * 95 + ["merger"] * 5)
    train = np.arange(1000)[::-1]  # order does not matter
    assert training_rows(labels, train, None, 0) is train
    assert training_rows(labels, train, 1000, 0) is train  # at or under the cap: every row
    rows = training_rows(labels, train, 100, 0)
    counts = {c: int((labels[rows] == c).sum()) for c in ("disk", "spheroid", "merger")}
    assert counts == {"disk": 90, "spheroid": 9, "merger": 1}  # each class its share, at least one
    assert np.all(np.diff(rows) > 0) and set(rows) <= set(train)
    np.testing.assert_array_equal(rows, training_rows(labels, train, 100, 0))  # seeded
    assert not np.array_equal(rows, training_rows(labels, train, 100, 1))


def test_gan_trains_on_train_max_n_stamps_and_refuses_a_resume_that_changes_them(tmp_path):
    """gan.train_max_n: the networks see only the capped draw (the evaluation keeps the whole split); gan/config.json
    records both counts, and resuming with a cap that gives another number of stamps is refused."""
    from galearn.gan import run_train

    ws = make_workspace(tmp_path, n=60)
    cfg = dataclasses.replace(TINY, steps=2, train_max_n=20)
    run_train(ws, cfg, progress=False)
    info = json.loads((ws.gan / "config.json").read_text())
    split = json.loads((ws.gan / "split.json").read_text())
    assert 18 <= info["n_train"] <= 20  # per-class shares, rounded down
    assert info["n_train_split"] == len(split["train"]) > info["n_train"]
    assert sum(info["class_counts_train"].values()) == info["n_train"]
    run_train(ws, dataclasses.replace(cfg, steps=4), resume=True, progress=False)  # same cap: resumes
    with pytest.raises(BadValueError, match="gan.train_max_n now gives"):
        run_train(ws, dataclasses.replace(cfg, steps=6, train_max_n=None), resume=True, progress=False)


def test_condition_errors_name_the_column(tmp_path):
    from galearn.gan import run_train

    ws = make_workspace(tmp_path, n=20)
    with pytest.raises(BadValueError, match="'nope'"):
        run_train(ws, dataclasses.replace(TINY, condition="nope"), progress=False)
    with pytest.raises(BadValueError, match="uvj_class"):
        run_train(ws, dataclasses.replace(TINY, condition="uvj_class"), progress=False)


def test_library_is_reproducible_balanced_and_in_sample_layout(tmp_path):
    from galearn.gan import run_sample, run_train

    ws = make_workspace(tmp_path, n=60)
    run_train(ws, TINY, progress=False)
    real = open_sample(ws.sample)
    counts = {c: int((np.asarray(real.catalog["truth_class"]) == c).sum()) for c in ("disk", "spheroid")}

    run_sample(ws, dataclasses.replace(TINY, balance=True), progress=False)
    lib = open_sample(ws.library)
    first = lib.read("stretched")
    assert lib.kind == "library" and lib.bands == BANDS and lib.stamp_size == 32
    got = {c: int((np.asarray(lib.catalog["truth_class"]) == c).sum()) for c in ("disk", "spheroid")}
    assert got["disk"] == got["spheroid"] == max(counts.values())
    assert lib.catalog["synthetic"].all() and lib.catalog["id"][0] == "gan-000001"
    assert set(lib.catalog["checkpoint"]) == {"ckpt-000004.pt"} and set(lib.catalog["checkpoint_step"]) == {4}
    assert lib.columns == {"id": "id"} and lib.stretch == real.stretch
    above = first > 0  # clip-floor pixels get negative sky-noise draws (tests/test_gan_physical.py)
    np.testing.assert_allclose(lib.read("physical")[above], AsinhStretch.from_dict(real.stretch).inverse(first)[above], rtol=1e-6)
    assert 0 <= first.min() and first.max() <= 1

    run_sample(ws, dataclasses.replace(TINY, balance=True), progress=False)
    np.testing.assert_array_equal(open_sample(ws.library).read("stretched"), first)
    run_sample(ws, dataclasses.replace(TINY, random_state=4, n_per_class=3), progress=False)
    other = open_sample(ws.library)
    assert other.n == 6
    assert not np.array_equal(other.read("stretched")[:3], first[:3])


def test_generator_noise_is_seeded_and_output_is_clipped_like_the_data():
    from galearn.gan.networks import Generator

    G = Generator(2, 3, 32, z_dim=8, channels=4).eval()
    z, y = torch.randn(4, 8), torch.tensor([0, 1, 0, 1])
    with torch.no_grad():
        a = G(z, y, torch.Generator().manual_seed(1))
        b = G(z, y, torch.Generator().manual_seed(1))
        c = G(z, y, torch.Generator().manual_seed(2))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a, c)  # per-pixel noise reaches the output
    assert a.min() >= -1 and a.max() <= 1
    # The output is clipped, not squashed: a strongly negative bias gives exactly -1 (clipped sky).
    with torch.no_grad():
        G.to_img.bias.fill_(-50.0)
        assert torch.all(G(z, y, torch.Generator().manual_seed(1)) == -1)


def test_standing_stats_are_deterministic_and_independent_of_G_buffers(tmp_path):
    from galearn.gan.loop import standing_stats
    from galearn.gan.networks import Generator

    G1 = Generator(2, 3, 32, z_dim=8, channels=4)
    G2 = Generator(2, 3, 32, z_dim=8, channels=4)
    G2.load_state_dict(G1.state_dict())
    with torch.no_grad():  # G2's running statistics are garbage before standing_stats
        for m in G2.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.fill_(5.0)
    standing_stats(G1, 3, torch.device("cpu"), n_batches=2, batch=8)
    standing_stats(G2, 3, torch.device("cpu"), n_batches=2, batch=8)
    _states_equal(G1.state_dict(), G2.state_dict())
    assert not G1.training
    means = [m.running_mean for m in G1.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert means and all(torch.isfinite(m).all() and m.abs().max() < 5 for m in means)


def test_parallel_morphology_equals_serial():
    from galearn.morphology import measure_morphology
    from galearn.gan.evaluate import measure_morphology_parallel

    physical, _ = synthetic_galaxies(8, 5, 32)
    noise = np.full(3, 0.02)
    serial = measure_morphology(physical, BANDS, noise_sigma=noise, progress=False)
    par = measure_morphology_parallel(physical, BANDS, noise_sigma=noise, n_jobs=2, min_chunk=2, progress=False)
    assert len(par) == 8 and par.colnames == serial.colnames
    assert int(np.sum(serial["ok"])) >= 4  # real measurements are compared, not NaN placeholders
    for name in serial.colnames:
        np.testing.assert_array_equal(np.asarray(par[name]), np.asarray(serial[name]))
    assert par.meta["noise_sigma"] == serial.meta["noise_sigma"]


def test_r1_penalty_is_the_squared_input_gradient_and_zero_for_a_flat_D():
    from galearn.gan.loss import r1_penalty

    x = torch.randn(5, 3, 8, 8, requires_grad=True)
    w = torch.randn(3, 8, 8)
    # D linear in x: grad = w for every stamp, penalty = ||w||^2 exactly.
    torch.testing.assert_close(r1_penalty((x * w).sum(dim=(1, 2, 3)), x), w.square().sum())
    # D flat around the reals (constant in x): zero penalty, zero gradient.
    flat = (x * 0).sum(dim=(1, 2, 3)) + 1.5
    assert float(r1_penalty(flat, x)) == 0.0
    # The penalty back-propagates into D's weights (create_graph).
    wp = w.clone().requires_grad_(True)
    r1_penalty((x * wp).sum(dim=(1, 2, 3)), x).backward()
    torch.testing.assert_close(wp.grad, 2 * w)


def test_dense_head_minibatch_stddev_and_position_awareness():
    from galearn.gan.networks import Discriminator, minibatch_stddev

    h = torch.randn(6, 5, 4, 4)
    out = minibatch_stddev(h)  # 6 is not divisible by 4: groups of 2
    assert out.shape == (6, 6, 4, 4)
    same = minibatch_stddev(torch.ones(8, 5, 4, 4))
    assert float(same[:, -1].abs().max()) < 1e-3  # identical members: (almost) zero std
    torch.manual_seed(0)
    x = torch.zeros(4, 3, 32, 32) - 1
    x[:, :, 14:18, 14:18] = 1  # a centred source ...
    shifted = torch.roll(x, shifts=(8, 8), dims=(2, 3))  # ... and the same source off-centre
    y = torch.zeros(4, dtype=torch.int64)
    D = Discriminator(2, 3, 32, channels=4, head="dense").eval()
    with torch.no_grad():
        # The flattened dense head sees where the source is (a sum-pooling head
        # only through the zero padding of its convolutions).
        assert (D(x, y) - D(shifted, y)).abs().max() > 1e-4
        assert D(x, y).shape == (4,)
    with pytest.raises(BadValueError, match="d_head"):
        Discriminator(2, 3, 32, channels=4, head="mean")


def test_resume_is_exact_with_lazy_r1_and_dense_head(tmp_path):
    from galearn.gan import run_train
    from galearn.gan.checkpoint import load_checkpoint

    cfg = dataclasses.replace(TINY, d_head="dense", r1_gamma=1.0, r1_every=3, diffaugment="flip,rot90,translation32")
    ws_a, a = assert_resume_exact(tmp_path, cfg)
    # R1 changes training (same seed, gamma 0 vs 1 give different D weights) ...
    ws_c = make_workspace(tmp_path / "c", n=40)
    run_train(ws_c, dataclasses.replace(cfg, r1_gamma=0.0), progress=False)
    c = load_checkpoint(ws_c.gan / "ckpt-000004.pt")
    assert any(not torch.equal(a["D"][k], c["D"][k]) for k in a["D"])
    # ... and resuming with another gamma is refused.
    with pytest.raises(BadValueError, match="r1_gamma"):
        run_train(ws_a, dataclasses.replace(cfg, r1_gamma=0.5, steps=6), resume=True, progress=False)


def test_realism_uses_the_cnn_feature_space_when_features_are_fused(tmp_path):
    from galearn import store
    from galearn.gan.evaluate import _backbone_feature_fn

    ws = store.Workspace(tmp_path / "ws")
    # what `galearn features --fuse morphology` records: the active (fused) file and its CNN
    store.update_manifest(ws, {"features": {"backbone": "random-resnet18+morphology",
                                            "cnn_backbone": "random-resnet18",
                                            "settings": {"tta": 1, "batch_size": 8, "random_state": 0}}})
    name, fn, settings = _backbone_feature_fn(ws, ["F435W", "F850LP", "F160W"])
    assert name == "random-resnet18" and settings["tta"] == 1
    x = np.random.default_rng(0).uniform(0, 1, (2, 3, 32, 32)).astype("f4")
    assert fn(x).shape[0] == 2  # loads the CNN through the registry, not "...+morphology"
