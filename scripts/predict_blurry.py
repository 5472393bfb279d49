"""Rule predict_blurry: the new voxels through the model's low-level branch -> VAE decode."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import torch

from fmri_recon import helpers, runlog
from fmri_recon.decode import reconstruct
from fmri_recon.predict import prepared
from fmri_recon.targets import lowlevel

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p = snakemake.input, snakemake.params
device, dtype = helpers.resolve_device(p.device, p.precision)
new = prepared.read(inp.voxels)
voxels = prepared.as_trained(new["voxels"], p.normalisation, p.data_dir, p.subject, p.num_sessions, p.new_test)
model = reconstruct.brain_model(inp, p.model, voxels.shape[-1])
vae = lowlevel.load_vae(inp.vae, tiny=p.tiny_vae, device=device, dtype=dtype)
images = reconstruct.blurry_recons(model, torch.from_numpy(voxels), vae, device=device, subj_idx=p.subject_index)
with helpers.atomic_output(snakemake.output[0]) as tmp:
    torch.save(images, tmp)
log.info("%d blurry predictions %s", len(images), tuple(images.shape[1:]))
