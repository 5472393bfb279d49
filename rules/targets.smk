# CLIP targets: every image of the run (train sessions + test set) encoded once per CLIP
# space; training and evaluation read them from this cache and never run CLIP.


rule targets:
    input:
        summaries=lambda w: [subject_summary(s) for s in subject_sessions(w.clip)],
        tars=lambda w: present([data_path(f) for f in needed_files(subject_sessions(w.clip)) if f.endswith(".tar")]),
        images=data_input(nsd.IMAGES_FILE),
        weights=lambda w: clip_weights(w.clip),
        code=code("targets.py"),
    output:
        targets_path("{clip}"),
    log:
        "logs/targets/{clip}.log",
    benchmark:
        "benchmarks/targets/{clip}.tsv"
    conda:
        f"{ENVS}/targets.yaml"
    threads: 2
    resources:
        mem_mb=config["targets"]["mem_mb"],
        runtime=config["targets"]["runtime"],
        gpu=1,
    params:
        clip=lambda w: as_param(config["clip_models"][w.clip]),
        targets=as_param(config["targets"]),
        data_dir=lambda w, input: os.path.dirname(input.images),
        runs=lambda w: sorted(subject_sessions(w.clip).items()),  # [(subject, sessions), ...]
        new_test=config["new_test"],
    script:
        "../scripts/targets.py"


# The blurry branch's targets: SD VAE latents and ConvNeXt teacher features of every image the
# blurry experiments read, computed once (upstream recomputes both at every training step).
rule lowlevel_targets:
    input:
        summaries=lambda w: [subject_summary(s) for s in lowlevel_sessions()],
        tars=lambda w: present([data_path(f) for f in needed_files(lowlevel_sessions()) if f.endswith(".tar")]),
        images=data_input(nsd.IMAGES_FILE),
        vae=lambda w: present([lowlevel_weights("vae")])[0],
        teacher=lambda w: present([lowlevel_weights("teacher")])[0],
        code=code("lowlevel_targets.py"),
    output:
        "cache/lowlevel_targets.hdf5",
    log:
        "logs/lowlevel_targets.log",
    benchmark:
        "benchmarks/lowlevel_targets.tsv"
    conda:
        f"{ENVS}/train.yaml"
    threads: 2
    resources:
        mem_mb=LOWLEVEL["mem_mb"],
        runtime=LOWLEVEL["runtime"],
        gpu=1,
    params:
        settings=as_param({k: LOWLEVEL[k] for k in ("vae", "teacher", "precision")}),
        data_dir=lambda w, input: os.path.dirname(input.images),
        runs=lambda w: sorted(lowlevel_sessions().items()),
        new_test=config["new_test"],
        batch_size=LOWLEVEL["batch_size"],
        device=LOWLEVEL["device"],
        tiny_vae=tiny_lowlevel("vae"),
        tiny_teacher=tiny_lowlevel("teacher"),
    script:
        "../scripts/lowlevel_targets.py"
