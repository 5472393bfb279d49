"""Sweeps expand into ordinary experiments with stable, readable names (fmri_recon.sweeps)."""
import copy

import pytest
import yaml

from conftest import DEMO, MORE, REPO
from fmri_recon import configuration, experiment, sweeps


def config_with(sweep_spec: dict) -> dict:
    """The demo's config with tests/support/demo_more.yaml's seed_vitb32 (defaults filled in) and ``sweep_spec``
    as its sweeps."""
    from snakemake.utils import update_config, validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    seed = {**config["experiments"]["seed_vitb32"], **yaml.safe_load(MORE.read_text())["experiments"]["seed_vitb32"]}
    update_config(config, yaml.safe_load(DEMO.read_text()))           # as --configfile merges it
    config["experiments"]["seed_vitb32"] = seed                         # which demo.yaml leaves out
    config["experiments"] = {k: v for k, v in config["experiments"].items() if v is not None}
    config["sweeps"] = sweep_spec
    validate(config, str(configuration.SCHEMA))
    return config


def test_a_grid_expands_to_named_experiments_and_the_base_is_its_own_point():
    config = config_with({"vitb32": {"base": "seed_vitb32", "grid": {"seed": [42, 7], "hidden_dim": [64, 256]}}})
    before = copy.deepcopy(config["experiments"])
    index = configuration.expand_sweeps(config)
    names = [m["name"] for m in index["vitb32"]]
    # keys sorted, key~value joined by _ (Paramspace's convention); the demo model's hidden_dim is 256
    # and its seed 42, so that point is seed_vitb32 itself
    assert names == ["vitb32_hidden_dim~64_seed~42", "vitb32_hidden_dim~64_seed~7", "seed_vitb32",
                     "vitb32_hidden_dim~256_seed~7"]
    assert set(config["experiments"]) - set(before) == {n for n in names if n != "seed_vitb32"}
    assert config["experiments"]["seed_vitb32"] == before["seed_vitb32"]
    point = experiment.resolve(config, "vitb32_hidden_dim~64_seed~7")
    assert (point["hidden_dim"], point["seed"], point["clip_target"]) == (64, 7, "vitb32")  # the base's own override kept
    groups = sweeps.seed_groups("vitb32", index["vitb32"])
    assert {g: [m["name"] for m in ms] for g, ms in groups.items()} == {
        "vitb32_hidden_dim~64": ["vitb32_hidden_dim~64_seed~42", "vitb32_hidden_dim~64_seed~7"],
        "vitb32_hidden_dim~256": ["seed_vitb32", "vitb32_hidden_dim~256_seed~7"]}


def test_adding_a_value_keeps_every_existing_points_name_and_settings():
    small = config_with({"s": {"base": "lite_bigG", "grid": {"blurry_recon": [False], "max_lr": [0.001]}}})
    large = config_with({"s": {"base": "lite_bigG", "grid": {"blurry_recon": [False, True], "max_lr": [0.001]}}})
    old, new = configuration.expand_sweeps(small), configuration.expand_sweeps(large)
    assert [m["name"] for m in old["s"]] == ["s_blurry_recon~false_max_lr~0.001"]
    assert [m["name"] for m in new["s"]] == ["s_blurry_recon~false_max_lr~0.001", "s_blurry_recon~true_max_lr~0.001"]
    name = old["s"][0]["name"]
    assert experiment.train_params(small, name) == experiment.train_params(large, name)


@pytest.mark.parametrize("spec, message", [
    ({"s": {"base": "nope", "grid": {"seed": [1]}}}, "sweeps.s.base = 'nope' is not an experiment"),
    ({"s": {"base": "lite_bigG", "grid": {"hiden_dim": [1]}}}, "sweeps.s.grid has ['hiden_dim']"),
    ({"s": {"base": "lite_bigG", "grid": {"clip_target": ["a b"]}}}, "sweeps.s.grid.clip_target = 'a b' cannot"),
])
def test_a_sweep_that_cannot_expand_names_its_key(spec, message):
    config = config_with(spec)
    with pytest.raises(sweeps.SweepError, match=message.replace("[", r"\[").replace("]", r"\]")):
        configuration.expand_sweeps(config)


def test_a_point_that_would_overwrite_another_experiment_is_refused():
    config = config_with({"s": {"base": "lite_bigG", "grid": {"seed": [1]}}})
    config["experiments"]["s_seed~1"] = {"hidden_dim": 8}
    with pytest.raises(sweeps.SweepError, match="makes experiment 's_seed~1', which the config already defines"):
        configuration.expand_sweeps(config)


def test_the_schema_checks_the_points_values():
    from snakemake.utils import validate

    config = config_with({"s": {"base": "lite_bigG", "grid": {"hidden_dim": [0]}}})
    configuration.expand_sweeps(config)
    problems = configuration.problems(config, configuration.SCHEMA)
    assert problems == ["experiments.s_hidden_dim~0.hidden_dim: 0 is less than the minimum of 1"]
    with pytest.raises(Exception):
        validate(config, str(configuration.SCHEMA))


def test_points_two_sweeps_share_are_trained_once():
    config = config_with({"a": {"base": "seed_vitb32", "grid": {"seed": [42, 7]}},
                          "b": {"base": "seed_vitb32", "grid": {"max_lr": [0.005, 0.001], "seed": [7]}}})
    index = configuration.expand_sweeps(config)
    assert [m["name"] for m in index["a"]] == ["seed_vitb32", "a_seed~7"]
    # the demo's max_lr is 0.005: b's first point is a's second
    assert [m["name"] for m in index["b"]] == ["a_seed~7", "b_max_lr~0.001_seed~7"]
