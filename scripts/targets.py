"""Rule targets: encode every image of the run once with the configured CLIP model."""
import json

from fmri_recon import clip_targets, nsd, runlog

log = runlog.setup(snakemake.log[0])
p = snakemake.params
split = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test)
info = clip_targets.build_cache(split.all_images(), p.data_dir, snakemake.input.weights, snakemake.output[0],
                                json.loads(p.clip), json.loads(p.targets))
log.info("cached targets: %s", info)
