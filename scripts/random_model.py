"""Rule random_model: a tiny randomly initialised model of a real class, saved like the real one."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
from fmri_recon import runlog
from fmri_recon.decode import weights

log = runlog.setup(snakemake.log[0])
kind, p, out = snakemake.wildcards.kind, snakemake.params, snakemake.output[0]
if kind == "unclip":
    weights.build_tiny_unclip(out, context_dim=p.context_dim, seq_len=p.seq_len, seed=p.seed)
elif kind == "git":
    weights.build_tiny_git(out, seed=p.seed)
else:
    weights.build_tiny_sdxl_img2img(out, seed=p.seed)
log.info("random %s model -> %s", kind, out)
