"""Configuration: TOML round trip, dotted overrides, clear errors."""

import pytest

from galearn.cli import main
from galearn.config import RunConfig, load_config, parse_overrides
from galearn.errors import BadValueError, MissingInputError


def test_overrides_are_parsed_as_json_with_string_fallback():
    got = parse_overrides(["embed.perplexity=50", "--gan.steps", "7", "features.backbone=resnet18"])
    assert got == {"embed": {"perplexity": 50}, "gan": {"steps": 7}, "features": {"backbone": "resnet18"}}


def test_toml_round_trip(tmp_path):
    cfg = load_config(None, parse_overrides(["embed.perplexity=12.5", "gan.steps=3", "classify.compare=[\"a\",\"b\"]"]))
    path = tmp_path / "cfg.toml"
    path.write_text(cfg.to_toml())
    again = load_config(path)
    assert again == cfg
    assert again.embed.perplexity == 12.5 and again.classify.compare == ("a", "b")


def test_unknown_key_names_the_key():
    with pytest.raises(BadValueError, match="embed.perplexityy"):
        load_config(None, {"embed": {"perplexityy": 3}})


def test_an_old_workspace_config_with_a_retired_key_still_loads(tmp_path):
    # `WS/config.toml` written by an older release carries compute.cluster_fit_subsample
    path = tmp_path / "config.toml"
    path.write_text(RunConfig().to_toml() + "\n")
    text = path.read_text().replace("[compute]\n", "[compute]\ncluster_fit_subsample = 50000\n")
    assert "cluster_fit_subsample" in text
    path.write_text(text)
    with pytest.warns(UserWarning, match="compute.cluster_fit_subsample.*no longer used"):
        cfg = load_config(path)
    assert cfg == RunConfig()
    assert "cluster_fit_subsample" not in cfg.to_toml()


def test_missing_config_file(tmp_path):
    with pytest.raises(MissingInputError, match="nope.toml"):
        load_config(tmp_path / "nope.toml")


def test_cli_dry_run_prints_resolved_config(capsys):
    assert main(["run", "--dry-run", "embed.perplexity=42"]) == 0
    out = capsys.readouterr().out
    assert "perplexity = 42" in out
    assert RunConfig().simulate.n_galaxies > 0


def test_cli_bad_override_exits_2_with_one_line(capsys):
    assert main(["run", "--dry-run", "embed.nonsense=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "embed.nonsense" in err[0]


def test_every_adapt_setting_is_declared_and_settable():
    cfg = load_config(None, parse_overrides(["adapt.max_shift=0.1", "adapt.scale=[0.9, 1.2]",
                                             "adapt.weight_decay=0.0", "adapt.head_learning_rate=0.01"]))
    assert cfg.adapt.max_shift == 0.1 and cfg.adapt.scale == (0.9, 1.2)
    assert cfg.adapt.weight_decay == 0.0 and cfg.adapt.head_learning_rate == 0.01


def test_gan_steps_read_only_their_own_settings():
    from dataclasses import fields

    from galearn.config import GanConfig, GanEvaluateConfig, GanSampleConfig, GanTrainConfig, step_config

    gan = GanConfig(balancing_repeats=3, n_per_class=7, steps=9)
    assert gan.train == GanConfig(steps=9).train  # evaluation / sampling settings are not training's
    assert gan.sample == GanSampleConfig(n_per_class=7) and gan.evaluate == GanEvaluateConfig(balancing_repeats=3)
    assert type(step_config(RunConfig(gan=gan), GanTrainConfig)) is GanTrainConfig
    # every [gan] key belongs to at least one step, so nothing is read unfingerprinted
    steps = {f.name for cls in (GanTrainConfig, GanSampleConfig, GanEvaluateConfig) for f in fields(cls)}
    assert steps == {f.name for f in fields(GanConfig)}
    assert not {"balancing_repeats", "eval_max_n", "eval_morphology_n", "n_per_class", "balance"} & {
        f.name for f in fields(GanTrainConfig)}


def test_the_shipped_30_minute_gan_setting_loads_and_is_valid():
    """docs/gan-30min.toml (docs/gan-experiments.md round 23) stays a configuration `gan train --config` accepts."""
    from pathlib import Path

    pytest.importorskip("torch")
    from galearn.gan.loop import _validate

    cfg = load_config(Path(__file__).resolve().parents[1] / "docs" / "gan-30min.toml").gan
    _validate(cfg)
    assert (cfg.discriminator, cfg.steps, cfg.g_mode_seeking, cfg.g_stamp_power_match, cfg.g_profile_match,
            cfg.g_joint_match, cfg.g_asymmetry) == ("projected", 4500, 0.1, 5.0, 2.0, 5.0, 0.1)
    assert cfg.g_neighbours and cfg.sky_noise_gain  # round 45
    assert cfg.g_sky_level_match == 4.0 and cfg.g_sky_level_side == "both"  # round 56
    assert cfg.condition == RunConfig().gan.condition  # the label column is the user's: --condition
