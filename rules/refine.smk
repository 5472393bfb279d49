# Refine: SD-XL img2img over the upsampled reconstructions, prompted with the predicted captions.

REFINE = config["refine"]


def refine_inputs(w):
    """The SD-XL weights; for a single-file checkpoint also the folder of configs and tokenizers."""
    inputs = {"base": weights_dir(REFINE["base"], "sdxl")}
    if REFINE["base"].startswith("file:"):
        spec = REFINE["single_file_config"]
        inputs["single_file_config"] = (
            f"{WEIGHTS}/configs/{spec[len('hf://'):]}" if spec.startswith("hf://") else weights_dir(spec, "sdxl")
        )
    return inputs


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
