# CLIP targets: every image of the run (train sessions + test set) encoded once per CLIP
# space; training and evaluation read them from this cache and never run CLIP.


rule targets:
    input:
        code=code("nsd.py", "clip_targets.py"),
        summaries=lambda w: [subject_summary(s) for s in subject_sessions(w.clip)],
        tars=lambda w: present([data_path(f) for f in needed_files(subject_sessions(w.clip)) if f.endswith(".tar")]),
        images=data_input(nsd.IMAGES_FILE),
        weights=lambda w: clip_weights(w.clip),
    output:
        targets_path("{clip}"),
    params:
        clip=lambda w: as_param(config["clip_models"][w.clip]),
        targets=as_param(config.get("targets", {})),
        data_dir=lambda w, input: os.path.dirname(input.images),
        runs=lambda w: sorted(subject_sessions(w.clip).items()),   # [(subject, sessions), ...]
        new_test=config["new_test"],
    log:
        "logs/targets/{clip}.log",
    benchmark:
        "benchmarks/targets/{clip}.tsv"
    resources:
        mem_mb=config.get("targets", {}).get("mem_mb", 32000),
        runtime=config.get("targets", {}).get("runtime", 120),
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/targets.yaml"
    script:
        "../scripts/targets.py"


# The blurry branch's targets: SD VAE latents and ConvNeXt teacher features of every image the
# blurry experiments read, computed once (upstream recomputes both at every training step).
rule lowlevel_targets:
    input:
        code=code("nsd.py", "clip_targets.py", "lowlevel.py"),
        summaries=lambda w: [subject_summary(s) for s in lowlevel_sessions()],
        tars=lambda w: present([data_path(f) for f in needed_files(lowlevel_sessions()) if f.endswith(".tar")]),
        images=data_input(nsd.IMAGES_FILE),
        vae=lambda w: present([lowlevel_weights("vae")])[0],
        teacher=lambda w: present([lowlevel_weights("teacher")])[0],
    output:
        "cache/lowlevel_targets.hdf5",
    params:
        settings=as_param({k: LOWLEVEL[k] for k in ("vae", "teacher", "precision")}),
        data_dir=lambda w, input: os.path.dirname(input.images),
        runs=lambda w: sorted(lowlevel_sessions().items()),
        new_test=config["new_test"],
        batch_size=LOWLEVEL["batch_size"],
        device=LOWLEVEL["device"],
    log:
        "logs/lowlevel_targets.log",
    benchmark:
        "benchmarks/lowlevel_targets.tsv"
    resources:
        mem_mb=LOWLEVEL["mem_mb"],
        runtime=LOWLEVEL["runtime"],
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/train.yaml"
    script:
        "../scripts/lowlevel_targets.py"
