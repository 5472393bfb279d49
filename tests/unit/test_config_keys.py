"""Each config key in one place: the schema and the dataclass that uses it. A new key is two edits
(checked in a copy of the package), and the checks the schema cannot express run without Snakemake."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fmri_recon import configuration, experiment

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "schemas" / "config.schema.yaml"


def merged(base: dict, overlay: dict) -> dict:
    """``overlay`` on ``base`` as Snakemake merges config files: nested keys update, null removes."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return {k: v for k, v in out.items() if v is not None}


def demo_config(overrides: dict | None = None, schema: Path = SCHEMA) -> dict:
    """config.yaml + demo.yaml (+ ``overrides``), validated with the schema's defaults filled in."""
    from snakemake.utils import validate

    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for overlay in (yaml.safe_load((REPO / "demo.yaml").read_text()), overrides or {}):
        config = merged(config, overlay)
    validate(config, str(schema))
    return config


def test_every_schema_key_of_an_experiment_reaches_its_consumer():
    schema = yaml.safe_load(SCHEMA.read_text())
    keys = set(schema["$defs"]["model"]["properties"])
    routed = (set(experiment.MODEL_KEYS) | set(experiment.TRAIN_KEYS) | set(experiment.DATA_KEYS)
              | set(experiment.RUNTIME_KEYS) | {experiment.CHECKPOINT_KEY, experiment.OUTPUTS_KEY})
    assert keys - routed <= {"allow_test_subject_in_pretraining"}, keys - routed   # read by configuration.check
    from fmri_recon.models import BrainConfig
    from fmri_recon.train.loop import TrainConfig
    from dataclasses import fields

    brain = {f.name for f in fields(BrainConfig)} - set(experiment.FROM_DATA)
    train = {f.name for f in fields(TrainConfig)}
    assert brain == set(experiment.MODEL_KEYS) and brain <= keys       # every model field is a config key
    assert set(experiment.TRAIN_KEYS) == train - set(experiment.NO_EFFECT) and train <= keys


PROBE_SCHEMA = {"      hidden_dim: {type: integer, minimum: 1}\n":
                "      probe_width: {type: integer}\n      probe_rate: {type: number}\n",
                "      hidden_dim: {default: 1024}\n": "      probe_width: {default: 3}\n      probe_rate: {default: 0.5}\n"}
PROBE_CODE = {"models/brain.py": ("    prior_cond_drop_prob: float = 0.2\n", "    probe_width: int = 3\n"),
              "train/config.py": ("    val_images: int = 300", "    probe_rate: float = 0.5\n")}
PROBE_RUN = """
import json, sys
sys.path[:0] = [sys.argv[1], *sys.argv[2].split(":")]
from test_config_keys import demo_config
from fmri_recon import experiment
from fmri_recon.train import job, loop
from tiny_training import fake_data, tiny_cfg, tiny_tc

config = demo_config({"experiments": {"probe": {"probe_width": 7, "probe_rate": 0.25}}}, schema=sys.argv[3])
params = json.loads(experiment.train_params(config, "probe"))
brain = experiment.brain_config(json.loads(experiment.model_params(config, "probe")), [30])
tc = job.train_config(params, {"device": "cpu", "wandb": False, "num_processes": 1})
stats = loop.run(fake_data(), tiny_cfg(probe_width=brain.probe_width), tiny_tc(probe_rate=tc.probe_rate, num_epochs=2),
                 sys.argv[4], {"probe": True})
print(json.dumps({"width": brain.probe_width, "rate": tc.probe_rate, "trained": stats["epochs"]}))
"""


def add_probe_keys(copy: Path) -> None:
    """The two edits of a new key: its schema entry (property and default) and its dataclass field."""
    schema = copy / "schemas" / "config.schema.yaml"
    text = schema.read_text()
    for anchor, new in PROBE_SCHEMA.items():
        assert text.count(anchor) == 1, anchor
        text = text.replace(anchor, anchor + new)
    schema.write_text(text)
    for module, (anchor, new) in PROBE_CODE.items():
        path = copy / "fmri_recon" / module
        lines = path.read_text().splitlines(keepends=True)
        at = next(i for i, line in enumerate(lines) if line.startswith(anchor))
        path.write_text("".join(lines[:at + 1] + [new] + lines[at + 1:]))


@pytest.mark.slow
def test_a_new_model_key_and_train_key_take_two_edits(tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(REPO / "fmri_recon", copy / "fmri_recon", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "schemas", copy / "schemas")
    add_probe_keys(copy)
    env = {**os.environ, "PYTHONPATH": str(copy)}
    out = subprocess.run([sys.executable, "-c", PROBE_RUN, str(copy), f"{Path(__file__).parent}:{REPO / 'tests' / 'support'}",
                          str(copy / "schemas" / "config.schema.yaml"), str(tmp_path / "run")],
                         capture_output=True, text=True, env=env, cwd=copy, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"width": 7, "rate": 0.25, "trained": 2}


def test_demo_config_passes_the_checks():
    assert configuration.check(demo_config()) == []


# NSD rebuilt from its raw release: no trained decoders (only the synthetic dataset has their captions)
RAW = {"dataset": "nsd", "preprocess": {"source": "raw"}, "captions": {"weights": "random"},
       "refine": {"base": "random"}, "decoder": {"weights": "random"}}


@pytest.mark.parametrize("overrides, message", [
    ({"experiments": {"x": {"clip_target": "ViT-H"}}}, "experiments.x.clip_target = 'ViT-H' is not a key of clip_models"),
    ({"experiments": {"x": {"checkpoint": "file:a.pth", "init_from": "lite_bigG"}}}, "has both checkpoint"),
    ({"experiments": {"x": {"init_from": "nothing"}}}, "experiments.x.init_from = 'nothing' is not another experiment"),
    ({"experiments": {"x": {"checkpoint": "file:a.pth", "normalisation": "train_sessions"}}},
     "experiments.x.normalisation = 'train_sessions' with checkpoint (a released model, not trained here): "
     "the released models were trained on all_sessions data"),
    ({"experiments": {"x": {"outputs": "file:evals/m", "normalisation": "train_sessions"}}},
     "experiments.x.normalisation = 'train_sessions' with outputs"),
    ({"decoder": {"clip": "ViT-H"}}, "decoder.clip = 'ViT-H' is not a key of clip_models"),
    ({"experiments": {"x": {"subjects": [3]}}}, "subject 3 is used but synthetic.subjects = [1]"),
    ({"experiments": {"x": {"init_from": "data:train_logs/multisubject_subj02_hypatia/last.pth"}}},
     "was pretrained on subjects 1, 3, 4, 5, 6, 7, 8 (all but 2), so on subject 1's own test images"),
])
def test_each_check_names_the_key_at_fault(overrides, message):
    problems = configuration.check(demo_config(overrides))
    assert len(problems) == 1 and message in problems[0], problems


@pytest.mark.parametrize("overrides, message", [
    ({"preprocess": {"source": "raw"}}, "preprocess.source = raw needs dataset = nsd"),
    ({**RAW, "preprocess": {"source": "raw", "sessions": 1}, "experiments": {"x": {"num_sessions": 2}}},
     "2 sessions of subject 1 are used but preprocess.sessions rebuilds 1"),
    ({**RAW, "subject": 9}, "subject 9 is not an NSD subject (1-8)"),
    ({**RAW, "subject": 4, "preprocess": {"source": "raw", "sessions": 35}},
     "preprocess.sessions = 35, but NSD's subject 4 has 30 sessions"),
    ({**RAW, "subject": 4, "num_sessions": 31}, "31 sessions of subject 4 are used but preprocess.sessions rebuilds 30"),
])
def test_each_preprocess_check_names_the_key_at_fault(overrides, message):
    from fmri_recon import experiment
    from fmri_recon.data import raw_nsd

    config = demo_config(overrides)
    problems = configuration.check(config) + raw_nsd.config_problems(config, experiment.subject_sessions(config))
    assert len(problems) == 1 and message in problems[0], problems
