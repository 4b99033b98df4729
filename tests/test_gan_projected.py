"""Projected discriminator (frozen features), the faster step, and the independent realism space."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from galearn.config import GanConfig  # noqa: E402
from galearn.errors import BadValueError  # noqa: E402

from test_gan import BANDS, TINY, _states_equal, assert_resume_exact, make_workspace, synthetic_galaxies  # noqa: E402

PROJ = dataclasses.replace(TINY, discriminator="projected", d_steps=1)


def _networks(cfg, n_bands=3, size=32):
    from galearn.gan.augment import resolve_policy
    from galearn.gan.loop import autocast_dtype, build_networks
    from galearn.gan.loss import GanLoss

    torch.set_num_threads(1)  # as `gan train` (gan.threads = 1): more threads only contend on a shared machine
    torch.manual_seed(0)
    if cfg.sky_noise == "auto":  # run_train chooses it from real stamps; these networks see none
        cfg = dataclasses.replace(cfg, sky_noise="measured")
    cfg = dataclasses.replace(cfg, diffaugment=resolve_policy(cfg.diffaugment, cfg.discriminator))
    G, D, G_ema = build_networks(2, n_bands, size, cfg)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.adam_beta1, cfg.adam_beta2))
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.adam_beta1, cfg.adam_beta2))
    loss = GanLoss(G, D, cfg.diffaugment, autocast_dtype=autocast_dtype(cfg.precision, torch.device("cpu")))
    return dict(G=G, D=D, G_ema=G_ema, opt_G=opt_G, opt_D=opt_D, loss=loss)


def _stamps(n=24, size=32, seed=0):
    from galearn.imaging import AsinhStretch

    phys, labels = synthetic_galaxies(n, seed, size)
    stretched = AsinhStretch.fit(phys).forward(phys).astype("f4")
    return stretched, (labels == "spheroid").astype(np.int64)


def test_projected_feature_network_stays_frozen_and_outside_the_optimiser():
    from galearn.gan.loop import train_step
    from galearn.gan.projected import ProjectedDiscriminator

    nets = _networks(PROJ)
    D = nets["D"]
    assert isinstance(D, ProjectedDiscriminator) and D.backbone == "efficientnet-lite0"
    frozen = {k: v.clone() for k, v in D.feature_stages.state_dict().items()}
    frozen_ids = {id(p) for p in D.feature_stages.parameters()}
    assert frozen_ids and all(not p.requires_grad for p in D.feature_stages.parameters())
    in_opt = {id(p) for g in nets["opt_D"].param_groups for p in g["params"]}
    assert not frozen_ids & in_opt and not frozen_ids & {id(p) for p in D.parameters()}
    assert not any(k.startswith("_stages") for k in D.state_dict())  # not checkpointed: rebuilt from the registry
    heads_before = {k: v.clone() for k, v in D.heads.state_dict().items()}
    D.train()
    assert D.training and not D.feature_stages.training  # BatchNorm statistics stay the pre-trained ones
    stamps, y = _stamps()
    for step in range(3):
        out = train_step(step, stamps=stamps, y_all=y, cfg=PROJ, device=torch.device("cpu"), **nets)
        assert np.isfinite(out["loss_D"]) and np.isfinite(out["loss_G"])
    _states_equal(frozen, D.feature_stages.state_dict())
    assert any(not torch.equal(heads_before[k], v) for k, v in D.heads.state_dict().items())
    # Gradients reach G through the frozen network, never the network itself.
    assert all(p.grad is None for p in D.feature_stages.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in nets["G"].parameters())
    # Multi-scale logits: one per projected scale; CCM / CSM are fixed buffers.
    logits = D(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))
    assert logits.shape == (2, 4)
    assert {"ccm0", "ccm3", "csm0", "csm2"} <= set(dict(D.named_buffers()))


def test_projected_any_band_count_and_band_order_kept():
    from galearn.gan.projected import ProjectedDiscriminator

    D3 = ProjectedDiscriminator(2, 3, 32, channels=4)
    torch.testing.assert_close(D3.in_weight[:, :, 0, 0], torch.diag(torch.diag(D3.in_weight[:, :, 0, 0])))
    D5 = ProjectedDiscriminator(2, 5, 32, channels=4, stages=D3.feature_stages)
    assert D5(torch.zeros(3, 5, 32, 32), torch.tensor([0, 1, 0])).shape == (3, 4)


def test_resume_is_exact_with_the_projected_discriminator(tmp_path):
    from galearn.gan import run_train

    cfg = dataclasses.replace(PROJ, steps=4, checkpoint_every=2)
    ws_a, a = assert_resume_exact(tmp_path, cfg)
    assert a["discriminator"] == "projected" and "efficientnet-lite0" in a["d_feature_network"]
    info = json.loads((ws_a.gan / "config.json").read_text())
    assert info["discriminator"] == "projected"
    # The discriminator cannot change on resume.
    with pytest.raises(BadValueError, match="discriminator"):
        run_train(ws_a, dataclasses.replace(cfg, discriminator="sngan", steps=6), resume=True, progress=False)


def test_minibatch_std_lets_the_projected_heads_see_batch_variety(tmp_path):
    from galearn.gan import run_train
    from galearn.gan.loop import _validate

    stamps, y = _stamps(n=8)
    x = torch.from_numpy(stamps) * 2 - 1
    y = torch.from_numpy(y)
    for group in (0, 4):
        D = _networks(dataclasses.replace(PROJ, d_minibatch_std=group), size=32)["D"].eval()
        with torch.no_grad():
            varied = D(x, y)[0]
            copies = D(x[:1].expand(8, -1, -1, -1), y[:1].expand(8))[0]  # the same stamp among copies of itself
        # Without it a stamp's logits do not depend on the rest of the batch; with it they do.
        assert torch.allclose(varied, copies, atol=1e-6) == (group == 0)
    for bad in (-1, 1.5, True):
        with pytest.raises(BadValueError, match="d_minibatch_std"):
            _validate(dataclasses.replace(PROJ, d_minibatch_std=bad))
    _validate(dataclasses.replace(PROJ, batch_size=2))  # groups of at most the batch (minibatch_stddev)
    cfg = dataclasses.replace(PROJ, steps=4, checkpoint_every=2, d_minibatch_std=4)
    ws_a, _ = assert_resume_exact(tmp_path, cfg)
    with pytest.raises(BadValueError, match="d_minibatch_std"):  # frozen on resume
        run_train(ws_a, dataclasses.replace(cfg, d_minibatch_std=0, steps=6), resume=True, progress=False)


def test_pixel_head_scores_the_stamps_own_pixels_beside_the_projected_scales(tmp_path):
    from galearn.gan import run_train
    from galearn.gan.loop import _validate

    stamps, y = _stamps(n=8)
    x = torch.from_numpy(stamps) * 2 - 1
    y = torch.from_numpy(y)
    plain = _networks(PROJ)["D"].eval()
    nets = _networks(dataclasses.replace(PROJ, d_pixel_head=True))
    D = nets["D"].eval()
    with torch.no_grad():
        feats = D.project(x)
        logits = D(x, y)
    assert logits.shape == (8, plain(x, y).shape[1] + 1)
    assert feats[-1] is x  # the last "scale" is the stamps themselves, no feature network between
    # The pixel head trains with the other heads and passes its gradient to the stamps.
    in_opt = {id(p) for g in nets["opt_D"].param_groups for p in g["params"]}
    assert {id(p) for p in D.heads[-1].parameters()} <= in_opt
    x_grad = x.clone().requires_grad_(True)
    D.score(D.project(x_grad), y)[:, -1].sum().backward()
    assert x_grad.grad.abs().sum() > 0
    for bad in (1, "yes"):
        with pytest.raises(BadValueError, match="d_pixel_head"):
            _validate(dataclasses.replace(PROJ, d_pixel_head=bad))
    with pytest.raises(BadValueError, match="d_pixel_head.*projected"):
        _validate(dataclasses.replace(TINY, d_pixel_head=True))
    cfg = dataclasses.replace(PROJ, steps=4, checkpoint_every=2, d_pixel_head=True)
    ws_a, _ = assert_resume_exact(tmp_path, cfg)
    with pytest.raises(BadValueError, match="d_pixel_head"):  # frozen on resume
        run_train(ws_a, dataclasses.replace(cfg, d_pixel_head=False, steps=6), resume=True, progress=False)


def test_realism_space_refused_when_it_is_the_discriminators_network(tmp_path, capsys):
    from galearn.cli import main
    from galearn.gan import run_train
    from galearn.gan.evaluate import check_realism_space

    trained = {"discriminator": "projected", "d_backbone": "efficientnet-lite0"}
    with pytest.raises(BadValueError, match="trained through"):
        check_realism_space("efficientnet-lite0", trained)
    with pytest.raises(BadValueError, match="trained through"):
        check_realism_space("backbone", trained, backbone="efficientnet-lite0")
    assert check_realism_space("morphometry", trained) == "morphometry"
    assert check_realism_space("self-supervised", trained) == "self-supervised"  # learnt from the real stamps alone
    assert check_realism_space("efficientnet-lite0", {"discriminator": "sngan"}) == "efficientnet-lite0"
    with pytest.raises(BadValueError, match="not known"):
        check_realism_space("inception", trained)
    ws = make_workspace(tmp_path, n=30)
    with pytest.raises(BadValueError, match="trained through"):
        run_train(ws, dataclasses.replace(PROJ, realism_space="efficientnet-lite0"), progress=False)
    code = main(["gan", "train", "-w", str(ws.root), "gan.discriminator=projected", "gan.realism_space=efficientnet-lite0"])
    err = capsys.readouterr().err
    assert code == 2 and "realism_space" in err and "Traceback" not in err


def test_bf16_step_follows_the_fp32_loss_trend():
    from galearn.gan.loop import train_step

    stamps, y = _stamps(n=32)
    # lr 5e-4: a clear trend in 12 steps (D loss -0.8). At 1e-3 this tiny GAN is chaotic: fp32 and bf16
    # rounding part after ~10 steps at some seeds (loss differences > 1), with or without gan.g_asymmetry.
    for seed in (3, 4):
        traces = {}
        for precision in ("fp32", "bf16"):
            cfg = dataclasses.replace(TINY, d_steps=1, precision=precision, lr_d=5e-4, lr_g=5e-4, random_state=seed)
            nets = _networks(cfg)
            rows = [train_step(s, stamps=stamps, y_all=y, cfg=cfg, device=torch.device("cpu"), **nets) for s in range(12)]
            traces[precision] = np.array([[r["loss_D"], r["loss_G"]] for r in rows])
        a, b = traces["fp32"], traces["bf16"]
        assert np.all(np.isfinite(b))
        # Same start (same weights and data) and the same direction over the run.
        np.testing.assert_allclose(a[0], b[0], atol=0.05)
        assert np.abs(a - b).max() < 0.3
        trend_a, trend_b = a[-4:, 0].mean() - a[:4, 0].mean(), b[-4:, 0].mean() - b[:4, 0].mean()
        assert trend_a < -0.3 and abs(trend_a - trend_b) < 0.1


def test_fast_step_changes_cost_not_the_game():
    from galearn.gan.loop import train_step

    stamps, y = _stamps(n=32)
    out = {}
    for fast in (False, True):
        cfg = dataclasses.replace(TINY, d_steps=1, fast_step=fast)
        nets = _networks(cfg)
        out[fast] = train_step(0, stamps=stamps, y_all=y, cfg=cfg, device=torch.device("cpu"), **nets)
    # Step 0 of both paths: same initial networks and real batch; D loss within the spread of fresh latents.
    assert abs(out[True]["loss_D"] - out[False]["loss_D"]) < 0.2


def test_fast_step_sends_the_generated_batch_through_the_frozen_network_once():
    from galearn.gan.loop import train_step

    stamps, y = _stamps(n=32)
    passes = {}
    for fast in (False, True):
        cfg = dataclasses.replace(PROJ, fast_step=fast)
        nets = _networks(cfg)
        D, loss = nets["D"], nets["loss"]
        first = next(iter(D.feature_stages.values()))
        calls = []
        first.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
        train_step(0, stamps=stamps, y_all=y, cfg=cfg, device=torch.device("cpu"), **nets)
        passes[fast] = len(calls)
        if fast:  # the shared pass scores as a fresh augmented pass of the same stamps would
            D.eval()  # spectral norm: no power iteration between the two scorings
            fake = torch.rand(4, 3, 32, 32) * 2 - 1
            labels = torch.tensor([0, 1, 0, 1])
            shared = loss.project(fake, torch.Generator().manual_seed(5))
            direct = loss.run_D(fake, labels, torch.Generator().manual_seed(5))
            torch.testing.assert_close(loss.score(shared, labels), direct)
    assert passes == {False: 3, True: 2}  # real + fake (D step) + fake (G step)  ->  real + shared fake


def test_morphometry_space_and_photometry_statistics():
    from galearn.morphometry import morphometry_features, morphometry_names, photometry_statistics, power_spectrum
    from galearn.imaging import AsinhStretch

    phys, labels = synthetic_galaxies(60, 1, 32)
    stretched = AsinhStretch.fit(phys).forward(phys)
    f = morphometry_features(stretched, BANDS)
    assert f.shape == (60, len(morphometry_names(3, BANDS))) and np.all(np.isfinite(f))
    names = morphometry_names(3, BANDS)
    off = morphometry_features(np.roll(stretched, 8, axis=3), BANDS)
    k = names.index("offset")
    assert np.median(off[:, k]) > np.median(f[:, k]) + 4  # an off-centre source is seen
    noise = np.random.default_rng(0).normal(size=(4, 1, 64, 64))
    p = power_spectrum(noise)[..., :]
    assert np.ptp(p.mean(0)) < 0.3  # white noise: flat spectrum
    t = photometry_statistics(phys, BANDS)
    assert "flux_F160W" in t.colnames and "colour_F435W-F850LP" in t.colnames and "power_F435W_7" in t.colnames
    red = np.asarray(t["colour_F850LP-F160W"])[labels == "spheroid"]
    blue = np.asarray(t["colour_F850LP-F160W"])[labels == "disk"]
    assert np.nanmedian(red) > np.nanmedian(blue)  # spheroids are redder


def test_realism_diagnosis_names_the_group_that_holds_recall_down():
    from galearn.gan.evaluate import realism_diagnosis
    from galearn.morphometry import morphometry_names
    from galearn.report.html import gan_realism_caption

    names = morphometry_names(3, BANDS)
    rng = np.random.default_rng(3)
    held, base, gen, like_real = (rng.normal(size=(150, len(names))) for _ in range(4))
    power = np.array([n.startswith("power_") for n in names])
    gen[:, power] = 0.3 * gen[:, power] + 1.5  # shifted and too narrow in every power bin, as a grainy generator
    diag = realism_diagnosis(gen, held, base, names)
    assert diag["limiting_group"] == "power spectrum" and diag["recall_gain"] > 0.3
    assert all(f["name"].startswith("power_") and f["shift"] > 1.2 and f["spread"] < 0.4 for f in diag["features"])
    assert abs(diag["features"][0]["shift_real_baseline"]) < 0.5
    entry = diag["without_group"]["power spectrum"]
    assert entry["n_features"] == int(power.sum()) and entry["recall"] > 0.5 and entry["recall_real_baseline"] > 0.5
    assert "Recall is held down most by the power spectrum statistics" in gan_realism_caption(
        {"recall": 0.1, "realism_diagnosis": diag})
    # a library drawn like the real stamps has no limiting group, and the caption says nothing about it
    calm = realism_diagnosis(like_real, held, base, names)
    assert calm["limiting_group"] is None
    assert "held down" not in gan_realism_caption({"recall": 0.8, "realism_diagnosis": calm})


def test_realism_verdict_says_under_trained():
    from galearn.gan.evaluate import realism_verdict

    far, text = realism_verdict({"steps": 100, "morphology_wasserstein": 1.35, "morphology_wasserstein_real_baseline": 0.24,
                                 "precision": 0.17, "recall": 0.02, "precision_real_baseline": 0.86,
                                 "recall_real_baseline": 0.85, "realism_space": "morphometry", "memorised_fraction": 0.0})
    assert far and text.startswith("under-trained: 100 steps; morphology 5.6x the real baseline")
    far, text = realism_verdict({"steps": 4000, "morphology_wasserstein": 0.3, "morphology_wasserstein_real_baseline": 0.24,
                                 "precision": 0.7, "recall": 0.6, "realism_space": "morphometry", "memorised_fraction": 0.0,
                                 "fid": 14.0, "fid_real_baseline": 10.0})
    assert not far and text.startswith("close to real at 4000 steps")
    # the quick-run aims met but not the full-quality ones (the default run's 100 steps): "rough", never "close"
    far, text = realism_verdict({"steps": 100, "morphology_wasserstein": 0.55, "morphology_wasserstein_real_baseline": 0.29,
                                 "precision": 0.74, "recall": 0.30, "realism_space": "morphometry", "memorised_fraction": 0.0,
                                 "fid": 44.6, "fid_real_baseline": 10.2})
    assert not far and text.startswith("rough at 100 steps") and "close to real" not in text
    # statmorph measured 3 of 40 held-out real stamps (a JPEG sky pedestal, round 11): never "close", and said
    good = {"steps": 4000, "morphology_wasserstein": 0.3, "morphology_wasserstein_real_baseline": 0.24,
            "precision": 0.7, "recall": 0.6, "realism_space": "morphometry", "memorised_fraction": 0.0,
            "fid": 14.0, "fid_real_baseline": 10.0, "morphology_n": {"real_heldout": 40, "generated": 40}}
    far, text = realism_verdict({**good, "morphology_failed_fraction": {"real_heldout": 0.925, "generated": 0.05}})
    assert not far and text.startswith("rough at 4000 steps")
    assert "statmorph measured only 3 of 40 held-out real stamps: the morphology figure is unreliable" in text
    far, text = realism_verdict({**good, "morphology_failed_fraction": {"real_heldout": 0.1, "generated": 0.2}})
    assert text.startswith("close to real") and "unreliable" not in text
    # more generated stamps nearer a training stamp than real galaxies are: far from real, but not under-trained
    far, text = realism_verdict({**good, "memorised_fraction": 0.021})
    assert far and text.startswith("memorising at 4000 steps;") and "memorised 2.1 %" in text
    far, text = realism_verdict({**good, "recall": 0.2, "memorised_fraction": 0.021})
    assert far and text.startswith("under-trained: 4000 steps and memorising;")
    # the pixel-space test is shown beside the realism-space one, not graded (a quieter sky alone brings stamps nearer)
    far, text = realism_verdict({**good, "memorised_fraction_pixels": 0.05})
    assert not far and text.startswith("close to real") and "memorised 0.0 % (5.0 % nearer in pixels)" in text
    # the data-copying test is shown beside them, not graded: the memorised flag stays the 1 %
    far, text = realism_verdict({**good, "memorised_fraction": 0.021, "data_copying": {"ct": 0.7}})
    assert far and text.startswith("memorising") and "memorised 2.1 %, data-copying test C_T +0.7 (no copies" in text
    far, text = realism_verdict({**good, "data_copying": {"ct": -4.2}})
    assert "C_T -4.2 (copies" in text
    far, text = realism_verdict({**good, "data_copying": {"ct": 7.2}})  # an under-trained G: its stamps lie farther off
    assert "C_T +7.2 (no copies; farther from the training stamps" in text
    # a generated sky noisier than the real one (G paints under the measured noise, round 25): never "close", and said
    real_sky = {"sigma": [[0.007, 0.013, 0.03]] * 3, "clipped_fraction": [0.04, 0.03, 0.12]}
    painted = {"sigma": [[0.018, 0.025, 0.04], [0.017, 0.023, 0.037], [0.017, 0.022, 0.034]],
               "clipped_fraction": [0.21, 0.25, 0.30]}
    far, text = realism_verdict({**good, "sky": {"real_heldout": real_sky, "generated": painted}})
    assert not far and text.startswith("rough at 4000 steps")
    assert "its sky is unlike the real one: per-stamp sky sigma up to 1.9x the real, 25 % of pixels black (real 6 %)" in text
    far, text = realism_verdict({**good, "sky": {"real_heldout": real_sky, "generated": real_sky}})
    assert text.startswith("close to real") and "sky" not in text
    # pixel noise coloured where the real one is grey (a colour JPEG's sky, round 27): said, never "close"
    grey = {**real_sky, "band_correlation": {"R-G": 0.99, "R-B": 0.98, "G-B": 0.99}}
    coloured = {**real_sky, "band_correlation": {"R-G": 0.58, "R-B": 0.54, "G-B": 0.56}}
    far, text = realism_verdict({**good, "sky": {"real_heldout": grey, "generated": coloured}})
    assert text.startswith("rough at 4000 steps") and "its pixel noise correlated 0.56 between bands (real 0.99)" in text
    far, text = realism_verdict({**good, "sky": {"real_heldout": grey, "generated": {**grey, "band_correlation": {
        "R-G": 0.9, "R-B": 0.85, "G-B": 0.9}}}})
    assert text.startswith("close to real")
    # faint sources correlate an HST-like ring's bands by 0.15-0.2: light, not a grey noise, so not said
    faint = {**real_sky, "band_correlation": {"R-G": 0.18, "R-B": 0.15, "G-B": 0.21}}
    far, text = realism_verdict({**good, "sky": {"real_heldout": faint, "generated": {**real_sky, "band_correlation": {
        "R-G": -0.02, "R-B": 0.0, "G-B": -0.03}}}})
    assert text.startswith("close to real")


def _elongated(angles_deg: np.ndarray, size: int = 48, axis_ratio: float = 0.4) -> np.ndarray:
    """Gaussian discs (3 bands) with their major axes at ``angles_deg`` from the +x (column) axis."""
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2.0
    t = np.radians(np.asarray(angles_deg, dtype="f8"))[:, None, None]
    u, v = xx * np.cos(t) + yy * np.sin(t), -xx * np.sin(t) + yy * np.cos(t)
    img = np.exp(-0.5 * ((u / 6.0) ** 2 + (v / (6.0 * axis_ratio)) ** 2))
    return np.repeat(img[:, None], 3, axis=1).astype("f4")


def test_shape_moments_and_orientation_isotropy():
    from galearn.morphometry import orientation_isotropy, shape_moments

    ell, angle = shape_moments(_elongated(np.array([0.0, 30.0, 95.0, 170.0])))
    off = (angle - [0.0, 30.0, 95.0, 170.0] + 90.0) % 180.0 - 90.0  # axial difference, degrees
    assert np.all((angle >= 0) & (angle < 180)) and np.all(np.abs(off) < 0.5)
    assert np.all(ell > 0.5)
    round_ell, _ = shape_moments(_elongated(np.array([40.0]), axis_ratio=1.0))
    assert round_ell[0] < 0.02
    rng = np.random.default_rng(0)
    spread = orientation_isotropy(rng.uniform(0, 180, 400), np.ones(400))
    assert spread["n"] == 400 and spread["resultant"] < 0.15 and spread["rayleigh_p"] > 1e-3
    # nearly parallel -- and 179 degrees is next to 1 degree (axial data)
    parallel = orientation_isotropy(rng.normal(0, 10, 400) % 180, np.ones(400))
    assert parallel["resultant"] > 0.8 and parallel["rayleigh_p"] < 1e-10
    # round stamps are not counted
    assert orientation_isotropy(np.zeros(50), np.zeros(50))["n"] == 0


def test_orientation_metrics_and_the_verdict_say_when_generated_galaxies_lean_one_way():
    from galearn.gan.evaluate import orientation_metrics, realism_verdict
    from galearn.morphometry import photometry_statistics
    from galearn.report.figures import morphology_histograms

    rng = np.random.default_rng(1)
    classes = ["a", "b"]
    real = photometry_statistics(_elongated(rng.uniform(0, 180, 120)), BANDS)
    leaning = photometry_statistics(_elongated(rng.normal(45, 8, 120)), BANDS)
    # class a leans at 45 degrees and class b at 135: pooled they would look isotropic, per class they do not
    opposed = photometry_statistics(_elongated(np.r_[rng.normal(45, 8, 60), rng.normal(135, 8, 60)]), BANDS)
    cls = np.repeat(classes, 60)
    for gen, should_lean in ((real, False), (leaning, True), (opposed, True)):
        o = orientation_metrics({"real_heldout": real, "generated": gen}, {"real_heldout": cls, "generated": cls}, classes)
        g = o["sets"]["generated"]
        assert g["n"] == 120 and set(g["per_class"]) == set(classes)
        (hist,) = morphology_histograms({"orientation": o}).values()  # the report's morphology figure finds it
        assert len(hist["edges"]) == 13 and sum(hist["generated"]["counts"]) == hist["generated"]["n"] == 120
        assert (g["rayleigh_p"] < 1e-3) == should_lean and (g["resultant"] > 0.5) == should_lean
        good = {"steps": 4000, "morphology_wasserstein": 0.3, "morphology_wasserstein_real_baseline": 0.24,
                "precision": 0.7, "recall": 0.6, "realism_space": "morphometry", "memorised_fraction": 0.0,
                "fid": 14.0, "fid_real_baseline": 10.0, "orientation": o}
        _, text = realism_verdict(good)
        assert text.startswith("rough") == should_lean and ("lean one way" in text) == should_lean


def test_report_caption_names_the_baselines_and_what_the_run_trained_with():
    from galearn.report.html import gan_realism_caption

    text = gan_realism_caption({"verdict": "rough at 190 steps", "fid": 30.0, "fid_real_baseline": 10.0,
                                "realism_space": "morphometry", "discriminator": "sngan",
                                "sky_noise": "measured-correlated", "diffaugment": "flip,rot90,translation"})
    assert text == ("rough at 190 steps. Realism in the morphometry space (not a network the discriminator looked "
                    "through): FID 30 (real baseline 10). Trained with the sngan discriminator (DiffAugment: flip, "
                    "rot90, translation) and measured correlated sky noise.")
    assert "projected discriminator (DiffAugment: none)." in gan_realism_caption(
        {"discriminator": "projected", "diffaugment": ""})
    assert gan_realism_caption({"fid": 30.0}) == "Realism: FID 30."


def test_morphology_ratio_interval_brackets_the_sampling_noise():
    from astropy.table import Table

    from galearn.gan.evaluate import morphology_ratio_interval, realism_verdict

    rng = np.random.default_rng(0)

    def table(n, shift=0.0):
        return Table({"gini": rng.normal(0.5 + shift, 0.05, n), "asymmetry": rng.normal(0.0 + 4 * shift, 0.1, n),
                      "ok": np.ones(n, bool)})

    heldout, generated, train, shifted = table(40), table(40), table(40), table(40, shift=0.1)
    same = morphology_ratio_interval(heldout, generated, train, random_state=1)
    far = morphology_ratio_interval(heldout, shifted, train, random_state=1)
    assert same[0] < 1.0 < same[1] < far[0]  # a real-like set straddles 1; a shifted one lies well above
    assert morphology_ratio_interval(heldout, generated, train, random_state=1) == same  # seeded
    from galearn.morphology import morphology_wasserstein

    ratio = morphology_wasserstein(heldout, shifted)[0] / morphology_wasserstein(heldout, train)[0]
    assert np.mean(far) == pytest.approx(ratio)  # centred on the ratio itself (+- the bootstrap sd)
    _, text = realism_verdict({"steps": 190, "morphology_wasserstein": 0.5, "morphology_wasserstein_real_baseline": 0.25,
                               "morphology_wasserstein_ratio_interval": [1.6, 2.7], "morphology_n": {"generated": 40}})
    assert "morphology 2.0x the real baseline (68 % 1.6-2.7x, statmorph on 40 stamps per set)" in text


def test_realism_without_the_statistics_gs_loss_matched_is_graded_too():
    from galearn.gan.evaluate import realism_verdict, untargeted_realism
    from galearn.gan.spaces import targeted_morphometry_groups
    from galearn.morphometry import morphometry_names

    assert targeted_morphometry_groups({}) == [] and targeted_morphometry_groups({"g_power_match": 0.0, "g_pixel_match": None}) == []
    assert targeted_morphometry_groups({"g_pixel_match": 10, "g_stamp_power_match": 5, "g_power_match": 50}) == [
        "power spectrum", "pixel percentiles"]
    assert targeted_morphometry_groups({"g_colour_power_match": 5, "g_pixel_match": 10}) == [
        "power spectrum", "colour", "pixel percentiles"]  # the colour maps' spectra: both spectra and colours
    assert targeted_morphometry_groups({"g_profile_match": 5, "g_stamp_power_match": 5}) == ["power spectrum", "profile"]
    assert targeted_morphometry_groups({"g_joint_match": 5}) == ["power spectrum", "profile"]  # both, jointly
    names = morphometry_names(3, BANDS)
    rng = np.random.default_rng(4)
    held, base, gen = (rng.normal(size=(150, len(names))) for _ in range(3))
    matched = np.array([n.startswith(("power_", "p50_", "p90_", "p99_")) for n in names])
    gen[:, ~matched] = 0.7 * gen[:, ~matched] + 0.3  # real-like only in what G's loss matched
    u = untargeted_realism(gen, held, base, names, ["power spectrum", "pixel percentiles"])
    assert u["dim"] == int((~matched).sum()) and u["groups_left_out"] == ["power spectrum", "pixel percentiles"]
    from galearn.gan.evaluate import realism_metrics
    full = realism_metrics(gen, held, base)
    # the headline passes the FID aim (<= 1.5x) on the matched columns' strength; without them it does not
    assert full["fid"] / full["fid_real_baseline"] < 1.5 < u["fid"] / u["fid_real_baseline"] and u["recall"] < full["recall"]
    with pytest.raises(ValueError, match="no morphometry group"):
        untargeted_realism(gen, held, base, names, ["texture"])
    good = {"steps": 4000, "morphology_wasserstein": 0.3, "morphology_wasserstein_real_baseline": 0.24,
            "precision": 0.75, "recall": 0.65, "realism_space": "morphometry", "memorised_fraction": 0.0,
            "fid": 14.0, "fid_real_baseline": 10.0}
    assert realism_verdict(good)[1].startswith("close to real")
    short = {"precision": 0.66, "recall": 0.59, "fid": 30.0, "fid_real_baseline": 10.0, "groups_left_out": ["power spectrum"]}
    far, text = realism_verdict({**good, "realism_untargeted": short})
    assert not far and text.startswith("rough at 4000 steps")
    assert "without the statistics G's loss matched (power spectrum): FID 3.0x, precision 0.66, recall 0.59" in text
    far, text = realism_verdict({**good, "realism_untargeted": {**short, "recall": 0.2}})
    assert far and text.startswith("under-trained")
    assert realism_verdict({**good, "realism_untargeted": {**short, "precision": 0.8, "recall": 0.7, "fid": 12.0}})[1].startswith(
        "close to real")
