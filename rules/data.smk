# Data: the pscotti/mindeyev2 layout under data_dir, from the hub (one job per file, only
# what the config needs), from the synthetic generator, or already there (download: false).

if config["dataset"] == "synthetic":

    rule synthesize:
        input:
            code=code("synthesize.py"),
        output:
            [data_path(f) for f in synthetic.files(synthetic.SyntheticConfig(**config["synthetic"]))],
        log:
            "logs/synthesize.log",
        benchmark:
            "benchmarks/synthesize.tsv"
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            synthetic=as_param(config["synthetic"]),
            resize=preprocess_settings("image_resize", "image_antialias"),
            data_dir=DATA,
        script:
            "../scripts/synthesize.py"

elif config["download"]:

    # Compute nodes often have no internet: downloads run where snakemake itself runs.
    localrules:
        download,

    rule download:
        output:
            data_path("{hubfile}"),
        log:
            "logs/download/{hubfile}.log",
        benchmark:
            "benchmarks/download/{hubfile}.tsv"
        wildcard_constraints:
            hubfile="|".join(re.escape(f) for f in hub_files()),
        # downloads run first, so a late stage's missing file stops the run before any training
        priority: 100
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=360,
        params:
            repo_id=HUB["repo_id"],
            revision=HUB["revision"],
            verify=HUB["verify"],
            repo_type="dataset",
            filename="{hubfile}",
            local_dir=lambda w, output: output[0][: -len(w.hubfile) - 1],
        script:
            "../scripts/download.py"


# The bill before paying it: `snakemake checks/download_plan.tsv` lists every hub file the config
# downloads with its size from the hub's metadata (HEAD requests only) and what is already here.
localrules:
    download_plan,


rule download_plan:
    input:
        code=code("download_plan.py"),
    output:
        "checks/download_plan.tsv",
    log:
        "logs/download_plan.log",
    conda:
        f"{ENVS}/data.yaml"
    params:
        files=as_param(planned_hub_files()),
        revision=HUB["revision"],
    script:
        "../scripts/download_plan.py"


# Reads every file of the run once, checks them against each other, and records what the
# data are (voxel count, trials, test repeats) for the stages after it.
rule check_data:
    input:
        data=lambda w: present([data_path(f) for f in needed_files([int(w.subject)])]),
        code=code("check_data.py"),
    output:
        "cache/data/subj{subject}.json",
    log:
        "logs/check_data/subj{subject}.log",
    benchmark:
        "benchmarks/check_data/subj{subject}.tsv"
    wildcard_constraints:
        subject=r"\d\d",
    conda:
        f"{ENVS}/data.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        data_dir=DATA,
        subject=lambda w: int(w.subject),
        num_sessions=lambda w: subject_sessions()[int(w.subject)],
        new_test=config["new_test"],
        captions=not OWN_DATA,
    script:
        "../scripts/check_data.py"


# The bill before paying it: how many hub files this run still fetches, and GB once planned.
announce_downloads(rules.download_plan.output[0])
