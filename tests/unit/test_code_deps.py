"""One source of truth, checked statically: each rule's code inputs derive from its script's imports,
every module imports on its own without circles, and defaults live in the schema only."""
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import MISSING, fields
from pathlib import Path

import pytest
import yaml

from fmri_recon import code_deps
from rule_files import blocks, rules

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fmri_recon"
MODULES = sorted(PACKAGE.rglob("*.py"))
DOWNLOADS = {"download", "download_weights", "snapshot_weights", "snapshot_configs", "eval_weights", "fetch_raw"}


def dotted(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_alone(path: Path) -> subprocess.CompletedProcess:
    """Import one module in a fresh interpreter; print the fmri_recon modules that import loaded."""
    code = (f"import sys, json; import {dotted(path)}; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'fmri_recon')))")
    return subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def alone() -> dict[Path, subprocess.CompletedProcess]:
    with ThreadPoolExecutor(2) as pool:          # two cores
        return dict(zip(MODULES, pool.map(imported_alone, MODULES)))


def test_every_module_imports_on_its_own(alone):
    failed = {dotted(m): r.stderr[-800:] for m, r in alone.items() if r.returncode != 0}
    assert not failed, failed


def test_the_walker_sees_every_module_an_import_runs(alone):
    # A module loaded at import time but missing from the walker's closure would be a code input
    # no rule lists: editing it would leave results built from the old code looking current.
    for module, result in alone.items():
        loaded = {m for m in json.loads(result.stdout.splitlines()[-1]) if m != "fmri_recon"}
        walked = {dotted(f) for f in code_deps.closure(module)}
        assert loaded <= walked, f"{dotted(module)} loads {sorted(loaded - walked)} that the walker misses"


def test_no_module_imports_a_module_that_imports_it_back():
    def edges(m):  # named imports only: a submodule does not "import" its own package's __init__
        return {f for f in code_deps.package_imports(m) if f != m.parent / "__init__.py"}
    for m in MODULES:
        for d in edges(m):
            reach, todo = set(), [d]
            while todo:
                f = todo.pop()
                if f not in reach:
                    reach.add(f)
                    todo.extend(edges(f))
            assert m not in reach, f"circular import: {dotted(m)} -> {dotted(d)} -> ... -> {dotted(m)}"


def test_the_walker_on_a_hand_built_package(tmp_path):
    pkg = tmp_path / "fmri_recon"
    (pkg / "sub").mkdir(parents=True)
    (tmp_path / "scripts").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from .leaf import X\n")
    (pkg / "sub" / "leaf.py").write_text("X = 1\n")
    (pkg / "a.py").write_text("from . import b\n\ndef f():\n    from .sub import leaf\n")
    (pkg / "b.py").write_text("import numpy\n")
    (pkg / "unused.py").write_text("")
    (tmp_path / "scripts" / "s.py").write_text("from fmri_recon import a\n")
    got = {Path(p).relative_to(tmp_path).as_posix() for p in code_deps.script_code("s.py", tmp_path)}
    assert got == {"scripts/s.py", "fmri_recon/__init__.py", "fmri_recon/a.py", "fmri_recon/b.py",
                   "fmri_recon/sub/__init__.py", "fmri_recon/sub/leaf.py"}


def test_every_rule_derives_its_code_inputs_from_its_own_script():
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for name, block in blocks(smk.read_text()):
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block).group(1)
            code = re.findall(r'code=code\("([\w.]+)"\)', block)
            if name in DOWNLOADS:       # a verified download does not depend on our code
                assert not code, f"rule {name}"
            else:
                assert code == [script], f"rule {name} runs {script} but its code input is {code}"
    assert {r for r in rules() if r not in DOWNLOADS} >= {"train", "reconstruct", "random_model", "evaluate"}


# --------------------------------------------------------------------------- defaults
DEFAULT_CALL = re.compile(r"""\.get\(\s*["'][\w.]+["']\s*,|\blookup\([^)]*\bdefault\s*=|getattr\([^,]+,[^,]+,""")


def test_rules_and_scripts_supply_no_defaults_of_their_own():
    # Config reaches rules and scripts validated, every default filled in from the schema: a
    # fallback here would be a second statement of a default, silently winning when they differ.
    offenders = []
    for path in [REPO / "Snakefile", *sorted((REPO / "rules").glob("*.smk")), *sorted((REPO / "scripts").glob("*.py"))]:
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if DEFAULT_CALL.search(line.split("#")[0]):
                offenders.append(f"{path.relative_to(REPO)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_default_check_catches_a_fallback():
    assert DEFAULT_CALL.search('steps=cfg.get("steps", 25)')
    assert DEFAULT_CALL.search("lookup(dpath='decoder/steps', within=config, default=38)")
    assert not DEFAULT_CALL.search('init = exp.get("init_from")')          # optional key: no default


def schema_defaults(block: str) -> dict:
    schema = yaml.safe_load((REPO / "schemas" / "config.schema.yaml").read_text())
    return {k: v["default"] for k, v in schema["properties"][block]["properties"].items() if "default" in v}


# Package defaults that differ from the schema's on purpose, with why.
ON_PURPOSE: dict = {}


@pytest.mark.parametrize("cls, block", [("fmri_recon.models.BrainConfig", "model"),
                                        ("fmri_recon.train.config.TrainConfig", "model"),
                                        ("fmri_recon.data.synthetic.SyntheticConfig", "synthetic")])
def test_package_defaults_agree_with_the_schema(cls, block):
    module, name = cls.rsplit(".", 1)
    klass = getattr(__import__(module, fromlist=[name]), name)
    schema = schema_defaults(block)
    for f in fields(klass):
        if f.name in schema and (name, f.name) not in ON_PURPOSE:
            default = f.default if f.default is not MISSING else f.default_factory()
            assert default == schema[f.name], f"{name}.{f.name} = {default!r}, schema {block}.{f.name} = {schema[f.name]!r}"


def test_config_yaml_restates_no_schema_default():
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    for block, values in config.items():
        if isinstance(values, dict) and block in ("hub", "targets", "model", "lowlevel", "decoder", "captions",
                                                   "converter", "refine", "evaluate", "synthetic"):
            same = {k for k, v in values.items() if schema_defaults(block).get(k, object()) == v}
            assert not same, f"config.yaml {block}: {sorted(same)} restate the schema's defaults"


def test_train_config_refuses_unknown_keys():
    from fmri_recon.train.loop import TrainConfig
    with pytest.raises(ValueError, match="max_lrr"):
        TrainConfig.from_dict({"max_lrr": 1e-3})


def test_no_comment_cites_a_file_outside_the_repository():
    for path in [*PACKAGE.rglob("*.py"), *(REPO / "scripts").glob("*.py"), *(REPO / "rules").glob("*.smk"),
                 *(REPO / "tests").rglob("*.py"), *(REPO / "bench").glob("*.py")]:
        text = path.read_text()
        assert "shared" + "/spec" not in text, f"{path.relative_to(REPO)} cites a file users never have"
        for doc in re.findall(r"docs/[\w.]+", text):
            assert (REPO / doc).exists(), f"{path.relative_to(REPO)} cites {doc}, which does not exist"



# Stage packages in the order of the workflow; a module imports only from its own stage, an
# earlier one or the shared modules (docs/architecture.md, "Import direction").
STAGES = ("data", "targets", "models", "train", "decode", "evaluate", "predict", "explore")
SHARED = {"helpers", "resize", "runlog", "code_deps", "configuration", "experiment", "sweeps"}
MAX_LINES = 400


def stage_of(path: Path) -> int | None:
    part = path.relative_to(PACKAGE).parts[0]
    return STAGES.index(part) if part in STAGES else None


def test_the_package_is_stage_packages_and_a_few_shared_modules():
    top = {p.stem for p in PACKAGE.glob("*.py")} - {"__init__"}
    assert top == SHARED, f"modules outside a stage package: {sorted(top - SHARED)}"
    dirs = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert dirs == set(STAGES), dirs
    long = {str(p.relative_to(REPO)): n for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def upward_imports(root: Path = REPO) -> set[tuple[str, str]]:
    """(module, stage module it imports) pairs that point up: from a shared module into a stage
    package, or from a stage package into a later one."""
    found = set()
    for path in (root / "fmri_recon").rglob("*.py"):
        here = stage_of(path)
        for dep in code_deps.package_imports(path, root):
            there = stage_of(dep)
            if there is not None and (here is None or there > here):
                found.add((str(path.relative_to(root)), str(dep.relative_to(root))))
    return found


def test_stage_packages_import_only_downward():
    # the one exception: experiment.brain_config builds the model's config, importing it inside the function
    assert upward_imports() == {("fmri_recon/experiment.py", "fmri_recon/models/__init__.py")}


def test_building_the_dag_imports_no_torch():
    # The Snakefile and rules/*.smk import package modules while the DAG is built (on a login node,
    # for a dry run): those imports must stay light, torch being imported inside the stage code.
    texts = [(REPO / "Snakefile").read_text(), *(p.read_text() for p in sorted((REPO / "rules").glob("*.smk")))]
    imports = sorted({line.strip() for t in texts for line in t.splitlines()
                      if re.match(r"(from fmri_recon[\w.]* import|import fmri_recon)", line)})   # top level
    assert len(imports) >= 3, imports
    code = "import sys\n" + "\n".join(imports) + "\nprint(sorted({'torch', 'diffusers', 'transformers'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", imports
