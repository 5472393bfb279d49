# Data: the pscotti/mindeyev2 layout under data_dir, from the hub (one job per file, only
# what the config needs), from the synthetic generator, or already there (download: false).

if config["dataset"] == "synthetic":

    rule synthesize:
        input:
            code=code("nsd.py", "synthetic.py"),
        output:
            [data_path(f) for f in synthetic.files(synthetic.SyntheticConfig(**config["synthetic"]))],
        params:
            synthetic=as_param(config["synthetic"]),
            data_dir=DATA,
        log:
            "logs/synthesize.log",
        benchmark:
            "benchmarks/synthesize.tsv"
        resources:
            mem_mb=4000,
            runtime=30,
        threads: 1
        conda:
            f"{ENVS}/data.yaml"
        script:
            "../scripts/synthesize.py"

elif config["download"]:

    # Compute nodes often have no internet: downloads run where snakemake itself runs.
    localrules:
        download,

    rule download:
        # downloads run first, so a late stage's missing file stops the run before any training
        priority: 100
        output:
            data_path("{hubfile}"),
        wildcard_constraints:
            hubfile="|".join(re.escape(f) for f in needed_files()),
        params:
            repo_id=HUB.get("repo_id", "pscotti/mindeyev2"),
            revision=HUB.get("revision", "main"),
            verify=HUB.get("verify", True),
            repo_type="dataset",
            filename="{hubfile}",
            local_dir=lambda w, output: output[0][: -len(w.hubfile) - 1],
        log:
            "logs/download/{hubfile}.log",
        benchmark:
            "benchmarks/download/{hubfile}.tsv"
        resources:
            mem_mb=1000,
            runtime=360,
        threads: 1
        conda:
            f"{ENVS}/data.yaml"
        script:
            "../scripts/download.py"


# Reads every file of the run once, checks them against each other, and records what the
# data are (voxel count, trials, test repeats) for the stages after it.
rule check_data:
    input:
        code=code("nsd.py"),
        data=lambda w: present([data_path(f) for f in needed_files([int(w.subject)])]),
    output:
        "cache/data/subj{subject}.json",
    wildcard_constraints:
        subject=r"\d\d",
    params:
        data_dir=DATA,
        subject=lambda w: int(w.subject),
        num_sessions=lambda w: subject_sessions()[int(w.subject)],
        new_test=config["new_test"],
    log:
        "logs/check_data/subj{subject}.log",
    benchmark:
        "benchmarks/check_data/subj{subject}.tsv"
    resources:
        mem_mb=2000,
        runtime=15,
    threads: 1
    conda:
        f"{ENVS}/data.yaml"
    script:
        "../scripts/check_data.py"
