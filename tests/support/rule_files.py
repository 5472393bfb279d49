"""The rules of rules/*.smk as the tests read them: each rule's conda env and script.

A rule is ``rule name:``, or ``rule:`` with a ``name:`` directive (the rules made in a loop, one
per subject: ``f"preprocess_subj{_subject:02d}"`` reads as ``preprocess_subjNN``).
"""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RULE = re.compile(r'^\s*rule (\w+):|^\s*rule:\s*\n\s*name:\s*\n\s*f?"([^"]+)"', re.M)


def rule_name(match: re.Match) -> str:
    return match.group(1) or re.sub(r"\{[^}]*\}", "NN", match.group(2))


def blocks(text: str) -> list[tuple[str, str]]:
    """(rule name, its block: from its header to the next rule) of a rules file's text."""
    starts = list(RULE.finditer(text))
    return [(rule_name(m), text[m.start(): starts[i + 1].start() if i + 1 < len(starts) else len(text)])
            for i, m in enumerate(starts)]


def rules() -> dict[str, dict]:
    """{rule: {"conda": env path, "script": script path}} from rules/*.smk."""
    out = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        for name, block in blocks(smk.read_text()):
            conda = re.search(r'conda:\s*\n\s*f"\{ENVS\}/([\w.]+)"', block)
            script = re.search(r'script:\s*\n\s*"\.\./scripts/([\w.]+)"', block)
            out[name] = {"conda": conda and conda.group(1), "script": script and script.group(1)}
    return out
