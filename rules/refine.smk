# Refine: SD-XL img2img over the upsampled reconstructions, prompted with the predicted captions.
rule refine:
    input:
        unpack(refine_inputs),
        recons=evals_file("{name}", "recons"),
        captions=evals_file("{name}", "predcaptions"),
        code=code("refine.py", "reconstruct.py", "images.py"),
    output:
        evals_file("{name}", "enhancedrecons"),
    params:
        settings=as_param({k: v for k, v in REFINE.items() if k not in ("mem_mb", "runtime", "device")}),
        device=REFINE.get("device", "auto"),
    log:
        "logs/refine/{name}.log",
    benchmark:
        "benchmarks/refine/{name}.tsv"
    resources:
        mem_mb=REFINE.get("mem_mb", 32000),
        runtime=REFINE.get("runtime", 240),
        gpu=1,
    threads: 2
    conda:
        f"{ENVS}/reconstruct.yaml"
    script:
        "../scripts/refine.py"
