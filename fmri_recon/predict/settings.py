"""The ``predict`` block of the config: its files as own_input reads them, and its checks."""
from __future__ import annotations

from fmri_recon.data import own_input


def settings(config: dict) -> dict:
    """The new volumes' files (the betas format is own's: hdf5_key, hdf5_axes)."""
    pre, own = config["predict"], config["own"]
    return {"sessions": pre["sessions"], "mask": pre["mask"] or own["mask"], "trials": pre["trials"],
            "axes": own["hdf5_axes"], "key": own["hdf5_key"]}


def config_problems(config: dict) -> list[str]:
    """With predict.experiment set: a model of this config, the new volumes named, a z-score that
    exists; then the checks of the input that read no volume."""
    pre = config["predict"]
    if not pre["experiment"]:
        return []
    problems = []
    if pre["experiment"] not in config["experiments"]:
        problems.append(f"config: predict.experiment = {pre['experiment']!r} is not one of experiments "
                        f"{sorted(config['experiments'])}")
    if not pre["sessions"] or not pre["trials"]:
        problems.append("config: predict needs predict.sessions (the new volumes) and predict.trials (their table)")
    if not (pre["mask"] or config["own"]["mask"]):
        problems.append("config: predict needs predict.mask (the new volumes' grid; own.mask by default)")
    kept = config["dataset"] == "own" or (config["dataset"] == "nsd" and config["preprocess"]["source"] == "raw")
    if pre["zscore"] == "training" and not kept:
        problems.append("config: predict.zscore = training needs the statistics the training data were z-scored with, "
                        "which only dataset = own and preprocess.source = raw keep (the released files do not); "
                        "use predict.zscore: session")
    return problems or own_input.problems(settings(config), split=False, image=False, images=pre["images"])
