# Reconstruct: per experiment (and per CLIP space an "upper bound" fed ground-truth targets),
# test voxels -> brain model -> prior -> unCLIP decoder images + GIT captions -> evals/{name}/.


# Run first (`snakemake check_decoder`): decodes a few test images' ground-truth tokens of each
# token space and says which one the decoder expects; fails if targets.token_norm is the other.
rule check_decoder:
    input:
        decoder=weights_dir(DECODER["weights"], "unclip"),
        clip_weights=clip_weights(DECODER["clip"]),
        images=data_input(nsd.EVAL_IMAGES),
        code=code("decoder_check.py", "clip_targets.py", "unclip.py", "metrics/image.py", "images.py"),
    output:
        "checks/decoder_token_space.json",
    params:
        decoder=as_param({k: v for k, v in DECODER.items() if k not in ("mem_mb", "runtime", "device")}),
        targets=as_param(config["targets"]),
        clip=as_param(config["clip_models"][DECODER["clip"]]),
        device=DECODER["device"],
        data_dir=DATA,
    log:
        "logs/check_decoder.log",
    benchmark:
        "benchmarks/check_decoder.tsv"
    resources:
        mem_mb=DECODER["mem_mb"],
        runtime=30,
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/reconstruct.yaml"
    script:
        "../scripts/check_decoder.py"


# GIT's own visual features of every image, to train converters into GIT's space.
rule git_features:
    input:
        summaries=[subject_summary(s) for s in subject_sessions()],
        tars=lambda w: present([data_path(f) for f in needed_files() if f.endswith(".tar")]),
        images=data_input(nsd.IMAGES_FILE),
        git=weights_dir(config["captions"]["weights"], "git"),
        code=code("captions.py", "clip_targets.py"),
    output:
        "cache/git_features.hdf5",
    params:
        runs=sorted(subject_sessions().items()),
        data_dir=lambda w, input: os.path.dirname(input.images),
        new_test=config["new_test"],
        device=DECODER.get("device", "auto"),
    log:
        "logs/git_features.log",
    benchmark:
        "benchmarks/git_features.tsv"
    resources:
        mem_mb=DECODER.get("mem_mb", 32000),
        runtime=DECODER.get("runtime", 240),
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/reconstruct.yaml"
    script:
        "../scripts/git_features.py"


# A converter between two embedding spaces of the same images, trained on images only;
# its quality on the held-out test images goes into the .json beside it.
rule converter:
    input:
        code=code("converter.py"),
        source=lambda w: targets_path(w.src),
        target=lambda w: "cache/git_features.hdf5" if w.dst == "git" else targets_path(w.dst),
        summary=subject_summary(),
    output:
        model="cache/converters/{src}_to_{dst}.pt",
        report="cache/converters/{src}_to_{dst}.json",
    params:
        settings=as_param(config["converter"]),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
    log:
        "logs/converter/{src}_to_{dst}.log",
    benchmark:
        "benchmarks/converter/{src}_to_{dst}.tsv"
    resources:
        mem_mb=8000,
        runtime=60,
    threads: 2
    conda:
        f"{ENVS}/reconstruct.yaml"
    script:
        "../scripts/converter.py"


rule reconstruct:
    input:
        unpack(reconstruct_inputs),
        code=code("reconstruct.py", "unclip.py", "captions.py", "converter.py", "checkpoint.py", "train_data.py",
                  "images.py", "models/brain.py", "models/prior.py"),
    output:
        **{k: evals_file("{name}", k) for k in ("recons", "clipvoxels", "predcaptions", "prior_out", "backbones")},
    params:
        decoder=as_param({k: v for k, v in DECODER.items() if k not in ("mem_mb", "runtime", "device")}),
        captions=as_param(config["captions"]),
        device=DECODER.get("device", "auto"),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
        out_dir=lambda w, output: os.path.dirname(output.recons),
    log:
        "logs/reconstruct/{name}.log",
    benchmark:
        "benchmarks/reconstruct/{name}.tsv"
    resources:
        mem_mb=DECODER.get("mem_mb", 32000),
        runtime=DECODER.get("runtime", 240),
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/reconstruct.yaml"
    script:
        "../scripts/reconstruct.py"


# The blurry branch's reconstructions: its latents (averaged over repeats) through the SD VAE.
rule blurry:
    input:
        code=code("reconstruct.py", "lowlevel.py", "checkpoint.py", "images.py", "models/brain.py"),
        train=train_stats("{name}"),
        vae=lambda w: present([lowlevel_weights("vae")])[0],
        summary=subject_summary(),
        betas=data_input(nsd.betas_file(SUBJECT)),
    output:
        evals_file("{name}", "blurryrecons"),
    params:
        tiny_vae=LOWLEVEL.get("vae") == "random",
        precision=LOWLEVEL.get("precision", "auto"),
        device=LOWLEVEL.get("device", "auto"),
        data_dir=lambda w, input: os.path.dirname(input.betas),
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
    log:
        "logs/blurry/{name}.log",
    benchmark:
        "benchmarks/blurry/{name}.tsv"
    resources:
        mem_mb=LOWLEVEL.get("mem_mb", 32000),
        runtime=LOWLEVEL.get("runtime", 120),
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/train.yaml"
    script:
        "../scripts/blurry.py"
