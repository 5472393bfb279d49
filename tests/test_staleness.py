"""Rerun only what is stale: parameters, new experiments, package code, reordered config keys."""
import os
import re
import time

import pytest
import yaml

from conftest import DEMO, REPO, snakemake

pytestmark = pytest.mark.e2e


def planned(workdir, *configs, overrides=None) -> set[tuple[str, str]]:
    """(rule, wildcards) of every job a dry run would execute."""
    out = snakemake(workdir, "all", "-n", configs=configs or (DEMO,), overrides=overrides).stdout
    jobs = set()
    for block in re.split(r"\n\s*\n", out):
        m = re.search(r"^(?:local)?rule (\w+):", block, re.M)
        if m and m.group(1) != "all":
            w = re.search(r"^\s+wildcards: (.*)$", block, re.M)
            jobs.add((m.group(1), w.group(1) if w else ""))
    return jobs


def decode_jobs(name: str) -> set[tuple[str, str]]:
    return {("train", f"experiment={name}"), ("reconstruct", f"name={name}"), ("refine", f"name={name}"),
            ("evaluate", f"name={name}"), ("metrics_table", "")}


def test_one_experiments_parameter_reruns_only_that_experiment(demo_run):
    jobs = planned(demo_run, overrides={"experiments": {"seed_vitb32": {"max_lr": 0.002}}})
    assert jobs == decode_jobs("seed_vitb32")


def test_resource_settings_rerun_nothing(demo_run):
    assert planned(demo_run, overrides={"model": {"train_mem_mb": 5000, "train_runtime": 21}}) == set()


def test_a_new_experiment_runs_only_its_own_jobs(demo_run):
    jobs = planned(demo_run, overrides={"experiments": {"wide_bigG": {"hidden_dim": 512}}})
    assert jobs == decode_jobs("wide_bigG")


def test_reordered_config_keys_rerun_nothing(demo_run, tmp_path):
    def reverse(obj):
        return {k: reverse(obj[k]) for k in reversed(list(obj))} if isinstance(obj, dict) else obj
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(reverse(yaml.safe_load(DEMO.read_text())), sort_keys=False))
    assert list(yaml.safe_load(reordered.read_text()))[0] != list(yaml.safe_load(DEMO.read_text()))[0]
    assert planned(demo_run, reordered) == set()


@pytest.mark.parametrize("module, rules", [
    ("refine.py", {"refine", "evaluate", "metrics_table"}),
    ("losses.py", {"train", "blurry", "reconstruct", "refine", "evaluate", "metrics_table"}),
    ("lowlevel.py", {"lowlevel_targets", "train", "blurry", "reconstruct", "refine", "evaluate", "metrics_table"}),
])
def test_editing_package_code_reruns_the_stages_that_use_it(demo_run, module, rules):
    # A real edit: Snakemake ignores a file that was only touched (same checksum, newer mtime).
    path = REPO / "fmri_recon" / module
    before, text = path.stat(), path.read_bytes()
    try:
        path.write_bytes(text + b"\n# edited by a test\n")
        later = time.time() + 60
        os.utime(path, (later, later))
        jobs = planned(demo_run)
    finally:
        path.write_bytes(text)
        os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert {rule for rule, _ in jobs} == rules
    assert planned(demo_run) == set()                 # restored: nothing stale
