# Evaluate: MindEye2's metric protocol per experiment -> tables/{name}.csv and a picture grid;
# then every experiment side by side in tables/metrics.csv (the workflow's main target).
EVAL = config.get("evaluate", {})


# Pretrained feature networks of the image metrics (torchvision / SwAV download URLs).
localrules:
    eval_weights,


rule eval_weights:
    # downloads run first, so a late stage's missing file stops the run before any training
    priority: 100
    output:
        f"{WEIGHTS}/eval/{{net}}.pth",
    wildcard_constraints:
        net="alexnet|inception|efficientnet|swav",
    log:
        "logs/eval_weights/{net}.log",
    benchmark:
        "benchmarks/eval_weights/{net}.tsv"
    resources:
        mem_mb=2000,
        runtime=60,
    threads: 1
    conda:
        f"{ENVS}/evaluate.yaml"
    script:
        "../scripts/eval_weights.py"


rule evaluate:
    input:
        unpack(evaluate_inputs),
        code=code("evaluate.py", "tables.py", "pictures.py", "metrics/image.py", "metrics/brain.py",
                  "metrics/captions.py", "metrics/retrieval.py", "images.py"),
    output:
        table="tables/{name}.csv",
        grid=report("evals/{name}/{name}_grid.png", category="Reconstructions"),
    params:
        settings=as_param({k: v for k, v in EVAL.items() if k not in ("mem_mb", "runtime", "device")}),
        device=EVAL.get("device", "auto"),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
        upper_bound=lambda w: w.name.startswith(UPPER),
    log:
        "logs/evaluate/{name}.log",
    benchmark:
        "benchmarks/evaluate/{name}.tsv"
    resources:
        mem_mb=EVAL.get("mem_mb", 16000),
        runtime=EVAL.get("runtime", 120),
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/evaluate.yaml"
    script:
        "../scripts/evaluate.py"


rule metrics_table:
    input:
        tables=[f"tables/{n}.csv" for n in recon_names()],
        code=code("tables.py", "pictures.py"),
    output:
        table=report("tables/metrics.csv", category="Metrics"),
        chart=report("tables/metrics.png", category="Metrics"),
    log:
        "logs/metrics_table.log",
    benchmark:
        "benchmarks/metrics_table.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    threads: 1
    conda:
        f"{ENVS}/evaluate.yaml"
    script:
        "../scripts/metrics_table.py"
