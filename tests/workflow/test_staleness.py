"""Rerun only what is stale: parameters, new experiments, package code, reordered config keys."""
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml

from conftest import DEMO, MORE, REPO, snakemake

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


def decode_jobs(name: str, shown: bool = True) -> set[tuple[str, str]]:
    """An experiment's jobs and the tables after it; ``shown``: the overview figure shows it (a sweep's
    own points are not shown there)."""
    return {("train", f"experiment={name}"), ("reconstruct", f"name={name}"), ("refine", f"name={name}"),
            ("evaluate", f"name={name}"), ("metrics_table", ""), ("results", "")} | ({("overview", "")} if shown else set())


def test_one_experiments_parameter_reruns_only_that_experiment(demo_run):
    jobs = planned(demo_run, overrides={"experiments": {"lite_bigG": {"max_lr": 0.002}}})
    assert jobs == decode_jobs("lite_bigG")


def test_a_sweeps_base_parameter_reruns_the_base_and_its_points(demo_more_run):
    jobs = planned(demo_more_run, DEMO, MORE, overrides={"experiments": {"seed_vitb32": {"max_lr": 0.002}}})
    points = ("seed_vitb32", "vitb32_num_sessions~1_seed~7", "vitb32_num_sessions~2_seed~42",
              "vitb32_num_sessions~2_seed~7")
    assert jobs == set().union(*map(decode_jobs, points))


def test_resource_settings_rerun_nothing(demo_run):
    assert planned(demo_run, overrides={"model": {"train_mem_mb": 5000, "train_runtime": 21}}) == set()


def test_a_new_experiment_runs_only_its_own_jobs(demo_run):
    jobs = planned(demo_run, overrides={"experiments": {"wide_bigG": {"hidden_dim": 512}}})
    assert jobs == decode_jobs("wide_bigG")


def test_a_new_grid_value_runs_only_the_new_points(demo_more_run):
    jobs = planned(demo_more_run, DEMO, MORE, overrides={"sweeps": {"vitb32": {"grid": {"seed": [42, 7, 3]}}}})
    assert jobs == decode_jobs("vitb32_num_sessions~1_seed~3", False) | decode_jobs("vitb32_num_sessions~2_seed~3", False)


def test_reordered_config_keys_rerun_nothing(demo_run, tmp_path):
    def reverse(obj):
        return {k: reverse(obj[k]) for k in reversed(list(obj))} if isinstance(obj, dict) else obj
    reordered = tmp_path / "reordered.yaml"
    reordered.write_text(yaml.safe_dump(reverse(yaml.safe_load(DEMO.read_text())), sort_keys=False))
    assert list(yaml.safe_load(reordered.read_text()))[0] != list(yaml.safe_load(DEMO.read_text()))[0]
    assert planned(demo_run, reordered) == set()


OLD = 1_000_000_000          # 2001: older than any output of the demo run


def copy_checkout(dest: Path) -> Path:
    """The files of this checkout (tracked, and new ones git does not ignore) under ``dest``, all
    dated 2001, so the demo run's outputs are newer than every code file of the copy."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                            text=True, check=True).stdout.split()
    for rel in listed:
        if (REPO / rel).is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dest / rel)
            os.utime(dest / rel, (OLD, OLD))
    if (REPO / ".nltk_data").exists():            # the offline WordNet the evaluate rule checks for
        (dest / ".nltk_data").symlink_to(REPO / ".nltk_data")
    return dest


def stale_rules(repo: Path, workdir: Path) -> set[str]:
    """The rules whose outputs ``repo``'s workflow would update in ``workdir`` (Snakemake's --summary
    table), by modification times only: the copy's code files have other paths than the run recorded,
    which is not a change of code."""
    out = snakemake(workdir, "all", "--summary", "--nolock", "--rerun-triggers", "mtime", repo=repo).stdout
    rows = [line.split("\t") for line in out.splitlines()]
    header = next(r for r in rows if r[0] == "output_file")
    rule, plan = header.index("rule"), header.index("plan")
    return {r[rule] for r in rows if len(r) == len(header) and r is not header and r[plan] != "no update"}


def downstream(repo: Path, workdir: Path) -> dict[str, set[str]]:
    """{rule: itself and every rule after it} in the demo's rule graph (Snakemake's --rulegraph)."""
    dot = snakemake(workdir, "all", "--rulegraph", "--nolock", repo=repo).stdout
    label = dict(re.findall(r'^\s*(\d+)\[label = "(\w+)"', dot, re.M))
    after = {name: set() for name in label.values()}
    for src, dst in re.findall(r"^\s*(\d+) -> (\d+)", dot, re.M):
        after[label[src]].add(label[dst])
    def reach(rule):
        seen, todo = set(), [rule]
        while todo:
            r = todo.pop()
            if r not in seen:
                seen.add(r)
                todo.extend(after[r])
        return seen
    return {r: reach(r) - {"all"} for r in after}


def test_editing_any_package_module_reruns_exactly_the_stages_that_import_it(demo_run, tmp_path):
    from fmri_recon import code_deps
    from rule_files import rules

    copies = [copy_checkout(tmp_path / f"copy{i}") for i in range(2)]          # two dry runs at once
    assert stale_rules(copies[0], demo_run) == set()                          # the copy starts current
    graph = downstream(copies[0], demo_run)
    scripts = {r: info["script"] for r, info in rules().items() if r in graph}
    modules = sorted(p.relative_to(REPO) for p in (REPO / "fmri_recon").rglob("*.py"))

    # the import closures are parsed here, not in the threads: CPython 3.11's ast.parse is not
    # thread-safe (it failed a CI run with
    # "AST constructor recursion depth mismatch")
    closures = {i: {s: code_deps.closure(copies[i] / "scripts" / s, copies[i]) for s in set(scripts.values())}
                for i in range(2)}

    def check(job):
        i, rel = job
        repo = copies[i % 2]
        path = repo / rel
        text = path.read_bytes()
        importers = {r for r, s in scripts.items() if path in closures[i % 2][s]}
        expected = set().union(*(graph[r] for r in importers)) if importers else set()
        try:
            # a real edit: Snakemake ignores a file that was only touched (same checksum, newer mtime)
            path.write_bytes(text + b"\n# edited by a test\n")
            os.utime(path, (time.time() + 60, time.time() + 60))
            got = stale_rules(repo, demo_run)
        finally:
            path.write_bytes(text)
            os.utime(path, (OLD, OLD))
        return str(rel), got, expected

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(check, enumerate(modules)))
    wrong = {m: (sorted(got), sorted(exp)) for m, got, exp in results if got != exp}
    assert not wrong, "module: (stale, expected)\n" + "\n".join(f"{m}: {v}" for m, v in wrong.items())
    assert len(results) == len(modules) >= 30
    # the cases a reviewer checks by hand
    by_module = {m: got for m, got, _ in results}
    assert by_module["fmri_recon/decode/weights.py"] >= {"train_decoder", "reconstruct", "refine", "evaluate"}
    assert "train" not in by_module["fmri_recon/decode/refine.py"]
    assert by_module["fmri_recon/helpers.py"] >= {"synthesize", "train", "evaluate"}
    metric_modules = [m for m in by_module if m.startswith("fmri_recon/evaluate/metrics/")]
    assert len(metric_modules) >= 4 and not any("train" in by_module[m] for m in metric_modules)
    assert all("evaluate" in by_module[m] for m in metric_modules)     # a metric edit rescores, never retrains
    assert stale_rules(copies[0], demo_run) == set()                          # restored: nothing stale
