"""Rule evaluate: score one experiment (or upper bound) with MindEye2's protocol -> table rows + grid."""
import sys

sys.path.insert(0, f"{snakemake.scriptdir}/..")  # this checkout's fmri_recon, installed or not
import json

import torch

from fmri_recon import helpers, runlog
from fmri_recon.data import nsd
from fmri_recon.evaluate import figures, score, tables
from fmri_recon.targets.clip_targets import TargetCache
from fmri_recon.evaluate.metrics import brain as brain_metrics
from fmri_recon.evaluate.metrics import captions as caption_metrics

log = runlog.setup(snakemake.log[0])
torch.set_num_threads(snakemake.threads)
inp, p = snakemake.input, snakemake.params
ev = json.loads(p.settings)
device = helpers.resolve_device(p.device)[0]
upper_bound = p.kind == "upper_bound"
gt = score.load_pt(inp.gt_images).float()
recons = score.load_pt(inp.recons).float()
images = {"upper_bound": recons} if upper_bound else {"recon": recons, "enhanced": score.load_pt(inp.enhanced).float()}
refined = images.get("enhanced")
if p.blurry:                    # upstream scores the refined images blended with the blurry ones
    images["blurry"] = score.load_pt(inp.blurry).float()
    images["enhanced"] = score.blend_blurry(refined, images["blurry"], ev["blend_blurry"])

models = score.metric_models(ev, inp, device)
gt_features = score.read_ground_truth_features(inp.gt_features, len(gt))
voxels = score.measured_voxels(p.data_dir, p.subject, p.num_sessions, p.new_test)
notes = score.missing_brain_inputs(ev, inp.keys())
if notes:                       # the rule left out absent masks or GNet (download: false)
    log.warning("%s", notes)
    gnet = masks = None
else:
    gnet = (brain_metrics.GNet8Encoder.load_upstream(inp.gnet, device=device) if "gnet" in inp.keys()
            else brain_metrics.GNet8Encoder(subjects={p.subject: voxels.shape[1]}, seed=0))
    masks = brain_metrics.read_masks(inp.masks, p.subject)
image, brain = score.score_images(images, gt, models, gnet, p.subject, voxels, masks, device, ev["batch_size"],
                                     gt_features=gt_features)

train_stats = None
split = nsd.open_split(p.data_dir, p.subject, p.num_sessions, p.new_test)
clip_text = score.clip_text_model(ev["clip_arch"], inp.get("clip_weights"), device)
captioning = dict(sentence_model=caption_metrics.load_sentence_model(device), clip_text=clip_text)
texts = [score.load_pt(inp[k]) for k in ("predcaptions", "coco", "git_captions")]
if upper_bound:                 # captions from the ground-truth tokens: the captioning path's own bound
    model_scores = score.score_captions(*texts, **captioning)
else:
    model_scores = score.score_brain_model(
        score.load_pt(inp.clipvoxels), TargetCache(inp.targets).get(split.test_images), *texts, **captioning,
        draws=ev["retrieval_draws"], draw_size=ev["retrieval_size"])
    if "train" in inp.keys():   # a released checkpoint's experiment has no training of ours
        train_stats = json.loads(open(inp.train).read())
rows = tables.experiment_rows(snakemake.wildcards.name, n_test_images=len(gt), subject=p.subject, image=image, brain=brain,
                              retrieval=model_scores.get("retrieval"), captions=model_scores.get("captions"),
                              captions_relative=model_scores.get("captions_relative"), train_stats=train_stats,
                              notes=notes)
tables.write_table(rows, snakemake.output.table)
figures.grid_png(score.grid_columns(gt, images, refined), [str(c) for c in texts[0]], snakemake.output.grid,
                  caption_title="caption from true tokens" if upper_bound else "predicted caption")
log.info("rows: %s", rows)
