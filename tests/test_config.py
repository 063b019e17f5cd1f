"""Config: presets, TOML round trip, overrides, and one-line errors (exit code 2)."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import pytest
from typer.testing import CliRunner

from cleanroom.cli import app
from cleanroom.config import PRESETS, ConfigError, ExperimentConfig, load_config

runner = CliRunner()


@pytest.mark.parametrize("preset", PRESETS)
def test_presets_load_and_round_trip(preset):
    cfg = load_config(preset)
    assert cfg.name == preset
    again = ExperimentConfig.model_validate(tomllib.loads(cfg.to_toml()))
    assert again == cfg


def test_presets_differ_in_size():
    smoke, default, large, validate, gpu = (load_config(p) for p in ("smoke", "default", "large", "validate", "gpu"))
    assert smoke.recipes.token_budget < default.recipes.token_budget < large.recipes.token_budget
    assert large.recipes.token_budget < gpu.recipes.token_budget
    assert smoke.model.d_model <= default.model.d_model <= large.model.d_model <= gpu.model.d_model
    # validate = default + controls: the main recipes are computed exactly as in `default`
    assert set(default.recipes.names) < set(validate.recipes.names)
    for section in ("world", "items", "tokenizer", "model", "train", "eval", "tamper"):
        assert default.fingerprint(section) == validate.fingerprint(section)


def test_set_overrides_parse_toml_literals():
    cfg = load_config("smoke", overrides=["train.steps=7", "tamper.lrs=[1e-4, 2e-4]", "name=x", "runtime.compile=true"])
    assert cfg.train.steps == 7 and cfg.tamper.lrs == [1e-4, 2e-4] and cfg.name == "x" and cfg.runtime.compile


def test_config_file_merges_over_preset(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[train]\nsteps = 11\n")
    cfg = load_config("smoke", config_file=f)
    assert cfg.train.steps == 11 and cfg.model.d_model == load_config("smoke").model.d_model


@pytest.mark.parametrize(
    "override, needle",
    [
        ("train.stepz=3", "unknown config key `train.stepz` (allowed: batch_size"),
        ("train.steps=-3", "config key `train.steps`: input should be greater than 0, got -3"),
        ("train.dtype=fp16", "config key `train.dtype`: input should be 'auto', 'bf16' or 'fp32', got 'fp16'"),
        ("nosuch.key=1", "unknown config key `nosuch`"),
        ("model.n_heads=3", "must be divisible by n_heads"),
        ("recipes.web_noise=0.9", "web_* shares must sum to 1"),
        ("train.steps", "--set expects key=value"),
    ],
)
def test_bad_config_is_one_line_error(override, needle):
    with pytest.raises(ConfigError) as e:
        load_config("smoke", overrides=[override])
    assert needle in str(e.value)
    assert "\n" not in str(e.value)


def test_cli_bad_config_exit_code_2_no_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "cleanroom.cli", "world", "--preset", "smoke", "--out",
                        str(tmp_path / "r"), "--set", "world.n_people=-1"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "config key `world.n_people`" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "world").exists()


def test_cli_unknown_preset():
    r = runner.invoke(app, ["config", "show", "--preset", "nope"])
    assert r.exit_code == 2 and "unknown preset `nope` (allowed: smoke, default, large, validate, gpu)" in r.output


def test_config_show_prints_resolved_toml():
    r = runner.invoke(app, ["config", "show", "--preset", "default", "--set", "train.steps=5"])
    assert r.exit_code == 0
    data = tomllib.loads(r.stdout)
    assert data["train"]["steps"] == 5 and data["name"] == "default"


def test_fingerprint_tracks_only_named_sections():
    a = load_config("smoke")
    b = load_config("smoke", overrides=["train.steps=99"])
    assert a.fingerprint("world") == b.fingerprint("world")
    assert a.fingerprint("train") != b.fingerprint("train")
    c = load_config("smoke", overrides=["seed=1"])
    assert a.fingerprint("world") != c.fingerprint("world")


def test_runtime_section_is_never_fingerprinted_and_old_keys_migrate():
    a = load_config("smoke")
    b = load_config("smoke", overrides=["runtime.jobs=1", "runtime.threads=2", "runtime.compile=true",
                                        "runtime.device=cpu", "runtime.malloc=default", "runtime.batch_models=false"])
    assert a.fingerprint() == b.fingerprint() and a.fingerprint("train") == b.fingerprint("train")
    with pytest.raises(ValueError, match="never part of a fingerprint"):
        a.fingerprint("runtime")
    # a run directory written before `runtime` existed keeps loading: its train.* knobs move over
    old = load_config("smoke", overrides=["train.jobs=3", "train.compile=true"])
    assert old.runtime.jobs == 3 and old.runtime.compile and old.fingerprint() == a.fingerprint()
