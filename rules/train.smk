# Train: per experiment, cached CLIP targets + voxels -> train_logs/{experiment}/.
#
# The checkpoint train_logs/{experiment}/last.pth is written every ckpt_interval epochs
# and at the end, but is deliberately NOT a declared output: Snakemake deletes a job's
# declared outputs before running it again and after it fails, which would throw away the
# checkpoint a killed or preempted job resumes from. train_stats.json, written last, marks a
# finished training; later stages read last.pth beside it. A checkpoint trained with other
# settings is never resumed (its saved config is compared), the run starts over instead.


rule train:
    input:
        unpack(train_inputs),
        code=code("train.py"),
    output:
        stats=train_stats("{experiment}"),
        log_csv="train_logs/{experiment}/log.csv",
        curve=report("train_logs/{experiment}/loss_curve.png", category="Training"),
    log:
        "logs/train/{experiment}.log",
    benchmark:
        "benchmarks/train/{experiment}.tsv"
    conda:
        f"{ENVS}/train.yaml"
    threads: lambda w: 4 * experiment(w.experiment)["num_processes"]
    resources:
        mem_mb=lambda w: experiment(w.experiment)["train_mem_mb"],
        runtime=lambda w: experiment(w.experiment)["train_runtime"],
        # one process per GPU, on one node (fmri_recon.train.distributed); SLURM: --gpus=N, one task each
        gpu=lambda w: experiment(w.experiment)["num_processes"],
        tasks_per_gpu=1,
        nodes=1,
    params:
        experiment=lambda w: fmri_experiment.train_params(config, w.experiment),
        device=lambda w: experiment(w.experiment)["device"],
        wandb=lambda w: experiment(w.experiment)["wandb"],
        tiny_teacher=tiny_lowlevel("teacher"),
        data_dir=DATA,
        out_dir=lambda w, output: os.path.dirname(output.stats),
    script:
        "../scripts/train.py"
