"""Shared fixtures: run the workflow as a user would, on the demo config, once per session."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "demo.yaml"


def snakemake(workdir: Path, *args: str, configs: tuple = (DEMO,), overrides: dict | None = None,
              check: bool = True, timeout: int = 1800, repo: Path = REPO, env: dict | None = None
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
    result = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return result


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """One complete demo run shared by every end-to-end test (building the DAG is the slow part)."""
    workdir = tmp_path_factory.mktemp("demo")
    snakemake(workdir, "all")
    return workdir
