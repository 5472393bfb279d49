"""One train job from its spec (what rule train resolved: paths, the experiment's settings), in
this process or, as ``python -m fmri_recon.train.job SPEC.json``, as one rank of a torchrun launch
(fmri_recon.train.distributed): every rank loads the data and builds the model the same way."""
from __future__ import annotations

import json
import logging
import sys
from dataclasses import fields
from pathlib import Path

log = logging.getLogger(__name__)


def train_config(exp: dict, spec: dict):
    """The TrainConfig of an experiment's train params (which also hold model and data keys): its
    fields that the experiment sets, and the job's device, logging and process count."""
    from fmri_recon.train import loop

    train_keys = {f.name for f in fields(loop.TrainConfig)}
    return loop.TrainConfig.from_dict({**{k: v for k, v in exp.items() if k in train_keys},
                                       "device": spec["device"], "wandb": spec["wandb"],
                                       "num_processes": spec["num_processes"]})


def run(spec: dict) -> dict:
    """Train the experiment of ``spec``; the run's summary (fmri_recon.train.loop.run)."""
    import torch

    from fmri_recon import experiment
    from fmri_recon.targets import lowlevel
    from fmri_recon.train import dataset, loop

    exp = spec["experiment"]
    torch.set_num_threads(max(spec["threads"] // spec["num_processes"], 1))
    blurry = exp["blurry_recon"]
    data = dataset.load(spec["data_dir"], exp["subjects"], exp["num_sessions"], exp["new_test"],
                           spec["targets"], lowlevel_path=spec["lowlevel"] if blurry else None,
                           normalisation=exp["normalisation"])
    teacher = lowlevel.load_teacher(spec["teacher"], tiny=spec["tiny_teacher"]) if blurry else None
    brain = experiment.brain_config(exp, [s.num_voxels for s in data.subjects])
    tc = train_config(exp, spec)
    desc = {"subjects": exp["subjects"], "num_sessions": exp["num_sessions"], "clip": exp["clip"],
            "normalisation": exp["normalisation"], "num_voxels": brain.num_voxels, "init_from": spec["init"]}
    if blurry:
        desc["lowlevel"] = {"targets": spec["lowlevel"], "teacher": spec["teacher"]}
    return loop.run(data, brain, tc, spec["out_dir"], desc, init_from=spec["init"], teacher=teacher)


def main() -> None:
    from fmri_recon import runlog
    from fmri_recon.train import distributed

    spec = json.loads(Path(sys.argv[1]).read_text())
    runlog.setup(None)                        # stderr, which the launcher appends to the rule's log
    rank = distributed.world_from_env()[0]
    for handler in logging.getLogger().handlers:
        handler.setFormatter(logging.Formatter(f"%(asctime)s rank {rank} %(levelname)s %(name)s: %(message)s"))
    stats = run(spec)
    if rank == 0 and "final" in stats:
        log.info("finished: %s", json.dumps(stats["final"]))


if __name__ == "__main__":
    main()
