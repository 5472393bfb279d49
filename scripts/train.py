"""Rule train: train (or resume) one experiment's brain model and diffusion prior, in this process
or, with ``num_processes`` > 1 (the GPUs the rule asks for), in that many ranks under torchrun."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json
from pathlib import Path

from fmri_recon import helpers, runlog
from fmri_recon.train import distributed, job

log = runlog.setup(snakemake.log[0])
p, inp = snakemake.params, snakemake.input
# init_from: another experiment (its last.pth, beside the train stats it declares) or a checkpoint file
init = Path(inp.init).parent / "last.pth" if "init" in inp.keys() else inp.get("init_ckpt")
exp = json.loads(p.experiment)
spec = {"experiment": exp, "data_dir": p.data_dir, "targets": inp.targets,
        "lowlevel": inp.get("lowlevel"), "teacher": inp.get("teacher"), "tiny_teacher": p.tiny_teacher,
        "device": p.device, "wandb": p.wandb, "out_dir": p.out_dir, "init": str(init) if init else None,
        "threads": snakemake.threads, "num_processes": snakemake.resources.gpu}
if spec["num_processes"] == 1:
    stats = job.run(spec)
    log.info("finished: %s", json.dumps(stats["final"]))
else:
    spec_file = Path(p.out_dir) / "job_spec.json"     # what every rank reads (kept: it says how the run was made)
    helpers.write_json(spec_file, spec)
    log.info("launching %d training processes (torchrun); their output follows", spec["num_processes"])
    distributed.launch(["-m", "fmri_recon.train.job", str(spec_file)], spec["num_processes"],
                       Path(snakemake.log[0]), snakemake.threads)
