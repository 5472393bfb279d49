# Evaluate: MindEye2's metric protocol per experiment -> tables/{name}.csv and a picture grid;
# then every experiment side by side in tables/metrics.csv (the workflow's main target).
EVAL = config["evaluate"]


def evaluate_inputs(w):
    ev, name = config["evaluate"], w.name
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


# ---- cost of each stage: the jobs behind each row of tables/metrics.csv
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


# Pretrained feature networks of the image metrics (torchvision / SwAV download URLs).
localrules:
    eval_weights,


rule eval_weights:
    output:
        f"{WEIGHTS}/eval/{{net}}.pth",
    log:
        "logs/eval_weights/{net}.log",
    benchmark:
        "benchmarks/eval_weights/{net}.tsv"
    wildcard_constraints:
        net="alexnet|inception|efficientnet|swav",
    # downloads run first, so a late stage's missing file stops the run before any training
    priority: 100
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    script:
        "../scripts/eval_weights.py"


# Released reconstructions (an experiment's `outputs`: upstream's evals/<model>/ folder) as the
# files evaluate reads: scoring them checks our metrics against the paper's numbers.
rule released_output:
    input:
        lambda w: present([spec_file(released_outputs(w.name)[w.kind])]),
        code=code("released_output.py"),
    output:
        evals_file("{name}", "{kind}"),
    log:
        "logs/released_output/{name}_{kind}.log",
    wildcard_constraints:
        name=names_regex([n for n in recon_names() if released_outputs(n)]),
        kind=names_regex([*fmri_experiment.RELEASED_OUTPUTS, "blurryrecons"]),
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/released_output.py"


# The ground truth's features for the network metrics: the same for every evaluate job of a run.
rule gt_features:
    input:
        unpack(lambda w: metric_net_inputs()),
        gt_images=data_input(nsd.EVAL_IMAGES),
        code=code("gt_features.py"),
    output:
        "cache/eval_gt_features.safetensors",
    log:
        "logs/gt_features.log",
    benchmark:
        "benchmarks/gt_features.tsv"
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=EVAL["mem_mb"],
        runtime=EVAL["runtime"],
        gpu=1,
    params:
        settings=as_param({k: EVAL[k] for k in ("nets", "clip_arch", "clip_weights", "batch_size")}),
        device=EVAL["device"],
    script:
        "../scripts/gt_features.py"


rule evaluate:
    input:
        unpack(evaluate_inputs),
        code=code("evaluate.py"),
    output:
        table="tables/{name}.csv",
        grid=report("evals/{name}/{name}_grid.png", category="Reconstructions"),
    log:
        "logs/evaluate/{name}.log",
    benchmark:
        "benchmarks/evaluate/{name}.tsv"
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 2
    resources:
        mem_mb=EVAL["mem_mb"],
        runtime=EVAL["runtime"],
        gpu=1,
    params:
        settings=result_settings("evaluate"),
        device=EVAL["device"],
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
        kind=lambda w: run_kind(w.name),
        blurry=lambda w: has_blurry(w.name),
    script:
        "../scripts/evaluate.py"


rule metrics_table:
    input:
        tables=[f"tables/{n}.csv" for n in recon_names()],
        costs=lambda w: cost_files(),
        code=code("metrics_table.py"),
    output:
        table=report("tables/metrics.csv", category="Metrics"),
        chart=report("tables/metrics.png", category="Metrics"),
    log:
        "logs/metrics_table.log",
    benchmark:
        "benchmarks/metrics_table.tsv"
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        costs=lambda w: as_param(cost_specs()),
    script:
        "../scripts/metrics_table.py"


# The reconstructions side by side: the ground truth, each upper bound, each experiment's stages.
rule overview:
    input:
        gt_images=data_input(nsd.EVAL_IMAGES),
        images=lambda w: sorted({f for _, *files in overview_columns() for f in files if f}),
        captions=lambda w: overview_captions()[1],
        code=code("overview.py"),
    output:
        report("tables/overview.png", category="Reconstructions"),
    log:
        "logs/overview.log",
    benchmark:
        "benchmarks/overview.tsv"
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        columns=lambda w: as_param(overview_columns()),
        caption_title=lambda w: f"caption ({overview_captions()[0]})",
        blend=EVAL["blend_blurry"],
        rows=EVAL["overview_rows"],
    script:
        "../scripts/overview.py"


# What people look at: the sweeps' seed groups, quality against cost, the learning curve over
# sessions, and the results page that links them (all generated from the metrics table).
rule results:
    input:
        table=rules.metrics_table.output.table,
        chart=rules.metrics_table.output.chart,
        overview=rules.overview.output[0],
        code=code("results.py"),
    output:
        sweeps=report("tables/sweeps.csv", category="Exploration"),
        pareto=report("tables/pareto.png", category="Exploration"),
        learning_curve=report("tables/learning_curve.png", category="Exploration"),
        page=report("tables/results.md", category="Exploration"),
    log:
        "logs/results.log",
    benchmark:
        "benchmarks/results.tsv"
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    params:
        sweeps=as_param(SWEEPS),
    script:
        "../scripts/results.py"
