"""Config checking with one short line per problem, naming the key.

Snakemake's ``validate`` (which also fills in the schema's defaults) reports a failure by
printing the whole schema and config; this runs the same JSON schema first and says only
which key is wrong and why.
"""
from __future__ import annotations

import re
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
    from fmri_recon import experiment, sweeps

    schema = yaml.safe_load(Path(schema_path).read_text())
    keys = set(schema["$defs"]["model"]["properties"])

    def settings(overrides: dict) -> dict:
        return experiment.resolve({**config, "experiments": {"x": overrides}}, "x")

    return sweeps.expand(config["sweeps"], config["experiments"], settings, keys)


# Upstream's released models name the one subject they did not pretrain on: multisubject_subj0N*
# and final_multisubject_subj0N were pretrained on the other seven, final_subj0N_pretrained_* then
# fine-tuned on N's train sessions. Only N's test images are unseen by such a model.
_HELD_OUT = re.compile(r"(?:^|/)(?:final_)?(?:multisubject_subj0|subj0)(\d)(?:_|/|$)")


def test_subject_leak(name: str, exp: dict) -> str | None:
    """Why experiment ``name`` (resolved settings) would train or evaluate on a model that saw its
    subject's test images, or None. ``allow_test_subject_in_pretraining`` silences it."""
    subject = exp["subjects"][0]
    for key in ("init_from", "checkpoint"):
        spec = exp.get(key) or ""
        match = spec.startswith(("data:", "file:")) and _HELD_OUT.search(spec.split(":", 1)[1])
        if not match or int(match.group(1)) == subject or exp.get("allow_test_subject_in_pretraining"):
            continue
        held_out = int(match.group(1))
        others = ", ".join(str(s) for s in range(1, 9) if s != held_out)
        return (f"config: experiments.{name}.{key} = {spec!r} was pretrained on subjects {others} (all but "
                f"{held_out}), so on subject {subject}'s own test images. Use data:train_logs/"
                f"final_multisubject_subj{subject:02d}/last.pth, pretrained without subject {subject} (hidden_dim "
                "4096, blurry_recon true), or set allow_test_subject_in_pretraining: true if you mean it")
    return None


def check(config: dict) -> list[str]:
    """What the schema cannot express, one line per problem naming the key at fault (``config``
    has the schema's defaults filled in and the sweeps expanded); empty when the config is sound."""
    from fmri_recon import experiment

    problems = []
    for name in config["experiments"]:
        problems += _experiment_problems(config, name, experiment.resolve(config, name))
    problems += _stage_problems(config, experiment.subject_sessions(config))
    return problems


def _experiment_problems(config: dict, name: str, exp: dict) -> list[str]:
    problems = []
    # a lab's own subject (dataset: own) is none of NSD's: no released model saw its test images
    leak = test_subject_leak(name, exp) if config["dataset"] != "own" else None
    if leak:
        problems.append(leak)
    if exp["clip_target"] not in config["clip_models"]:
        problems.append(
            f"config: experiments.{name}.clip_target = {exp['clip_target']!r} is not a key of "
            f"clip_models (have {sorted(config['clip_models'])})"
        )
    if exp.get("outputs") and (exp.get("checkpoint") or exp.get("init_from")):
        problems.append(
            f"config: experiments.{name} has outputs (score released reconstructions, no model) and "
            "also checkpoint or init_from: keep one"
        )
    if exp.get("checkpoint") and exp.get("init_from"):
        problems.append(
            f"config: experiments.{name} has both checkpoint (evaluate a released model, no training) "
            "and init_from (train from a start): keep one"
        )
    released = [k for k in ("checkpoint", "outputs") if exp.get(k)]
    if released and exp["normalisation"] != "all_sessions":
        problems.append(
            f"config: experiments.{name}.normalisation = {exp['normalisation']!r} with {released[0]} (a released "
            "model, not trained here): the released models were trained on all_sessions data; "
            "use normalisation: all_sessions"
        )
    init = exp.get("init_from")
    if (
        init is not None
        and not init.startswith(("data:", "file:"))
        and (init not in config["experiments"] or init == name)
    ):
        problems.append(
            f"config: experiments.{name}.init_from = {init!r} is not another experiment "
            "(nor data:<file of the dataset repo> or file:<path> of a checkpoint)"
        )
    return problems


def _stage_problems(config: dict, subject_sessions: dict[int, int]) -> list[str]:
    problems, decoder, refine = [], config["decoder"], config["refine"]
    if decoder["clip"] not in config["clip_models"]:
        problems.append(f"config: decoder.clip = {decoder['clip']!r} is not a key of clip_models")
    if config["dataset"] == "synthetic" and decoder["weights"].startswith("data:"):
        problems.append(
            "config: dataset = synthetic needs decoder.weights = random or train (the synthetic "
            "dataset has no unCLIP checkpoint)"
        )
    for key, spec in (("captions.weights", config["captions"]["weights"]), ("refine.base", refine["base"])):
        if spec == "train" and config["dataset"] != "synthetic":
            problems.append(
                f"config: {key} = train needs dataset = synthetic (only it has captions of the train images)"
            )
    if refine["base"] == "train" and decoder["weights"] != "train":
        problems.append("config: refine.base = train needs decoder.weights = train (it takes the trained VAE)")
    if config["dataset"] == "synthetic":
        syn = config["synthetic"]
        for s, n in subject_sessions.items():
            if s not in syn["subjects"]:
                problems.append(f"config: subject {s} is used but synthetic.subjects = {syn['subjects']}")
            if n > syn["num_sessions"]:
                problems.append(
                    f"config: {n} sessions of subject {s} are used but "
                    f"synthetic.num_sessions = {syn['num_sessions']}"
                )
    return problems
