# Predict: volumes with no ground truth (predict.sessions) decoded by one experiment's model
# (predict.experiment: trained in the DAG or released) into reconstructions, refined images and
# captions, shown on a page: `snakemake predict`. No evaluation job is in its DAG.


rule predict_voxels:
    input:
        unpack(predict_voxel_inputs),
        code=code("predict_voxels.py"),
    output:
        "predictions/inputs/voxels.hdf5",
    log:
        "logs/predict/voxels.log",
    conda:
        f"{ENVS}/data.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=30,
    params:
        settings=lambda w: as_param(predict_settings.settings(config)),
        zscore=PREDICT["zscore"],
        average_repeats=PREDICT["average_repeats"],
    script:
        "../scripts/predict_voxels.py"


rule predict_decode:
    input:
        unpack(predict_decode_inputs),
        voxels=rules.predict_voxels.output[0],
        code=code("predict.py"),
    output:
        **{
            k: f"predictions/{{experiment}}/{k}.pt"
            for k in ("recons", "clipvoxels", "predcaptions", "prior_out", "backbones")
        },
    log:
        "logs/predict/{experiment}.log",
    benchmark:
        "benchmarks/predict/{experiment}.tsv"
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
        subject_index=lambda w: predict_subject_index(w.experiment),
        experiment=lambda w: w.experiment,
        num_sessions=lambda w: fmri_experiment.voxel_reading(config, w.experiment)["num_sessions"],
        normalisation=lambda w: fmri_experiment.voxel_reading(config, w.experiment)["normalisation"],
        new_test=config["new_test"],
        model=lambda w: model_params(w.experiment),
    script:
        "../scripts/predict.py"


# The blurry branch's predictions (experiments with blurry_recon), as rule blurry makes them.
rule predict_blurry:
    input:
        unpack(lambda w: brain_model_inputs(w.experiment)),
        vae=lambda w: present([lowlevel_weights("vae")])[0],
        voxels=rules.predict_voxels.output[0],
        code=code("predict_blurry.py"),
    output:
        "predictions/{experiment}/blurryrecons.pt",
    log:
        "logs/predict/{experiment}_blurry.log",
    benchmark:
        "benchmarks/predict/{experiment}_blurry.tsv"
    conda:
        f"{ENVS}/train.yaml"
    threads: 2
    resources:
        mem_mb=LOWLEVEL["mem_mb"],
        runtime=LOWLEVEL["runtime"],
        gpu=1,
    params:
        tiny_vae=tiny_lowlevel("vae"),
        model=lambda w: model_params(w.experiment),
        precision=LOWLEVEL["precision"],
        device=LOWLEVEL["device"],
        data_dir=DATA,
        subject=SUBJECT,
        subject_index=lambda w: predict_subject_index(w.experiment),
        num_sessions=lambda w: fmri_experiment.voxel_reading(config, w.experiment)["num_sessions"],
        normalisation=lambda w: fmri_experiment.voxel_reading(config, w.experiment)["normalisation"],
        new_test=config["new_test"],
    script:
        "../scripts/predict_blurry.py"


# SD-XL img2img of the predictions, with the refine stage's settings and script.
rule predict_refine:
    input:
        unpack(refine_inputs),
        recons="predictions/{experiment}/recons.pt",
        captions="predictions/{experiment}/predcaptions.pt",
        code=code("refine.py"),
    output:
        "predictions/{experiment}/enhancedrecons.pt",
    log:
        "logs/predict/{experiment}_refine.log",
    benchmark:
        "benchmarks/predict/{experiment}_refine.tsv"
    conda:
        f"{ENVS}/reconstruct.yaml"
    threads: 2
    resources:
        mem_mb=REFINE["mem_mb"],
        runtime=REFINE["runtime"],
        gpu=1,
    params:
        settings=result_settings("refine"),
        device=REFINE["device"],
    script:
        "../scripts/refine.py"


rule predict_page:
    input:
        voxels=rules.predict_voxels.output[0],
        recons="predictions/{experiment}/recons.pt",
        enhanced="predictions/{experiment}/enhancedrecons.pt",
        captions="predictions/{experiment}/predcaptions.pt",
        blurry=lambda w: ["predictions/{experiment}/blurryrecons.pt"] if has_blurry(w.experiment) else [],
        seen=PREDICT["images"] or [],
        code=code("predict_page.py"),
    output:
        page="predictions/{experiment}/index.html",
        grid="predictions/{experiment}/grid.png",
        captions="predictions/{experiment}/captions.csv",
        images=directory("predictions/{experiment}/images"),
    log:
        "logs/predict/{experiment}_page.log",
    conda:
        f"{ENVS}/evaluate.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        images=PREDICT["images"] or "",
        experiment=lambda w: w.experiment,
        rows=PREDICT["rows"],
        blend=config["evaluate"]["blend_blurry"],
    script:
        "../scripts/predict_page.py"
