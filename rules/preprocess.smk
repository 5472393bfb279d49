# Preprocessing (preprocess.source: raw): the dataset repo's files rebuilt from NSD's own release,
# as the released ones were made (docs/preprocessing.md). Only the bucket files the config needs
# are fetched, one job per file; every later stage reads the rebuilt files unchanged.

if RAW_SOURCE and config["download"]:

    # Compute nodes often have no internet: downloads run where snakemake itself runs.
    localrules:
        fetch_raw,

    rule fetch_raw:
        output:
            raw_path("{rawkey}"),
        log:
            "logs/fetch_raw/{rawkey}.log",
        benchmark:
            "benchmarks/fetch_raw/{rawkey}.tsv"
        wildcard_constraints:
            rawkey="|".join(re.escape(k) for k in raw_keys()),
        priority: 100
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=1000,
            runtime=360,
        # preprocess.url is read by the script from the config, not a param: a file is checked by its
        # size and MD5, so fetching it from a mirror (or the tests' local bucket) reruns nothing
        params:
            key="{rawkey}",
        script:
            "../scripts/fetch_raw.py"


# One rule per subject (its shards depend on its session count): its betas, z-scored with the
# training trials of every rebuilt session, and its wds/ shards.
for _subject, _sessions in raw_subjects().items():

    rule:
        name:
            f"preprocess_subj{_subject:02d}"
        input:
            **raw_subject_inputs(_subject),
            code=code("preprocess_subject.py"),
        output:
            data=[data_path(f) for f in preprocess.subject_outputs(_subject, _sessions)],
            zscore=data_path(preprocess.zscore_file(_subject)),
            provenance=data_path(f"provenance/subj{_subject:02d}.json"),
        log:
            f"logs/preprocess/subj{_subject:02d}.log",
        benchmark:
            f"benchmarks/preprocess/subj{_subject:02d}.tsv"
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=16000,
            runtime=240,
        params:
            subject=_subject,
            sessions=_sessions,
            settings=preprocess_settings("beta_version", "beta_format", "roi", "roi_labels"),
            data_dir=DATA,
        script:
            "../scripts/preprocess_subject.py"


if RAW_SOURCE and PRE["images"] == "raw":

    # The images file: every imgBrick image resized, 256 at a time.
    rule preprocess_images:
        input:
            stimuli=raw_path(raw_nsd.STIMULI),
            code=code("preprocess_images.py"),
        output:
            images=data_path(nsd.IMAGES_FILE),
            provenance=data_path("provenance/images.json"),
        log:
            "logs/preprocess/images.log",
        benchmark:
            "benchmarks/preprocess/images.tsv"
        conda:
            f"{ENVS}/data.yaml"
        threads: 2
        resources:
            mem_mb=4000,
            runtime=360,
        params:
            settings=preprocess_settings("image_resize", "image_antialias"),
        script:
            "../scripts/preprocess_images.py"


if RAW_SOURCE:

    # The small index files and the test images of the run's subject.
    rule preprocess_index:
        input:
            design=raw_path(raw_nsd.DESIGN),
            stim_info=raw_path(raw_nsd.STIM_INFO),
            images=data_path(nsd.IMAGES_FILE),
            subjects=[data_path(f) for s, n in raw_subjects().items() for f in preprocess.subject_outputs(s, n)],
            code=code("preprocess_index.py"),
        output:
            shared=data_path(preprocess.SHARED_FILE),
            indices=data_path(preprocess.INDICES_FILE),
            eval_images=data_path(nsd.EVAL_IMAGES),
            provenance=data_path("provenance/index.json"),
        log:
            "logs/preprocess/index.log",
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=4000,
            runtime=30,
        params:
            subjects=as_param(raw_subjects()),
            subject=SUBJECT,
            data_dir=DATA,
        script:
            "../scripts/preprocess_index.py"

    # `snakemake checks/release_subjNN.tsv`: the rebuilt subject against the released files in
    # preprocess.release_dir (what is there of them): betas, shards, and the closest image resize.
    rule check_release:
        input:
            data=lambda w: [
                data_path(f) for f in preprocess.subject_outputs(int(w.subject), raw_subjects()[int(w.subject)])
            ],
            images=data_path(nsd.IMAGES_FILE),
            stimuli=[raw_path(raw_nsd.STIMULI)] if PRE["images"] == "raw" else [],
            code=code("check_release.py"),
        output:
            "checks/release_subj{subject}.tsv",
        log:
            "logs/check_release/subj{subject}.log",
        wildcard_constraints:
            subject=r"\d\d",
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=8000,
            runtime=60,
        params:
            data_dir=DATA,
            release_dir=PRE["release_dir"] or "",
            subject=lambda w: int(w.subject),
            sessions=lambda w: raw_subjects()[int(w.subject)],
        script:
            "../scripts/check_release.py"
