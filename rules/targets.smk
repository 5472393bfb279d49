# CLIP targets: every image of the run (train sessions + test set) encoded once per CLIP
# space; training and evaluation read them from this cache and never run CLIP.


rule targets:
    input:
        code=code("nsd.py", "clip_targets.py"),
        summaries=lambda w: [subject_summary(s) for s in subject_sessions(w.clip)],
        tars=lambda w: [data_path(f) for f in needed_files(subject_sessions(w.clip)) if f.endswith(".tar")],
        images=data_path(nsd.IMAGES_FILE),
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
