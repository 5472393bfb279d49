# Weights: pretrained files fetched from the hub under weights_dir/hub/<org>/<repo>/<file>,
# or, for the demo and tests, randomly initialised models of the same classes and formats.


localrules:
    download_weights,


rule download_weights:
    output:
        f"{WEIGHTS}/hub/{{org}}/{{repo}}/{{filename}}",
    log:
        "logs/download_weights/{org}/{repo}/{filename}.log",
    benchmark:
        "benchmarks/download_weights/{org}/{repo}/{filename}.tsv"
    wildcard_constraints:
        org="[^/]+",
        repo="[^/]+",
    # downloads run first, so a late stage's missing file stops the run before any training
    priority: 100
    conda:
        f"{ENVS}/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=360,
    params:
        repo_id="{org}/{repo}",
        revision="main",
        verify=HUB["verify"],
        repo_type="model",
        filename="{filename}",
        local_dir=f"{WEIGHTS}/hub/{{org}}/{{repo}}",
    script:
        "../scripts/download.py"


rule random_clip:
    input:
        code=code("random_clip.py"),
    output:
        f"{WEIGHTS}/random/open_clip/{{clip}}.safetensors",
    log:
        "logs/random_clip/{clip}.log",
    benchmark:
        "benchmarks/random_clip/{clip}.tsv"
    conda:
        f"{ENVS}/targets.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        arch=lambda w: config["clip_models"][w.clip]["arch"],
        seed=lambda w: config["clip_models"][w.clip]["seed"],
    script:
        "../scripts/random_clip.py"


# Whole hub repositories (GIT, SD-XL) as diffusers/transformers folders.
localrules:
    snapshot_weights,


rule snapshot_weights:
    output:
        directory(f"{WEIGHTS}/snapshots/{{org}}/{{repo}}"),
    log:
        "logs/snapshot_weights/{org}/{repo}.log",
    benchmark:
        "benchmarks/snapshot_weights/{org}/{repo}.tsv"
    wildcard_constraints:
        org="[^/]+",
        repo="[^/]+",
    # downloads run first, so a late stage's missing file stops the run before any training
    priority: 100
    conda:
        f"{ENVS}/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=360,
    params:
        repo_id="{org}/{repo}",
        configs_only=False,
    script:
        "../scripts/snapshot_weights.py"


# The configs and tokenizers of a diffusers repository (no weights): what a single-file SD-XL
# checkpoint such as upstream's ZavyChromaXL needs beside it to load without the hub.
localrules:
    snapshot_configs,


rule snapshot_configs:
    output:
        directory(f"{WEIGHTS}/configs/{{org}}/{{repo}}"),
    log:
        "logs/snapshot_configs/{org}/{repo}.log",
    benchmark:
        "benchmarks/snapshot_configs/{org}/{repo}.tsv"
    wildcard_constraints:
        org="[^/]+",
        repo="[^/]+",
    # downloads run first, so a late stage's missing file stops the run before any training
    priority: 100
    conda:
        f"{ENVS}/data.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        repo_id="{org}/{repo}",
        configs_only=True,
    script:
        "../scripts/snapshot_weights.py"


# MindEye2's sgm unCLIP checkpoint, converted once to a diffusers folder.
rule convert_unclip:
    input:
        lambda w: present([data_path(DECODER["weights"][len("data:") :])])[0],
        code=code("convert_unclip.py"),
    output:
        directory(f"{WEIGHTS}/converted/unclip"),
    log:
        "logs/convert_unclip.log",
    benchmark:
        "benchmarks/convert_unclip.tsv"
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=40000,
        runtime=60,
    script:
        "../scripts/convert_unclip.py"


# Tiny randomly initialised models of the same classes, saved in the same formats (demo, tests).
rule random_model:
    input:
        code=code("random_model.py"),
    output:
        directory(f"{WEIGHTS}/random/{{kind}}"),
    log:
        "logs/random_model/{kind}.log",
    benchmark:
        "benchmarks/random_model/{kind}.tsv"
    wildcard_constraints:
        kind="unclip|git|sdxl",
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        context_dim=config["clip_models"][DECODER["clip"]]["emb_dim"],
        seq_len=config["clip_models"][DECODER["clip"]]["seq_dim"],
        seed=0,
    script:
        "../scripts/random_model.py"


# The blurry branch's frozen models as tiny random ones, in upstream's file formats (demo, tests).
rule random_lowlevel:
    input:
        code=code("random_lowlevel.py"),
    output:
        vae=f"{WEIGHTS}/random/lowlevel/vae.pth",
        teacher=f"{WEIGHTS}/random/lowlevel/teacher.pth",
    log:
        "logs/random_lowlevel.log",
    benchmark:
        "benchmarks/random_lowlevel.tsv"
    conda:
        f"{ENVS}/train.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        seed=0,
    script:
        "../scripts/random_lowlevel.py"


# The blurry branch's tiny VAE trained as an autoencoder on the run's train images (`lowlevel.vae:
# train`, the demo), written as upstream's sd_image_var_autoenc.pth is, with the ids it saw beside it.
rule train_lowlevel:
    input:
        images=data_input(nsd.IMAGES_FILE),
        summaries=lambda w: [subject_summary(s) for s in subject_sessions()],
        code=code("train_lowlevel.py"),
    output:
        vae=f"{WEIGHTS}/trained/lowlevel/vae.pth",
        report=f"{WEIGHTS}/trained/lowlevel/training.json",
    log:
        "logs/train_lowlevel.log",
    benchmark:
        "benchmarks/train_lowlevel.tsv"
    conda:
        f"{ENVS}/train.yaml"
    threads: 2
    resources:
        mem_mb=config["decoder_training"]["mem_mb"],
        runtime=config["decoder_training"]["runtime"],
    params:
        settings=as_param({k: config["decoder_training"][k] for k in ("lowlevel_steps", "batch_size", "lr", "seed")}),
        runs=sorted(subject_sessions().items()),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
    script:
        "../scripts/train_lowlevel.py"


# A tiny decoder trained on the run's train images (`weights: train`, the demo) from the random
# start random_model would write (built in the job: one job less): the unCLIP decoder on their
# CLIP tokens, GIT and SD-XL on their captions.
rule train_decoder:
    input:
        unpack(decoder_training_inputs),
        code=code("train_decoder.py"),
    output:
        directory(f"{WEIGHTS}/trained/{{kind}}"),
    log:
        "logs/train_decoder/{kind}.log",
    benchmark:
        "benchmarks/train_decoder/{kind}.tsv"
    wildcard_constraints:
        kind="unclip|git|sdxl",
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=config["decoder_training"]["mem_mb"],
        runtime=config["decoder_training"]["runtime"],
    params:
        settings=result_settings("decoder_training"),
        context_dim=config["clip_models"][DECODER["clip"]]["emb_dim"],
        seq_len=config["clip_models"][DECODER["clip"]]["seq_dim"],
        # only SD-XL trains at refine.size: changing it reruns that training alone
        refine_size=lambda w: REFINE["size"] if w.kind == "sdxl" else None,
        runs=sorted(subject_sessions().items()),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
    script:
        "../scripts/train_decoder.py"
