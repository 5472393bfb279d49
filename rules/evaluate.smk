# Evaluate: MindEye2's metric protocol per experiment -> tables/{name}.csv and a picture grid;
# then every experiment side by side in tables/metrics.csv (the workflow's main target).
EVAL = config["evaluate"]


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
        # Not the experiment's normalisation: brain correlation scores images against the measured
        # test voxels, which must be one ground truth for every run compared (the file as it is).
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
