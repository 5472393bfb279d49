# Small input functions and config helpers shared by the rules.
import json
import os
import re
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.logging import logger

from fmri_recon import code_deps
from fmri_recon import configuration
from fmri_recon import experiment as fmri_experiment
from fmri_recon.data import download_plan, nsd, own_build, preprocess, raw_nsd, synthetic
from fmri_recon.predict import settings as predict_settings
from fmri_recon import sweeps as fmri_sweeps

SUBJECT = config["subject"]
DATA = config["data_dir"]
WEIGHTS = config["weights_dir"]
HUB = config["hub"]
ENVS = os.path.join(workflow.basedir, "envs")


def code(script):
    """The rule's script and every package module it imports (fmri_recon.code_deps), as inputs:
    editing one reruns exactly the stages that run it. Downloads take none: a fetched file is
    verified against the hub's checksum and does not depend on our code."""
    return code_deps.script_code(script, Path(workflow.basedir))


def data_path(rel):
    return os.path.join(DATA, rel)


def data_is_given():
    """download: false on real data: data_dir holds what it holds, nothing will fetch the rest."""
    return config["dataset"] in ("nsd", "own") and not config["download"]


def present(paths):
    """`paths` (under data_dir), which with download: false must be there already. Called from
    input functions, so only the files of the jobs a run needs are checked, before any job runs."""
    if data_is_given():
        root = os.path.abspath(DATA) + os.sep  # files made by rules (weights, caches, preprocessing) are not checked
        made = {os.path.abspath(data_path(f)) for f in preprocessed_files()}
        missing = [
            p
            for p in paths
            if os.path.abspath(p).startswith(root) and os.path.abspath(p) not in made and not os.path.exists(p)
        ]
        if missing:
            raise WorkflowError(
                f"download: false, but these files are missing under data_dir ({DATA}): "
                f"{', '.join(os.path.relpath(m, DATA) for m in missing)}. Put them there "
                "(the pscotti/mindeyev2 layout) or set download: true."
            )
    return paths


def data_input(*rels):
    """Input function of dataset files (checked by `present`); one path for one file."""

    def files(wildcards):
        paths = present([data_path(r) for r in rels])
        return paths[0] if len(rels) == 1 else paths

    return files


def optional_data(rel):
    """A dataset file that only adds a metric (region masks, GNet): with download: false and the
    file absent, or voxels of another ROI than theirs (nsdgeneral), None (the stage then leaves
    those columns empty and says why)."""
    path = data_path(rel)
    return None if (data_is_given() and not os.path.exists(path)) or not released_voxels() else path


def released_voxels():
    """Whether the voxels are the released ones (nsdgeneral == 1), which GNet and the region masks describe."""
    return not OWN_DATA and (not RAW_SOURCE or (PRE["roi"], PRE["roi_labels"]) == ("nsdgeneral", [1]))


def spec_file(spec):
    """The file of a `data:<file of the dataset repo>` or `file:<path>` config value."""
    return data_path(spec[len("data:") :]) if spec.startswith("data:") else spec[len("file:") :]


def as_param(obj):
    """Config values as rule params, serialised so that reordering YAML keys changes nothing."""
    return json.dumps(obj, sort_keys=True)


def result_settings(block):
    """The settings of a config block that change a stage's result (as a param of its rules), not its
    resource requests or device (changing those reruns nothing)."""
    return as_param({k: v for k, v in config[block].items() if k not in ("mem_mb", "runtime", "device")})


def experiment(name):
    """The settings of one experiment: `model` defaults, its overrides, data defaults."""
    return fmri_experiment.resolve(config, name)


def used_clip_models():
    return fmri_experiment.used_clip_models(config)


def subject_sessions(clip=None):
    return fmri_experiment.subject_sessions(config, clip)


# --------------------------------------------------------------------------- raw NSD (preprocess.source: raw)
PRE = config["preprocess"]
RAW_SOURCE = config["dataset"] == "nsd" and PRE["source"] == "raw"
# A lab's own scans (dataset: own, rules/own_data.smk) and the new volumes of predict (rules/predict.smk).
OWN = config["own"]
OWN_DATA = config["dataset"] == "own"
PREDICT = config["predict"]


def raw_path(key):
    return os.path.join(PRE["raw_dir"], key)


def raw_subjects():
    """Subject -> sessions rebuilt from raw NSD: every subject the config reads."""
    return {s: raw_nsd.sessions_of(s, PRE["sessions"]) for s in sorted(subject_sessions())} if RAW_SOURCE else {}


def raw_keys():
    """Every bucket key the preprocessing of this config reads."""
    keys = [raw_nsd.DESIGN, raw_nsd.STIM_INFO] if RAW_SOURCE else []
    keys += [raw_nsd.STIMULI] if RAW_SOURCE and PRE["images"] == "raw" else []
    for s, n in raw_subjects().items():
        keys += raw_nsd.subject_keys(s, n, PRE)
    return keys


def raw_subject_inputs(s):
    """The raw files of subject `s` (one preprocessing rule per subject, so no wildcard)."""
    n = raw_subjects()[s]
    keys = raw_nsd.subject_keys(s, n, PRE)
    return {
        "betas": [raw_path(k) for k in keys[:n]],
        "roi": raw_path(keys[n]),
        "responses": raw_path(keys[n + 1]),
        "design": raw_path(raw_nsd.DESIGN),
        "stim_info": raw_path(raw_nsd.STIM_INFO),
    }


def raw_present():
    """download: false with a raw source: the bucket files must be in raw_dir already; all missing
    ones are named before any job runs."""
    missing = [k for k in raw_keys() if not os.path.exists(raw_path(k))]
    if missing and not config["download"]:
        raise WorkflowError(
            f"download: false, but {len(missing)} of NSD's files are missing under preprocess.raw_dir "
            f"({PRE['raw_dir']}): {', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}. Put them "
            "there under their bucket keys or set download: true."
        )


def preprocessed_files():
    """Files of the dataset layout the preprocess rules make (none with source: release)."""
    files = (
        [f for f in preprocess.SHARED_OUTPUTS if PRE["images"] == "raw" or f != nsd.IMAGES_FILE] if RAW_SOURCE else []
    )
    for s, n in raw_subjects().items():
        files += [*preprocess.subject_outputs(s, n), preprocess.zscore_file(s)]
    return files + (own_build.outputs(SUBJECT, len(OWN["sessions"])) if OWN_DATA else [])


def needed_files(subjects=None):
    """The hub files this config reads (of `subjects` only, if given), relative to data_dir.
    Model files of the dataset repo (data:...) are included when `subjects` is None."""
    files = set()
    for s, n in subject_sessions().items():
        if subjects is None or s in subjects:
            files.update(nsd.required_files(s, n, config["new_test"], captions=not OWN_DATA))
    if subjects is None:  # model and mask files of the dataset repo the later stages read
        ev = config["evaluate"]
        files.update([ev["masks"]] if released_voxels() else [])
        specs = [DECODER["weights"], ev["gnet"] if released_voxels() else ""]
        specs += [released_converter(c) for c in used_clip_models() if released_converter(c)]
        specs += [experiment(e).get(k) or "" for e in config["experiments"] for k in ("init_from", "checkpoint")]
        specs += [f for e in config["experiments"] for f in released_outputs(e).values()]
        if blurry_experiments():
            specs += [LOWLEVEL["vae"], LOWLEVEL["teacher"]]
        files.update(spec[len("data:") :] for spec in specs if spec.startswith("data:"))
    return sorted(files)


def hub_files():
    """The files of the dataset repo to download: what the config reads, less what preprocessing makes."""
    return sorted(set(needed_files()) - set(preprocessed_files()))


# --------------------------------------------------------------------------- blurry branch
LOWLEVEL = config["lowlevel"]


def blurry_experiments():
    return [e for e in config["experiments"] if experiment(e)["blurry_recon"]]


def has_blurry(name):
    return name in blurry_experiments()


def tiny_lowlevel(kind):
    """Whether the blurry branch's `vae` or `teacher` is the tiny architecture (random or trained here)."""
    return LOWLEVEL[kind] in ("random", "train")


def lowlevel_weights(kind):
    """The file of the blurry branch's `vae` or `teacher`: random or train (tiny), data: or file:."""
    spec = LOWLEVEL[kind]
    if spec in ("random", "train"):
        return f"{WEIGHTS}/{'random' if spec == 'random' else 'trained'}/lowlevel/{kind}.pth"
    return spec_file(spec)


def lowlevel_sessions():
    """{subject: sessions} the experiments with the blurry branch read."""
    return fmri_experiment.sessions_of(config, blurry_experiments())


# --------------------------------------------------------------------------- decoding stages
DECODER = config["decoder"]
UPPER = "upper_bound_"


def recon_names():
    """What the decoding stages run on: every experiment, and per CLIP space an upper bound
    (the decoder fed the ground-truth targets of the test images instead of predictions)."""
    return list(config["experiments"]) + [UPPER + c for c in used_clip_models()]


def run_kind(name):
    """What a decoding run is: a trained `experiment`, or an `upper_bound` (ground-truth targets).
    The one place that tells them apart; rules pass it to their scripts as the `kind` param."""
    return "upper_bound" if name.startswith(UPPER) else "experiment"


def recon_clip(name):
    return name[len(UPPER) :] if run_kind(name) == "upper_bound" else experiment(name)["clip_target"]


def weights_dir(spec, kind):
    """Folder of a diffusers/transformers model: random, hub snapshot, or converted checkpoint."""
    if spec == "random":
        return f"{WEIGHTS}/random/{kind}"
    if spec == "train":  # a tiny one trained on this run's train images (rule train_decoder)
        return f"{WEIGHTS}/trained/{kind}"
    if spec.startswith("hf://"):
        return f"{WEIGHTS}/snapshots/{spec[len('hf://'):]}"
    if spec.startswith("data:"):
        return f"{WEIGHTS}/converted/{kind}"
    return spec[len("file:") :]  # a single-file checkpoint the user provides


def released_converter(clip):
    """The config's released converter of CLIP space `clip` into GIT's space (data: or file:), or None."""
    spec = config["captions"]["converters"].get(clip)  # a space not listed trains its own
    return None if spec in (None, "train") else spec


def converters(name):
    """Converter files the decoding of `name` needs: into the decoder's space and GIT's (a released
    one where the config names it, as upstream's bigG_to_L_epoch8.pth, else one trained on images)."""
    clip = recon_clip(name)
    released = released_converter(clip)
    if released:
        out = {"to_git": present([spec_file(released)])[0]}
    else:
        out = {"to_git": f"cache/converters/{clip}_to_git.pt"}
    if clip != DECODER["clip"]:
        out["to_decoder"] = f"cache/converters/{clip}_to_{DECODER['clip']}.pt"
    return out


def evals_file(name, kind):
    return f"evals/{name}/{name}_all_{kind}.pt"


def subject_summary(subject=SUBJECT):
    return f"cache/data/subj{int(subject):02d}.json"


def targets_path(clip):
    return f"cache/clip_targets/{clip}.hdf5"


def train_stats(name):
    return f"train_logs/{name}/train_stats.json"


def released_outputs(name):
    """{kind: file} of the released evals folder an experiment only scores (`outputs`: data:evals/<model>
    or file:<folder>, holding <model>_all_<kind>.pt as upstream names them), or {}."""
    spec = experiment(name).get(fmri_experiment.OUTPUTS_KEY) if run_kind(name) == "experiment" else None
    if not spec:
        return {}
    folder = spec.rstrip("/")
    model = os.path.basename(folder)
    kinds = [*fmri_experiment.RELEASED_OUTPUTS, *(["blurryrecons"] if has_blurry(name) else [])]
    return {k: f"{folder}/{model}_all_{k}.pt" for k in kinds}


def names_regex(names):
    """A wildcard constraint matching exactly `names` (none: a pattern that matches nothing)."""
    return "|".join(re.escape(n) for n in names) or "(?!)"


def decoded_names():
    """The runs our decoding stages make (reconstruct, blurry, refine): all but scored-only ones."""
    return [n for n in recon_names() if not released_outputs(n)]


def model_params(name):
    """An experiment's brain architecture, as a param (what a released checkpoint must fit)."""
    return fmri_experiment.model_params(config, name) if run_kind(name) == "experiment" else ""


def brain_model_inputs(name):
    """What the stages running an experiment's brain model read: the released checkpoint it names
    (`checkpoint`: no training in the DAG), its training's stats (its last.pth lies beside them),
    or nothing (`outputs`: released outputs, no model)."""
    spec = experiment(name).get(fmri_experiment.CHECKPOINT_KEY)
    if released_outputs(name):
        return {}
    return {"released": present([spec_file(spec)])[0]} if spec else {"train": train_stats(name)}


def clip_weights(clip):
    """Local file of a clip_models entry: a hub file under weights_dir/hub, or a random model."""
    spec = config["clip_models"][clip]["weights"]
    if spec == "random":
        return f"{WEIGHTS}/random/open_clip/{clip}.safetensors"
    return f"{WEIGHTS}/hub/{spec[len('hf://'):]}"


def planned_hub_files():
    """[repo_type, repo_id, filename, local path] of every single hub file the config downloads:
    the dataset repo's (data and model files) and the CLIP weights. Whole-repo snapshots (GIT,
    SD-XL) are not among them."""
    out = []
    if config["dataset"] in ("nsd", "own") and config["download"]:
        out += [["dataset", HUB["repo_id"], f, data_path(f)] for f in hub_files()]
        out += [["bucket", PRE["url"], k, raw_path(k)] for k in raw_keys()]
    clips = {DECODER["clip"], *used_clip_models()}
    specs = [config["clip_models"][c]["weights"] for c in sorted(clips)] + [config["evaluate"]["clip_weights"]]
    for spec in dict.fromkeys(s for s in specs if s.startswith("hf://")):
        org, repo, filename = spec[len("hf://") :].split("/", 2)
        out.append(["model", f"{org}/{repo}", filename, f"{WEIGHTS}/hub/{spec[len('hf://'):]}"])
    return out


def announce_downloads(plan):
    """Say on every run that still has hub files to fetch how many, and how many GB once the plan
    rule's table `plan` has their sizes (fmri_recon.data.download_plan.summary)."""
    todo = [(repo, name) for _, repo, name, local in planned_hub_files() if not os.path.exists(local)]
    if todo:
        logger.info(download_plan.summary(todo, plan))


# --------------------------------------------------------------------------- input functions of the stages
REFINE = config["refine"]


def refine_inputs(w):
    """The SD-XL weights; for a single-file checkpoint also the folder of configs and tokenizers."""
    inputs = {"base": weights_dir(REFINE["base"], "sdxl")}
    if REFINE["base"].startswith("file:"):
        spec = REFINE["single_file_config"]
        inputs["single_file_config"] = (
            f"{WEIGHTS}/configs/{spec[len('hf://'):]}" if spec.startswith("hf://") else weights_dir(spec, "sdxl")
        )
    return inputs


def train_inputs(w):
    exp = experiment(w.experiment)
    inputs = {
        "targets": targets_path(exp["clip_target"]),
        "summaries": [subject_summary(s) for s in exp["subjects"]],
        "data": present([data_path(f) for f in needed_files(exp["subjects"])]),
    }
    init = exp.get("init_from")
    if init and init.startswith(("data:", "file:")):  # a released checkpoint (or any last.pth)
        inputs["init_ckpt"] = present([spec_file(init)])[0]
    elif init:
        inputs["init"] = train_stats(init)
    if exp["blurry_recon"]:
        inputs.update(lowlevel="cache/lowlevel_targets.hdf5", teacher=present([lowlevel_weights("teacher")])[0])
    return inputs


def reconstruct_inputs(w):
    inputs = {
        "decoder": weights_dir(DECODER["weights"], "unclip"),
        "git": weights_dir(config["captions"]["weights"], "git"),
        "targets": targets_path(recon_clip(w.name)),
        "summary": subject_summary(),
        **converters(w.name),
    }
    if run_kind(w.name) == "experiment":
        inputs.update(brain_model_inputs(w.name))
    return inputs


def decoder_training_inputs(w):
    """A tiny decoder's training data: the train images, their tokens (unCLIP) or captions (GIT,
    SD-XL, which also takes the trained unCLIP VAE); the split says what is test."""
    inputs = {
        "images": data_input(nsd.IMAGES_FILE)(w),
        "summaries": [subject_summary(s) for s in subject_sessions()],
    }
    if w.kind == "unclip":
        inputs["targets"] = targets_path(DECODER["clip"])
    else:
        inputs["captions"] = data_path(synthetic.CAPTIONS_FILE)
    if w.kind == "sdxl":
        inputs["unclip"] = weights_dir("train", "unclip")
    return inputs


def evaluate_inputs(w):
    ev, name = config["evaluate"], w.name
    if OWN_DATA:
        raise WorkflowError(
            f"evaluate {name}: dataset = own has no reference captions of its test images, which the "
            "metric tables need; decode with `snakemake predict` (docs/own_data.md)"
        )
    check_wordnet()
    inputs = {
        "recons": evals_file(name, "recons"),
        "gt_images": data_input(nsd.EVAL_IMAGES)(w),
        "coco": data_input(nsd.EVAL_CAPTIONS)(w),
        "git_captions": data_input(nsd.EVAL_GIT_CAPTIONS)(w),
        "targets": targets_path(recon_clip(name)),
        "summary": subject_summary(),
        "predcaptions": evals_file(name, "predcaptions"),
    }
    masks = optional_data(ev["masks"])
    if masks:
        inputs["masks"] = masks
    if run_kind(name) == "experiment":
        inputs.update(
            enhanced=evals_file(name, "enhancedrecons"),
            clipvoxels=evals_file(name, "clipvoxels"),
            **brain_model_inputs(name),
        )
    if has_blurry(name):
        inputs["blurry"] = evals_file(name, "blurryrecons")
    inputs.update(metric_net_inputs(), gt_features=rules.gt_features.output[0])
    gnet = optional_data(ev["gnet"][len("data:") :]) if ev["gnet"].startswith("data:") else None
    if gnet:
        inputs["gnet"] = gnet
    return inputs


def metric_net_inputs():
    """The weights files of the image metrics' networks (none with random nets)."""
    ev, inputs = config["evaluate"], {}
    if ev["nets"] == "pretrained":
        inputs.update({f"net_{n}": f"{WEIGHTS}/eval/{n}.pth" for n in ("alexnet", "inception", "efficientnet", "swav")})
    if ev["clip_weights"] != "random":
        inputs["clip_weights"] = f"{WEIGHTS}/hub/{ev['clip_weights'][len('hf://'):]}"
    return inputs


def check_wordnet():
    """METEOR's WordNet, checked while the DAG is built (before any job) when evaluate will run."""
    from fmri_recon.evaluate.metrics.captions import WordNetMissingError, ensure_wordnet

    try:
        ensure_wordnet()
    except WordNetMissingError as e:
        raise WorkflowError(f"the evaluate stage will need WordNet: {e}") from None


def overview_columns():
    """The overview figure's columns after the ground truth, as [title, file, file blended 3:1 into
    it or None]: each upper bound, then each experiment the config names (not a sweep's points)
    decoded here, by the stages its rows score (a blurry experiment's enhanced row is the blend)."""
    swept = fmri_sweeps.made_names(SWEEPS)
    names = sorted(n for n in decoded_names() if n not in swept)  # the YAML's key order reruns nothing
    columns = [
        [f"upper bound\n{recon_clip(n)}", evals_file(n, "recons"), None] for n in names if run_kind(n) == "upper_bound"
    ]
    for name in (n for n in names if run_kind(n) == "experiment"):
        columns.append([f"{name}\nrecon", evals_file(name, "recons"), None])
        if has_blurry(name):
            columns.append([f"{name}\nblurry", evals_file(name, "blurryrecons"), None])
        columns.append([f"{name}\nrefined", evals_file(name, "enhancedrecons"), None])
        if has_blurry(name):
            columns.append(
                [f"{name}\nblend (scored)", evals_file(name, "enhancedrecons"), evals_file(name, "blurryrecons")]
            )
    return columns


def overview_captions():
    """The overview's caption column: the predicted captions of its first experiment by name."""
    first = min(n for n in decoded_names() if run_kind(n) == "experiment")
    return first, evals_file(first, "predcaptions")


# --------------------------------------------------------------------------- cost of each stage
def _job_files(rule, gpus=1, **wildcards):
    """{benchmark, log, gpus} of one job of `rule` (its file names stay in the rule)."""
    return {
        "benchmark": expand(rule.benchmark, **wildcards)[0],
        "log": expand(rule.log[0], **wildcards)[0],
        "gpus": gpus,
    }


def cost_specs():
    """{name: {stage: {benchmark, log, gpus}}}: the jobs behind each row of tables/metrics.csv."""
    out = {}
    for name in recon_names():
        stages = {}
        if run_kind(name) == "experiment" and "train" in brain_model_inputs(name):
            stages["train"] = _job_files(rules.train, experiment(name)["num_processes"], experiment=name)
        if name in decoded_names():
            stages["reconstruct"] = _job_files(rules.reconstruct, name=name)
            if has_blurry(name):
                stages["blurry"] = _job_files(rules.blurry, name=name)
            if run_kind(name) == "experiment":
                stages["refine"] = _job_files(rules.refine, name=name)
        stages["evaluate"] = _job_files(rules.evaluate, name=name)
        out[name] = stages
    return out


def cost_files():
    return [f for stages in cost_specs().values() for job in stages.values() for f in (job["benchmark"], job["log"])]


# --------------------------------------------------------------------------- predict
def predict_dir(file):
    if not PREDICT["experiment"]:
        raise WorkflowError("predict: set predict.experiment (the model) and predict.sessions (docs/own_data.md)")
    return f"predictions/{PREDICT['experiment']}/{file}"


def predict_voxel_inputs(w):
    """The new volumes, their mask and table, and (zscore: training) the training data's statistics."""
    files = predict_settings.settings(config)
    inputs = {"sessions": files["sessions"], "mask": files["mask"], "trials": files["trials"]}
    if PREDICT["zscore"] == "training":
        inputs["zscore"] = data_path(preprocess.zscore_file(SUBJECT))
    return inputs


def predict_decode_inputs(w):
    """The model of `experiment` and the decoders, as reconstruct takes them (no targets: no truth)."""
    name = w.experiment
    if released_outputs(name):
        raise WorkflowError(f"predict: experiment {name} only scores released outputs (outputs:); it has no model")
    return {
        "decoder": weights_dir(DECODER["weights"], "unclip"),
        "git": weights_dir(config["captions"]["weights"], "git"),
        **converters(name),
        **brain_model_inputs(name),
    }


def predict_subject_index(name):
    """The ridge of subject `subject` in the experiment's model (its place in `subjects`)."""
    subjects = experiment(name)["subjects"]
    if SUBJECT not in subjects:
        raise WorkflowError(f"predict: experiment {name} has no ridge for subject {SUBJECT} (its subjects: {subjects})")
    return subjects.index(SUBJECT)


# Checks the schema cannot express (fmri_recon.configuration.check), before any job.
PROBLEMS = configuration.check(config) + raw_nsd.config_problems(config, subject_sessions())
PROBLEMS += own_build.config_problems(config, subject_sessions()) + predict_settings.config_problems(config)
if PROBLEMS:
    raise WorkflowError("\n".join(PROBLEMS))
raw_present()


def preprocess_settings(*keys):
    """The preprocess settings a rule's result depends on, as a param."""
    return as_param({k: PRE[k] for k in keys})
