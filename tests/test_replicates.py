"""The model as the unit of evidence: replicate names and seeds, and a simulation of the claims' interval."""

from __future__ import annotations

import numpy as np
import pytest

from cleanroom.config import base_recipe, load_config, model_group, saved_config, split_model, train_seed
from cleanroom.stats import between_model_variance, contrast_ci
from cleanroom.stats.calibration import Design, calibrate


def test_replicates_are_models_of_their_recipe_with_their_own_seed():
    cfg = load_config("smoke", overrides=["train.replicates=3", 'recipes.names=["web", "filtered_web"]',
                                          'safeguard.arms=["unlearn"]'])
    assert cfg.trained() == ["web", "web~1", "web~2", "filtered_web", "filtered_web~1", "filtered_web~2"]
    assert cfg.arms() == ["web+unlearn", "web~1+unlearn", "web~2+unlearn"]
    assert split_model("web~2+unlearn") == ("web+unlearn", 2) and model_group("web~1") == "web"
    assert base_recipe("web~2+unlearn") == "web" and base_recipe("filtered_web~1") == "filtered_web"
    assert [train_seed(7, m) for m in ("web", "web~1", "web~2+unlearn")] == [7, 1007, 2007]


def test_adding_a_replicate_redoes_no_finished_model():
    two, three = (load_config("smoke", overrides=[f"train.replicates={k}"]) for k in (2, 3))
    assert two.fingerprint("model", "train") == three.fingerprint("model", "train")
    assert two.fingerprint() == three.fingerprint()


def test_null_recipes_are_gone_with_a_pointer_and_old_runs_migrate(tmp_path):
    with pytest.raises(Exception, match="replicates"):
        load_config("smoke", overrides=['recipes.names=["web", "null_web"]'])
    old = tmp_path / "config.toml"
    old.write_text(load_config("smoke").to_toml().replace('"leaky", "diverse"', '"null_web", "leaky", "diverse"')
                   .replace("replicates = 2\n", ""))
    cfg = saved_config(old)
    assert "null_web" not in cfg.recipes.names and "web~1" in cfg.trained()  # web~1 is the model null_web was


def test_between_model_variance_subtracts_the_items_noise():
    """Replicates that differ only by per-item coin flips have no between-model variance; a planted shift
    of one model is recovered."""
    rng = np.random.default_rng(0)
    flips = {g: (rng.random((2, 2000)) < 0.5).astype(float) for g in "abcd"}
    assert between_model_variance(flips).sigma2 < 2e-4
    shifted = {g: m + np.array([[0.1], [-0.1]]) for g, m in flips.items()}  # models 0.2 apart: variance 0.02
    assert between_model_variance(shifted).sigma2 == pytest.approx(0.02, rel=0.15)
    assert between_model_variance({"a": flips["a"][:1]}).df == 0  # one model: nothing to estimate


def test_without_replicates_the_interval_is_the_items_alone():
    rng = np.random.default_rng(1)
    a, b = (rng.random((1, 400)) < p for p in (0.6, 0.5))
    r = contrast_ci([a, b], [1, -1], np.arange(400) // 4, between_model_variance({}), n_boot=500)
    assert not r["models_resampled"] and np.isnan(r["between_model_sd"]) and r["ci_low"] < r["effect"] < r["ci_high"]


@pytest.fixture(scope="module")
def item_se() -> float:
    """The design's item SE of the contrast when models do not differ (the unit the planted SD is given in)."""
    return calibrate(Design(), runs=40, methods=("contrast",))["contrast"]["item_se"]


@pytest.mark.parametrize("effect", [0.0, 0.1])
def test_the_interval_covers_the_truth_when_models_differ(item_se, effect):
    """400 simulated runs (5 recipes x 2 models, 400 items in 100 entity clusters), the between-model SD 2.7x
    the item SE (what the lab measured for C3): the interval over models and items covers the truth in
    >= 92% of runs, and with a zero effect decides in <= 8% (claim and A/A alike). The item-only interval
    of before must fail the same test, or this test could not tell them apart."""
    runs = 400
    res = calibrate(Design(effect=effect, between_sd=2.7 * item_se), runs=runs, methods=("contrast", "item_only"))
    ours, items_only = res["contrast"], res["item_only"]
    assert ours["claim_covered"] >= 0.92 and ours["aa_covered"] >= 0.92
    assert items_only["claim_covered"] < 0.92 and items_only["aa_covered"] < 0.92
    if effect == 0:
        assert ours["claim_decided"] <= 0.08 and ours["aa_decided"] <= 0.08
        assert items_only["claim_decided"] > 0.08


def test_the_interval_still_finds_an_effect_when_models_agree(item_se):
    """No between-model variance: the price of carrying the models is small (a 4-SE effect is still found
    in most runs)."""
    res = calibrate(Design(effect=4 * item_se), runs=200, methods=("contrast",))["contrast"]
    assert res["claim_covered"] >= 0.92 and res["claim_decided"] >= 0.8
