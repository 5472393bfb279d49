"""Which package modules a script runs: its ``fmri_recon`` imports, followed through the package.

The rules take these files as inputs, so editing a module reruns exactly the stages whose
scripts import it, directly or through other modules (Snakemake compares modification times).
Imports are read from the source (``ast``), never executed: the Snakefile calls this while
it builds the DAG, without torch. Imports inside functions count too: they run when the
function does.
"""
from __future__ import annotations

import ast
import functools
from pathlib import Path

PACKAGE = "fmri_recon"
ROOT = Path(__file__).resolve().parents[1]      # the checkout: fmri_recon/ and scripts/ live here


def module_file(dotted: str, root: Path = ROOT) -> Path | None:
    """The file of module ``dotted`` (``fmri_recon.x.y``) under ``root``, or None (a name inside a module)."""
    path = root.joinpath(*dotted.split("."))
    if path.is_dir():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").exists() else None


def imported_names(path: Path, root: Path = ROOT) -> set[str]:
    """Every dotted name ``path`` imports (absolute, relative ones resolved), and their parents."""
    package = list(path.relative_to(root).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(filter(None, [*package[: len(package) - node.level + 1], base]))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names)
    parents = {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
    return names | parents


@functools.lru_cache(maxsize=None)
def package_imports(path: Path, root: Path = ROOT) -> frozenset[Path]:
    """The package modules ``path`` imports directly (``__init__`` of each package on the way included)."""
    found = set()
    if path.is_relative_to(root / PACKAGE):   # importing a submodule runs its packages' __init__ first
        found.update(d / "__init__.py" for d in path.parents if d.is_relative_to(root / PACKAGE))
    for name in imported_names(path, root):
        if name.split(".")[0] == PACKAGE:
            f = module_file(name, root)
            if f is not None:
                found.add(f)
    return frozenset(found - {path})


def closure(path: Path, root: Path = ROOT) -> set[Path]:
    """``path`` and every package module it runs, directly or through other modules."""
    seen, todo = set(), [Path(path)]
    while todo:
        f = todo.pop()
        if f not in seen:
            seen.add(f)
            todo.extend(package_imports(f, root))
    return seen


def script_code(script: str, root: Path = ROOT) -> list[str]:
    """The code inputs of a rule running ``scripts/<script>``: the script and its package modules, sorted."""
    return sorted(str(f) for f in closure(root / "scripts" / script, root))
