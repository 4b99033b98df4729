"""`galearn run`: stage order, skipping of up-to-date stages, propagation of changes, resume.

The stage functions are replaced by small fakes that write real workspace files
through the store API (so fingerprints see real content changes), and count calls.
"""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from astropy.table import Table

import galearn.evaluate
import galearn.features
import galearn.gan
import galearn.maps
import galearn.mock
import galearn.report
import galearn.survey
from galearn import store
from galearn.config import (FeatureConfig, GanEvaluateConfig, GanSampleConfig, GanTrainConfig, load_config,
                            parse_overrides)
from galearn.errors import BadValueError
from galearn.pipeline import resolve, run_all, stage_names
from galearn.store import Workspace

N = 40


class LinearMap:
    """A picklable stand-in for a fitted map model: ``transform`` projects onto 2 axes."""

    def __init__(self, scale):
        self.scale = scale

    def transform(self, x):
        return np.asarray(x)[:, :2] * self.scale


def _digest(path) -> int:
    return int(store.file_sha256(path)[:8], 16)


@pytest.fixture
def fakes(monkeypatch, tmp_path):
    # no pre-trained weights at hand: backbone "auto" resolves to efficientnet-lite0
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    calls: Counter = Counter()
    fail: dict = {}

    def hit(name, **kw):
        calls[name] += 1
        if fail.get(name):
            fail[name] -= 1
            raise KeyboardInterrupt(f"interrupted {name}")

    def simulate_field(out_dir, cfg):
        hit("simulate")
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for band in ("F435W", "F850LP", "F160W"):
            paths[band] = out_dir / f"{band}.fits"
            paths[band].write_text(f"{band} {cfg.n_galaxies} {cfg.random_state}")
        rng = np.random.default_rng(cfg.random_state)
        cat = Table({"ID": np.arange(N), "CLASS_STAR": rng.uniform(0, 1, N),
                     "truth_class": np.where(np.arange(N) % 2, "spiral", "elliptical")})
        paths["catalog"] = out_dir / "catalog.ecsv"
        store.write_table(paths["catalog"], cat)
        return paths

    def make_sample_from_mosaics(catalog, images, workspace, cfg):
        hit("cutouts")
        assert cfg.select == galearn.pipeline.DEFAULT_MOCK_SELECT  # the pipeline's default for the mock field
        cat = store.read_table(catalog)
        seed = sum(_digest(p) for p in images.values()) % 2**32
        rng = np.random.default_rng(seed)
        stamps = rng.uniform(0, 1, (len(cat), 3, cfg.stamp_size // 8, cfg.stamp_size // 8)).astype("f4")
        store.write_sample(workspace.sample, stamps, cat, physical=stamps, bands=["F435W", "F850LP", "F160W"],
                           kind="mock", columns={"id": "ID"})
        return store.open_sample(workspace.sample)

    def run_features(ws, cfg, *, library=False, baseline=False):
        assert isinstance(cfg, FeatureConfig)
        name = "efficientnet-lite0" if cfg.backbone == "auto" else cfg.backbone
        hit(f"features:{name}{':library' if library else ''}")
        sample = store.open_sample(ws.library if library else ws.sample)
        x = sample.read().reshape(sample.n, -1)[:, :6] * (2 if name == "random-resnet18" else 1)
        w = store.FeatureWriter(ws.features(name, library=library), sample.n, x.shape[1], sample.ids(),
                                {"sample_checksum": sample.checksum, "backbone": name})
        w.write(0, x)
        w.finish()
        if not library:  # like the real one: the manifest names the active file, metrics.json reports
            store.update_manifest(ws, {"features_baseline" if baseline else "features": {"backbone": name}})
            entry = {"backbone": name, "dim": 6}
            if baseline:
                store.update_metrics(ws.metrics, {"baseline": {"backbone": name, "features": entry}})
            else:
                store.update_metrics(ws.metrics, {"features": entry}, replace=("features",))
        return ws.features(name, library=library)

    def run_embed(ws, cfg):
        hit("embed")
        assert cfg.backbone == "efficientnet-lite0"  # pinned by the pipeline, not "the newest file"
        f = store.read_features(ws.features(cfg.backbone))
        model = LinearMap(cfg.perplexity)
        store.write_map(ws.map(cfg.method), model.transform(f.values), f.ids, {"perplexity": cfg.perplexity},
                        model=model, model_path=ws.map_model(cfg.method))
        return ws.map(cfg.method)

    def run_classify(ws, cfg):
        hit("classify")
        xy, ids, _ = store.read_map(ws.map(cfg.method))
        cluster = (xy[:, 0] > np.median(xy[:, 0])).astype(int)
        store.write_table(ws.classes, Table({"id": ids, "cluster": cluster}))
        # like the real classify: every other feature file of the sample is compared too
        others = [b for b in ws.feature_backbones() if b != cfg.backbone]
        by = {b: {"truth_class": {"knn_balanced_accuracy": float(store.read_features(ws.features(b)).values[0, 0])}}
              for b in others}
        return store.update_metrics(ws.metrics, {"agreement": {"truth_class": {
            "n_classes": 2, "knn_balanced_accuracy": float(xy[0, 0])}}, "agreement_by_backbone": by},
            replace=("agreement_by_backbone",))

    def run_train(ws, cfg, *, resume=False):
        assert type(cfg) is GanTrainConfig  # only what training reads
        hit("gan_train")
        calls["gan_train_resume"] += bool(resume)
        ws.gan.mkdir(parents=True, exist_ok=True)
        (ws.gan / f"ckpt-{cfg.steps:06d}.pt").write_text(f"steps={cfg.steps}")
        return ws.gan

    def run_sample(ws, cfg):
        assert type(cfg) is GanSampleConfig
        hit("gan_sample")
        rng = np.random.default_rng([cfg.random_state, _digest(ws.sample)])
        m = 10
        stamps = rng.uniform(0, 1, (m, 3, 8, 8)).astype("f4")
        cat = Table({"id": [f"gan-{i}" for i in range(m)], "truth_class": ["spiral"] * m})
        store.write_sample(ws.library, stamps, cat, physical=None, bands=["F435W", "F850LP", "F160W"],
                           kind="library", columns={"id": "id"})
        return ws.library

    def run_evaluate(ws, cfg):
        assert type(cfg) is GanEvaluateConfig
        hit("gan_evaluate")
        return store.update_metrics(ws.metrics, {"gan": {"fid": 1.0, "balancing": {"n_repeats": cfg.balancing_repeats}}},
                                    replace=("gan",))["gan"]

    def run_report(ws, cfg):
        hit("report")
        path = ws.report / "index.html"
        store.atomic_write_text(path, "<html></html>")
        return path

    for module, name, fn in [
        (galearn.mock, "simulate_field", simulate_field),
        (galearn.survey, "make_sample_from_mosaics", make_sample_from_mosaics),
        (galearn.features, "run_features", run_features),
        (galearn.maps, "run_embed", run_embed),
        (galearn.evaluate, "run_classify", run_classify),
        (galearn.gan, "run_train", run_train),
        (galearn.gan, "run_sample", run_sample),
        (galearn.gan, "run_evaluate", run_evaluate),
        (galearn.report, "run_report", run_report),
    ]:
        # setitem on the module dict: no lazy import of the real (torch-heavy) stage modules
        monkeypatch.setitem(module.__dict__, name, fn)
    return calls, fail


ALL = ["simulate", "cutouts", "features", "features_baseline", "embed", "classify", "anomalies",
       "gan_train", "gan_sample", "library_features", "library_map", "gan_evaluate", "report"]


def _run(ws, overrides=(), **kw):
    lines = []
    run_all(ws, load_config(None, parse_overrides(list(overrides))), echo=lines.append, **kw)
    return lines


def _status(lines):
    out = {}
    for line in lines:
        if line.startswith("["):
            name = line.split("]", 1)[1].split()[0]
            out[name] = "skipped" if "skipped" in line else ("done" if "done in" in line else out.get(name, "running"))
    return out


def test_stage_names_follow_the_config():
    cfg = load_config(None)
    assert stage_names(cfg) == ALL
    cfg = load_config(None, {"run_gan": False, "run_adapt": True, "baseline_backbone": ""})
    assert stage_names(cfg) == ["simulate", "cutouts", "adapt", "features", "embed", "classify", "anomalies",
                                "report"]
    cfg = load_config(None, {"catalog": "c.fits", "images": {"F160W": "h.fits"}, "run_gan": False})
    assert stage_names(cfg)[0] == "cutouts"


def test_first_run_runs_everything_second_run_skips_everything(tmp_path, fakes):
    calls, _ = fakes
    ws = Workspace(tmp_path / "ws")
    lines = _run(ws)
    assert list(_status(lines)) == ALL and set(_status(lines).values()) == {"done"}
    assert calls["features:efficientnet-lite0"] == 1 and calls["features:random-resnet18"] == 1
    assert calls["features:efficientnet-lite0:library"] == 1
    # resolved configuration written, timing of every stage recorded
    assert load_config(ws.config) == resolve(load_config(None), ws)
    assert load_config(ws.config).cutouts.select == galearn.pipeline.DEFAULT_MOCK_SELECT
    metrics = store.read_metrics(ws.metrics)
    assert set(metrics["timing"]) == set(ALL)
    # the baseline's features do not overwrite the main backbone's entry
    assert metrics["features"]["backbone"] == "efficientnet-lite0"
    assert metrics["baseline"]["backbone"] == "random-resnet18"
    assert metrics["baseline"]["features"]["backbone"] == "random-resnet18"
    assert list(metrics["agreement_by_backbone"]) == ["random-resnet18"]
    # the library is placed on the real map with the fitted model's transform
    lxy, lids, _ = store.read_map(ws.library_map("tsne"))
    feats = store.read_features(ws.features("efficientnet-lite0", library=True))
    assert np.allclose(lxy, feats.values[:, :2] * 30.0) and list(lids) == list(feats.ids)

    before = dict(calls)
    timing = metrics["timing"]
    lines = _run(ws)
    assert set(_status(lines).values()) == {"skipped"} and len(_status(lines)) == len(ALL)
    assert dict(calls) == before
    assert store.read_metrics(ws.metrics)["timing"] == timing


def test_changed_config_reruns_that_stage_and_downstream(tmp_path, fakes):
    calls, _ = fakes
    ws = Workspace(tmp_path / "ws")
    _run(ws)
    status = _status(_run(ws, ["embed.perplexity=12"]))
    ran = {k for k, v in status.items() if v == "done"}
    assert ran == {"embed", "classify", "library_map", "report"}
    # and a change upstream propagates through everything that reads it
    status = _status(_run(ws, ["embed.perplexity=12", "simulate.random_state=3"]))
    assert {k for k, v in status.items() if v == "done"} == set(ALL)
    # a GAN sampling option re-runs sampling and what depends on the library only
    status = _status(_run(ws, ["embed.perplexity=12", "simulate.random_state=3", "gan.random_state=5"]))
    assert {k for k, v in status.items() if v == "done"} == {"gan_train", "gan_sample", "library_features",
                                                             "library_map", "gan_evaluate", "report"}


def test_missing_output_and_force_rerun(tmp_path, fakes):
    calls, _ = fakes
    ws = Workspace(tmp_path / "ws")
    _run(ws)
    ws.map("tsne").unlink()
    status = _status(_run(ws))
    assert status["embed"] == "done" and status["features"] == "skipped"
    status = _status(_run(ws, force=True))
    assert set(status.values()) == {"done"}


def test_interrupted_run_resumes(tmp_path, fakes):
    calls, fail = fakes
    ws = Workspace(tmp_path / "ws")
    fail["gan_train"] = 1
    with pytest.raises(KeyboardInterrupt):
        _run(ws)
    assert calls["gan_train"] == 1 and calls["gan_sample"] == 0
    status = _status(_run(ws))
    assert [k for k, v in status.items() if v == "done"] == ["gan_train", "gan_sample", "library_features",
                                                             "library_map", "gan_evaluate", "report"]
    assert calls["gan_train_resume"] == 1  # the GAN continues from its checkpoints
    assert calls["simulate"] == calls["features:efficientnet-lite0"] == 1


def test_bad_data_options(tmp_path, fakes):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(BadValueError, match="images"):
        _run(ws, ["catalog=cat.fits"])
    with pytest.raises(BadValueError, match="labels"):
        _run(ws, ["image_folder=imgs"])


def test_cli_run(tmp_path, fakes, capsys):
    from galearn.cli import main

    ws = tmp_path / "ws"
    assert main(["run", "--workspace", str(ws), "run_gan=false", "baseline_backbone="]) == 0
    out = capsys.readouterr().out
    assert "simulate" in out and "done in" in out and "index.html" in out
    assert main(["run", "--workspace", str(ws), "run_gan=false", "baseline_backbone="]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (up to date)") == 7
    assert main(["run", "--workspace", str(ws), "catalog=nope.fits"]) == 2
    state = json.loads((ws / ".galearn-state.json").read_text())
    assert set(state["stages"]) == {"simulate", "cutouts", "features", "embed", "classify", "anomalies", "report"}


def test_cli_run_interrupted_says_how_to_resume(tmp_path, fakes, capsys):
    from galearn.cli import main

    _, fail = fakes
    fail["classify"] = 1
    ws = tmp_path / "ws"
    assert main(["run", "--workspace", str(ws), "run_gan=false"]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err
    assert main(["run", "--workspace", str(ws), "run_gan=false"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (up to date)") == 5 and "classify            done in" in out


def test_a_new_galearn_version_reruns_every_stage(tmp_path, fakes, monkeypatch):
    calls, _ = fakes
    ws = Workspace(tmp_path / "ws")
    _run(ws)
    assert set(_status(_run(ws)).values()) == {"skipped"}
    monkeypatch.setattr(galearn.pipeline, "__version__", "99.0.0")
    assert set(_status(_run(ws)).values()) == {"done"}


def test_an_evaluation_setting_reruns_only_gan_evaluate_and_report(tmp_path, fakes):
    calls, _ = fakes
    ws = Workspace(tmp_path / "ws")
    _run(ws)
    status = _status(_run(ws, ["gan.balancing_repeats=3"]))
    assert {k for k, v in status.items() if v == "done"} == {"gan_evaluate", "report"}
    assert status["gan_train"] == status["gan_sample"] == "skipped"
    assert calls["gan_train"] == 1
    assert store.read_metrics(ws.metrics)["gan"]["balancing"]["n_repeats"] == 3
    # a sampling setting does not retrain either
    status = _status(_run(ws, ["gan.balancing_repeats=3", "gan.n_per_class=7"]))
    assert status["gan_train"] == "skipped" and status["gan_sample"] == "done"


def test_dry_run_prints_exactly_the_configuration_the_run_writes(tmp_path, fakes, capsys):
    from galearn.cli import main

    ws = tmp_path / "ws"
    args = ["--workspace", str(ws), "run_gan=false", "embed.method=pca"]
    assert main(["run", "--dry-run", *args]) == 0
    printed = capsys.readouterr().out
    assert not ws.exists()  # a dry run writes nothing
    assert 'select = "zbest > 0.01' in printed and 'backbone = "auto"' not in printed
    assert main(["run", *args]) == 0
    assert (ws / "config.toml").read_text() == printed
    resolved = load_config(ws / "config.toml")
    assert resolved.embed.backbone == resolved.classify.backbone == resolved.features.backbone == "efficientnet-lite0"
    assert resolved.classify.method == resolved.report.method == "pca"
    # fused features: the map reads the fused file
    fused = resolve(load_config(None, {"features": {"fuse": "morphology"}}), Workspace(ws))
    assert fused.embed.backbone == fused.classify.backbone == "efficientnet-lite0+morphology"


def test_single_commands_resolve_like_run(tmp_path):
    ws = Workspace(tmp_path / "ws")
    store.update_manifest(ws, {"features": {"backbone": "resnet18"}})
    cfg = load_config(None)
    # a single command reads what earlier commands produced from the manifest ...
    assert resolve(cfg, ws, stages=["embed"]).embed.backbone == "resnet18"
    assert resolve(cfg, ws, stages=["classify"]).classify.backbone == "resnet18"
    assert resolve(cfg, ws, stages=["cutouts"]).cutouts.select is None  # no mock selection on real data
    # ... `galearn run` from the features it makes itself
    run = resolve(cfg, ws)
    assert run.embed.backbone == run.features.backbone != "resnet18"
    assert resolve(load_config(None, {"run_adapt": True}), ws).features.backbone == "adapted"



def test_features_by_hand_in_between_make_the_run_restore_its_active_file(tmp_path, fakes):
    ws = Workspace(tmp_path / "ws")
    _run(ws, ["run_gan=false"])
    store.update_manifest(ws, {"features": {"backbone": "resnet18"}})  # as `galearn features --backbone resnet18`
    status = _status(_run(ws, ["run_gan=false"]))
    assert status["features"] == "done" and status["simulate"] == "skipped"
    assert store.read_manifest(ws)["features"]["backbone"] == "efficientnet-lite0"
    assert _status(_run(ws, ["run_gan=false"]))["features"] == "skipped"
