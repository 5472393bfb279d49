# A lab's own scans (dataset: own): single-trial betas, a mask, a trial table and the stimuli
# (docs/own_data.md) made into the pscotti/mindeyev2 layout, as the preprocessing of raw NSD makes
# it, so training and every later stage read them unchanged. Bad input stops the run before any
# job (own_input.problems, in common.smk) or, for what needs the volumes read, in this job.

if OWN_DATA:

    rule prepare_own:
        input:
            sessions=OWN["sessions"],
            mask=OWN["mask"],
            trials=OWN["trials"],
            images=OWN["images"],
            code=code("prepare_own.py"),
        output:
            data=[data_path(f) for f in own_build.outputs(SUBJECT, len(OWN["sessions"]))],
            provenance=data_path(f"provenance/own_subj{SUBJECT:02d}.json"),
        log:
            "logs/prepare_own.log",
        benchmark:
            "benchmarks/prepare_own.tsv"
        conda:
            f"{ENVS}/data.yaml"
        threads: 1
        resources:
            mem_mb=16000,
            runtime=120,
        params:
            subject=SUBJECT,
            settings=as_param(own_build.settings(config)),
            resize=preprocess_settings("image_resize", "image_antialias"),
            data_dir=DATA,
        script:
            "../scripts/prepare_own.py"
