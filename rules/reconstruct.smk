# Reconstruct: per experiment (and per CLIP space an "upper bound" fed ground-truth targets),
# test voxels -> brain model -> prior -> unCLIP decoder images + GIT captions -> evals/{name}/.


# Run first (`snakemake check_decoder`): decodes a few test images' ground-truth tokens of each
# token space and says which one the decoder expects; fails if targets.token_norm is the other.
rule check_decoder:
    input:
        decoder=weights_dir(DECODER["weights"], "unclip"),
        clip_weights=clip_weights(DECODER["clip"]),
        images=data_input(nsd.EVAL_IMAGES),
        code=code("check_decoder.py"),
    output:
        "checks/decoder_token_space.json",
    log:
        "logs/check_decoder.log",
    benchmark:
        "benchmarks/check_decoder.tsv"
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=DECODER["mem_mb"],
        runtime=30,
        gpu=1,
    params:
        decoder=result_settings("decoder"),
        targets=as_param(config["targets"]),
        clip=as_param(config["clip_models"][DECODER["clip"]]),
        device=DECODER["device"],
        data_dir=DATA,
    script:
        "../scripts/check_decoder.py"


# GIT's own visual features of every image, to train converters into GIT's space.
rule git_features:
    input:
        summaries=[subject_summary(s) for s in subject_sessions()],
        tars=lambda w: present([data_path(f) for f in needed_files() if f.endswith(".tar")]),
        images=data_input(nsd.IMAGES_FILE),
        git=weights_dir(config["captions"]["weights"], "git"),
        code=code("git_features.py"),
    output:
        "cache/git_features.hdf5",
    log:
        "logs/git_features.log",
    benchmark:
        "benchmarks/git_features.tsv"
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=DECODER["mem_mb"],
        runtime=DECODER["runtime"],
        gpu=1,
    params:
        runs=sorted(subject_sessions().items()),
        data_dir=lambda w, input: os.path.dirname(input.images),
        new_test=config["new_test"],
        device=DECODER["device"],
    script:
        "../scripts/git_features.py"


# A converter between two embedding spaces of the same images, trained on images only;
# its quality on the held-out test images goes into the .json beside it.
rule converter:
    input:
        source=lambda w: targets_path(w.src),
        target=lambda w: "cache/git_features.hdf5" if w.dst == "git" else targets_path(w.dst),
        summary=subject_summary(),
        code=code("converter.py"),
    output:
        model="cache/converters/{src}_to_{dst}.pt",
        report="cache/converters/{src}_to_{dst}.json",
    log:
        "logs/converter/{src}_to_{dst}.log",
    benchmark:
        "benchmarks/converter/{src}_to_{dst}.tsv"
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        settings=as_param(config["converter"]),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
        new_test=config["new_test"],
    script:
        "../scripts/converter.py"


rule reconstruct:
    input:
        unpack(reconstruct_inputs),
        code=code("reconstruct.py"),
    output:
        **{k: evals_file("{name}", k) for k in ("recons", "clipvoxels", "predcaptions", "prior_out", "backbones")},
    log:
        "logs/reconstruct/{name}.log",
    benchmark:
        "benchmarks/reconstruct/{name}.tsv"
    wildcard_constraints:
        name=names_regex(decoded_names()),
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=DECODER["mem_mb"],
        runtime=DECODER["runtime"],
        gpu=1,
    params:
        decoder=result_settings("decoder"),
        captions=as_param(config["captions"]),
        device=DECODER["device"],
        data_dir=DATA,
        subject=SUBJECT,
        # the voxels as the experiment was trained on them (fmri_recon.experiment.voxel_reading)
        num_sessions=lambda w: fmri_experiment.voxel_reading(config, w.name)["num_sessions"],
        normalisation=lambda w: fmri_experiment.voxel_reading(config, w.name)["normalisation"],
        new_test=config["new_test"],
        kind=lambda w: run_kind(w.name),
        model=lambda w: model_params(w.name),
    script:
        "../scripts/reconstruct.py"


# The blurry branch's reconstructions: its latents (averaged over repeats) through the SD VAE.
rule blurry:
    input:
        unpack(lambda w: brain_model_inputs(w.name)),
        vae=lambda w: present([lowlevel_weights("vae")])[0],
        summary=subject_summary(),
        betas=data_input(nsd.betas_file(SUBJECT)),
        code=code("blurry.py"),
    output:
        evals_file("{name}", "blurryrecons"),
    log:
        "logs/blurry/{name}.log",
    benchmark:
        "benchmarks/blurry/{name}.tsv"
    wildcard_constraints:
        name=names_regex(decoded_names()),
    conda:
        f"{ENVS}/train.yaml"
    threads: 2
    resources:
        mem_mb=LOWLEVEL["mem_mb"],
        runtime=LOWLEVEL["runtime"],
        gpu=1,
    params:
        tiny_vae=tiny_lowlevel("vae"),
        model=lambda w: model_params(w.name),
        precision=LOWLEVEL["precision"],
        device=LOWLEVEL["device"],
        data_dir=lambda w, input: os.path.dirname(input.betas),
        subject=SUBJECT,
        num_sessions=lambda w: fmri_experiment.voxel_reading(config, w.name)["num_sessions"],
        normalisation=lambda w: fmri_experiment.voxel_reading(config, w.name)["normalisation"],
        new_test=config["new_test"],
    script:
        "../scripts/blurry.py"
