"""Rule blurry: the brain model's low-level branch -> VAE decode -> evals/{name}/{name}_all_blurryrecons.pt."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.decode import reconstruct
from fmri_recon.targets import lowlevel

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p = snakemake.input, snakemake.params
device, dtype = helpers.resolve_device(p.device, p.precision)
split = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test, p.normalisation)
voxels = torch.from_numpy(split.test_voxels())
model = reconstruct.brain_model(inp, p.model, voxels.shape[-1])
vae = lowlevel.load_vae(inp.vae, tiny=p.tiny_vae, device=device, dtype=dtype)
images = reconstruct.blurry_recons(model, voxels, vae, device=device)
with helpers.atomic_output(snakemake.output[0]) as tmp:
    torch.save(images, tmp)
log.info("%d blurry reconstructions %s", len(images), tuple(images.shape[1:]))
