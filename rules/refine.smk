# Refine: SD-XL img2img over the upsampled reconstructions, prompted with the predicted captions.
rule refine:
    input:
        unpack(refine_inputs),
        recons=evals_file("{name}", "recons"),
        captions=evals_file("{name}", "predcaptions"),
        code=code("refine.py"),
    output:
        evals_file("{name}", "enhancedrecons"),
    log:
        "logs/refine/{name}.log",
    benchmark:
        "benchmarks/refine/{name}.tsv"
    wildcard_constraints:
        name=names_regex(decoded_names()),
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
