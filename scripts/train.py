"""Rule train: train (or resume) one experiment's brain model and diffusion prior."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
from dataclasses import fields
from pathlib import Path

import torch

from fmri_recon import experiment, lowlevel, runlog, train, train_data

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
p = snakemake.params
exp = json.loads(p.experiment)
inp = snakemake.input
blurry = exp["blurry_recon"]
data = train_data.load(p.data_dir, exp["subjects"], exp["num_sessions"], exp["new_test"], inp.targets,
                       lowlevel_path=inp.lowlevel if blurry else None)
teacher = lowlevel.load_teacher(inp.teacher, tiny=p.tiny_teacher) if blurry else None
brain = experiment.brain_config(exp, [s.num_voxels for s in data.subjects])
train_keys = {f.name for f in fields(train.TrainConfig)}       # the experiment also holds model and data keys
tc = train.TrainConfig.from_dict({**{k: v for k, v in exp.items() if k in train_keys},
                                  "device": p.device, "wandb": p.wandb})
# init_from: another experiment (its last.pth, beside the train stats it declares) or a checkpoint file
init = Path(inp.init).parent / "last.pth" if "init" in inp.keys() else inp.get("init_ckpt")
desc = {"subjects": exp["subjects"], "num_sessions": exp["num_sessions"], "clip": exp["clip"],
        "num_voxels": brain.num_voxels, "init_from": str(init) if init else None}
if blurry:
    desc["lowlevel"] = {"targets": inp.lowlevel, "teacher": inp.teacher}
stats = train.run(data, brain, tc, p.out_dir, desc, init_from=init, teacher=teacher)
log.info("finished: %s", json.dumps(stats["final"]))
