"""Shared fixtures: run the workflow as a user would, on the demo config, once per session.

The tests are sorted by kind: unit/ (the package, no Snakemake run), workflow/ (Snakemake runs,
most on the shared demo run), cluster/ (SLURM and multi-process training); their support code
(fake hub, SLURM harness, replicas of upstream's files, tiny models) is in support/. Each test
gets the marker of its folder (unit, workflow, cluster), so ``pytest -m unit`` runs one kind.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo.yaml"
SUPPORT = Path(__file__).resolve().parent / "support"
MORE = SUPPORT / "demo_more.yaml"       # tests-only: the seed's ViT-B-32 space and a sweep
DEMO_TEST_IMAGES = yaml.safe_load(DEMO.read_text())["synthetic"]["num_test_images"]
# The README demo takes about 470 s on 2 cores, the run with tests/support/demo_more.yaml about 350 s: a
# run that takes more than three times that has gone wrong, and says so.
RUN_TIMEOUT = 1800
sys.path.insert(0, str(SUPPORT))    # the support modules import as top-level names


def snakemake(workdir: Path, *args: str, configs: tuple = (DEMO,), overrides: dict | None = None,
              check: bool = True, timeout: int = RUN_TIMEOUT, repo: Path = REPO, env: dict | None = None
              ) -> subprocess.CompletedProcess:
    """Run ``snakemake`` of the checkout ``repo`` (this one) in ``workdir`` with config overlays; return the result.

    ``overrides`` is written to a YAML overlay applied last (Snakemake merges nested keys); ``env``
    adds to (or replaces) the environment, which is offline for the hub unless it says otherwise.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    files = [str(c) for c in configs]
    if overrides:
        overlay = workdir / "overrides.yaml"
        overlay.write_text(yaml.safe_dump(overrides))
        files.append(str(overlay))
    cmd = [sys.executable, "-m", "snakemake", "--snakefile", str(repo / "Snakefile"), "--directory",
           str(workdir), "--cores", "2", *args, "--configfile", *files]   # --configfile takes the rest
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HOME": str(workdir / ".hf"), "PYTHONUNBUFFERED": "1", **(env or {})}
    try:
        result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        said = "".join(x if isinstance(x, str) else x.decode(errors="replace") for x in (e.stdout or "", e.stderr or ""))
        raise AssertionError(f"snakemake {' '.join(args)} in {workdir} took longer than {timeout} s; "
                             f"its last output:\n{said[-6000:]}") from None
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


KINDS = ("unit", "workflow", "cluster")


def pytest_collection_modifyitems(items):
    """Each test is marked with its folder's kind; every end-to-end test is slow: it runs
    Snakemake, most of them on the shared demo run."""
    for item in items:
        kind = Path(item.fspath).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))
        if item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """The README demo's run, shared by every end-to-end test that reads it (FMRI_DEMO_RUN: a
    finished one to reuse while working on the tests; the fixture brings it up to date)."""
    workdir = Path(os.environ.get("FMRI_DEMO_RUN") or tmp_path_factory.mktemp("demo"))
    snakemake(workdir, "all")
    return workdir


@pytest.fixture(scope="session")
def nsd_bucket(tmp_path_factory):
    """The demo_more run's synthetic dataset as NSD's own release, served over HTTP as the NSD bucket
    serves it (``.url``), and the same dataset written directly in the pscotti layout (``.direct``)."""
    from bucket_server import FakeBucket

    root = tmp_path_factory.mktemp("nsd_bucket")
    with FakeBucket(root / "bucket") as bucket:
        bucket.direct = root / "direct"
        yield bucket


@pytest.fixture(scope="session")
def demo_more_run(tmp_path_factory, nsd_bucket) -> Path:
    """A run of the demo with tests/support/demo_more.yaml: the seed's ViT-B-32 experiment, its upper bound
    and a 2x2 sweep, with random decoders, on the dataset rebuilt from its raw NSD release, downloaded
    from ``nsd_bucket`` (FMRI_DEMO_MORE_RUN: a finished one to reuse)."""
    from raw_release import write_release

    workdir = Path(os.environ.get("FMRI_DEMO_MORE_RUN") or tmp_path_factory.mktemp("demo_more"))
    settings = {**yaml.safe_load(DEMO.read_text())["synthetic"], **yaml.safe_load(MORE.read_text())["synthetic"]}
    write_release(settings, nsd_bucket.root, nsd_bucket.direct, workdir / "data")
    snakemake(workdir, "all", configs=(DEMO, MORE), overrides={"preprocess": {"url": nsd_bucket.url}})
    return workdir
