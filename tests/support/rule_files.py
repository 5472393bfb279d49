"""The rules of rules/*.smk as the tests read them: each rule's conda env and script."""
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


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
