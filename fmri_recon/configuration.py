"""Config checking with one short line per problem, naming the key.

Snakemake's ``validate`` (which also fills in the schema's defaults) reports a failure by
printing the whole schema and config; this runs the same JSON schema first and says only
which key is wrong and why.
"""
from __future__ import annotations

from pathlib import Path

import yaml


def problems(config: dict, schema_path: str | Path) -> list[str]:
    """Every schema violation of ``config`` as ``"key.path: message"``, sorted by key."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    return [f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message}" for e in errors]


SCHEMA = Path(__file__).resolve().parents[1] / "schemas" / "config.schema.yaml"


def defaults(block: str, schema_path: str | Path = SCHEMA) -> dict:
    """The schema's default of every key of a top-level config ``block`` (e.g. ``targets``):
    what ``validate`` fills in, for callers outside Snakemake (tests, benchmarks)."""
    schema = yaml.safe_load(Path(schema_path).read_text())
    props = schema["properties"][block].get("properties", {})
    return {k: v["default"] for k, v in props.items() if "default" in v}


def expand_sweeps(config: dict, schema_path: str | Path = SCHEMA) -> dict:
    """Add every sweep's points to ``config["experiments"]`` (fmri_recon.sweeps) and return
    {sweep: [{"name", "point"}, ...]}. ``config`` has the schema's defaults filled in."""
    from . import experiment, sweeps

    schema = yaml.safe_load(Path(schema_path).read_text())
    keys = set(schema["$defs"]["model"]["properties"])

    def settings(overrides: dict) -> dict:
        return experiment.resolve({**config, "experiments": {"x": overrides}}, "x")

    return sweeps.expand(config["sweeps"], config["experiments"], settings, keys)
