# Weights: pretrained files fetched from the hub under weights_dir/hub/<org>/<repo>/<file>,
# or, for the demo and tests, randomly initialised models of the same classes and formats.

localrules:
    download_weights,


rule download_weights:
    output:
        f"{WEIGHTS}/hub/{{org}}/{{repo}}/{{filename}}",
    wildcard_constraints:
        org="[^/]+",
        repo="[^/]+",
    params:
        repo_id="{org}/{repo}",
        revision="main",
        verify=HUB.get("verify", True),
        repo_type="model",
        filename="{filename}",
        local_dir=f"{WEIGHTS}/hub/{{org}}/{{repo}}",
    log:
        "logs/download_weights/{org}/{repo}/{filename}.log",
    benchmark:
        "benchmarks/download_weights/{org}/{repo}/{filename}.tsv"
    resources:
        mem_mb=1000,
        runtime=360,
    threads: 1
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/download.py"


rule random_clip:
    output:
        f"{WEIGHTS}/random/open_clip/{{clip}}.safetensors",
    params:
        arch=lambda w: config["clip_models"][w.clip]["arch"],
        seed=lambda w: config["clip_models"][w.clip].get("seed", 0),
    log:
        "logs/random_clip/{clip}.log",
    benchmark:
        "benchmarks/random_clip/{clip}.tsv"
    resources:
        mem_mb=2000,
        runtime=10,
    threads: 1
    conda:
        f"{ENVS}/targets.yaml"
    script:
        "../scripts/random_clip.py"
