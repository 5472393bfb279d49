# CLIP targets: every image of the run (train sessions + test set) encoded once per CLIP
# space; training and evaluation read them from this cache and never run CLIP.


rule targets:
    input:
        summary=subject_summary(),
        tars=[data_path(f) for f in needed_files() if f.endswith(".tar")],
        images=data_path(nsd.IMAGES_FILE),
        weights=lambda w: clip_weights(w.clip),
    output:
        targets_path("{clip}"),
    params:
        clip=lambda w: as_param(config["clip_models"][w.clip]),
        targets=as_param(config.get("targets", {})),
        data_dir=DATA,
        subject=SUBJECT,
        num_sessions=config["num_sessions"],
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
