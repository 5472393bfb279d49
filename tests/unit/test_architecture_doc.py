"""The documentation stays true to the code: docs/architecture.md's rules table names every rule of
rules/*.smk with its rules file and the script of its ``script:`` line, every scripts/*.py it
names exists, the README stays a short task-first page with its two commands, and every relative
link of README.md and docs/*.md points at a file (and heading) that exists. Text only: no
Snakemake run. The parsers take text, so the last tests break a copy inline and check that each
problem is caught."""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ARCHITECTURE = REPO / "docs" / "architecture.md"
README = REPO / "README.md"

DEMO_COMMAND = "bash setup.sh && .venv/bin/snakemake --directory demo --configfile demo.yaml --cores 2 all"
TEST_COMMAND = "bash setup.sh && .venv/bin/python -m pytest -q"
README_MAX_LINES = 160

SCRIPT_LINE = re.compile(r'script:\s*\n?\s*"([^"]+)"')
SCRIPT_PATH = re.compile(r"scripts/\w+\.py")
RULES_FILE = re.compile(r"rules/\w+\.smk")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


# --------------------------------------------------------------------------- parsers (text in)
def smk_rules(files: dict[str, str]) -> dict[str, dict]:
    """{rule: {"file": "rules/x.smk", "script": "scripts/y.py" or None}} of rules files' texts
    ({"rules/x.smk": text}): each rule's block runs to the next rule."""
    from rule_files import blocks      # rules in `if` blocks and loops too (tests/support/rule_files.py)

    out = {}
    for file, text in files.items():
        for name, block in blocks(text):
            script = SCRIPT_LINE.search(block)
            out[name] = {"file": file, "script": script and f"scripts/{Path(script.group(1)).name}"}
    return out


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def doc_rules(text: str) -> dict[str, dict]:
    """{rule: {"file", "script"}} of the rules table (the table whose header starts with ``rule``
    and has a ``script`` column): the rule in backticks in the first column, its rules file and
    its script (``scripts/x.py`` in backticks, or None) in theirs."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        header = _cells(line) if line.lstrip().startswith("|") else []
        if header and header[0] == "rule" and "script" in header:
            break
    else:
        raise AssertionError("no rules table (a header row `| rule | ... | script | ...`)")
    script_col = header.index("script")
    file_col = next((k for k, h in enumerate(header) if h.startswith("rules file")), None)
    out = {}
    for line in lines[i + 2:]:                       # after the header and its |---| row
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        name = re.fullmatch(r"`(\w+)`", cells[0])
        assert name, f"rules table row without a `rule` in its first cell: {line}"
        script = SCRIPT_PATH.search(cells[script_col]) if len(cells) > script_col else None
        rules_file = RULES_FILE.search(cells[file_col]) if file_col is not None and len(cells) > file_col else None
        assert name.group(1) not in out, f"rule {name.group(1)} twice in the rules table"
        out[name.group(1)] = {"file": rules_file and rules_file.group(0), "script": script and script.group(0)}
    return out


def rules_table_problems(doc: str, files: dict[str, str], repo: Path = REPO) -> list[str]:
    """What the architecture page's rules table gets wrong about the rules files' texts."""
    defined, named = smk_rules(files), doc_rules(doc)
    problems = [f"rule {r} ({defined[r]['file']}) is not in the rules table" for r in sorted(set(defined) - set(named))]
    problems += [f"the rules table names rule {r}, which no rules/*.smk defines" for r in sorted(set(named) - set(defined))]
    for r in sorted(set(defined) & set(named)):
        if named[r]["script"] != defined[r]["script"]:
            problems.append(f"rule {r}: the table says {named[r]['script']}, its script: line says {defined[r]['script']}")
        if named[r]["file"] != defined[r]["file"]:
            problems.append(f"rule {r}: the table says {named[r]['file']}, it is defined in {defined[r]['file']}")
    problems += [f"{p} is named but does not exist" for p in sorted(set(SCRIPT_PATH.findall(doc))) if not (repo / p).is_file()]
    return problems


def _outside_code(text: str) -> list[str]:
    """The lines of a markdown text that are not in a fenced or an indented code block."""
    out, fenced, previous = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and not (line.startswith("    ") and (previous.strip() == "" or previous.startswith("    "))):
            out.append(line)
        previous = line if not fenced else ""
    return out


def code_blocks(text: str) -> list[list[str]]:
    """The code blocks (fenced, or indented by four spaces after a blank line) of a markdown text."""
    blocks, current, fenced, previous = [], None, False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            if fenced:
                blocks.append(current)
                current = None
            else:
                current = []
            fenced = not fenced
        elif fenced:
            current.append(line)
        elif line.startswith("    ") and (previous.strip() == "" or current is not None):
            current = current if current is not None else []
            current.append(line[4:])
        elif current is not None and line.strip():
            blocks.append(current)
            current = None
        previous = line
    if current:
        blocks.append(current)
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = {}
    out = set()
    for line in _outside_code(text):
        m = re.match(r"#{1,6} (.+)", line)
        if m:
            s = slug(m.group(1))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def link_problems(page: Path, text: str, read=lambda p: p.read_text()) -> list[str]:
    """Relative links of ``text`` (the markdown page ``page``) whose file, or heading, is missing."""
    problems = []
    for target in LINK.findall("\n".join(_outside_code(text))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):          # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.is_file():
            problems.append(f"{page.name}: link {target} -> {file} does not exist")
        elif fragment and file.suffix == ".md" and fragment not in anchors(text if file == page else read(file)):
            problems.append(f"{page.name}: link {target}: no heading #{fragment} in {file.name}")
    return problems


def readme_problems(text: str) -> list[str]:
    problems = []
    lines = text.splitlines()
    if len(lines) > README_MAX_LINES:
        problems.append(f"README.md has {len(lines)} lines (at most {README_MAX_LINES})")
    how = [line for line in _outside_code(text) if re.match(r"#{1,6} How do I", line)]
    if len(how) < 5:
        problems.append(f"README.md has {len(how)} 'How do I' headings (want the task sections)")
    blocks = code_blocks(text)
    first = [b[0].strip() if b else "" for b in blocks[:2]]
    if first != [DEMO_COMMAND, TEST_COMMAND]:
        problems.append(f"README.md's first two code blocks are {first}, not the demo's and the tests' commands")
    for command in (DEMO_COMMAND, TEST_COMMAND):
        if command not in text:
            problems.append(f"README.md lacks the command {command!r}")
    return problems


def _smk_texts() -> dict[str, str]:
    return {f"rules/{p.name}": p.read_text() for p in sorted((REPO / "rules").glob("*.smk"))}


def _pages() -> list[Path]:
    return [README, *sorted((REPO / "docs").glob("*.md"))]


# --------------------------------------------------------------------------- the repository's docs
def test_rules_table_names_every_rule_with_its_file_and_script():
    files = _smk_texts()
    assert len(smk_rules(files)) >= 20, "the rules files' rules were not found"
    assert rules_table_problems(ARCHITECTURE.read_text(), files) == []


def test_every_script_named_in_the_architecture_page_exists():
    named = set(SCRIPT_PATH.findall(ARCHITECTURE.read_text()))
    assert named, "the architecture page names no scripts/*.py"
    assert sorted(p for p in named if not (REPO / p).is_file()) == []


def test_readme_is_short_and_task_first():
    assert readme_problems(README.read_text()) == []


def test_relative_links_of_readme_and_docs_exist():
    problems = [p for page in _pages() for p in link_problems(page, page.read_text())]
    assert problems == []


# --------------------------------------------------------------------------- the checks catch breakage
def test_a_missing_extra_or_wrong_row_is_caught():
    files, doc = _smk_texts(), ARCHITECTURE.read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `train` |"))
    assert any("rule train " in p for p in rules_table_problems(doc.replace(row + "\n", ""), files))
    extra = row.replace("`train`", "`no_such_rule`", 1)
    assert any("no_such_rule" in p for p in rules_table_problems(doc.replace(row, row + "\n" + extra), files))
    wrong = row.replace("`scripts/train.py`", "`scripts/evaluate.py`")
    assert any("rule train:" in p for p in rules_table_problems(doc.replace(row, wrong), files))
    moved = row.replace("`rules/train.smk`", "`rules/evaluate.smk`")
    assert any("rule train:" in p for p in rules_table_problems(doc.replace(row, moved), files))
    missing = doc + "\nAlso `scripts/no_such_script.py`.\n"
    assert any("no_such_script" in p for p in rules_table_problems(missing, files))


def test_a_rule_added_to_a_rules_file_must_be_documented():
    files = _smk_texts()
    files["rules/train.smk"] += '\n\nrule undocumented:\n    output:\n        "x"\n    script:\n        "../scripts/x.py"\n'
    problems = rules_table_problems(ARCHITECTURE.read_text(), files)
    assert any("rule undocumented (rules/train.smk)" in p for p in problems)


def test_indented_rules_and_their_scripts_are_parsed():
    text = 'if x:\n\n    rule a:\n        output:\n            "a"\n        script:\n            "../scripts/a.py"\n\n' \
           'rule b:\n    output:\n        "b"\n'
    assert smk_rules({"rules/t.smk": text}) == {"a": {"file": "rules/t.smk", "script": "scripts/a.py"},
                                                "b": {"file": "rules/t.smk", "script": None}}


def test_a_broken_readme_is_caught():
    text = README.read_text()
    assert any("lines" in p for p in readme_problems(text + "\n" * README_MAX_LINES))
    assert any("How do I" in p for p in readme_problems(text.replace("How do I", "Doing")))
    assert any("first two code blocks" in p for p in readme_problems(text.replace(DEMO_COMMAND, "make demo")))
    assert any("lacks the command" in p for p in readme_problems(text.replace(TEST_COMMAND, "pytest")))
    early = text.replace("## Two commands", "## Two commands\n\n    pip install it\n", 1)
    assert any("first two code blocks" in p for p in readme_problems(early))


def test_a_broken_link_is_caught():
    page = REPO / "docs" / "architecture.md"
    assert link_problems(page, "[x](nowhere/missing.md) [y](https://example.org/z)") != []
    assert link_problems(page, "[x](dag.md#no-such-heading)") != []
    assert link_problems(page, "[x](dag.md#what-reruns) [y](../README.md)\n\n## Here\n\n[z](#here)") == []
    assert link_problems(page, "[z](#not-here)\n\n## Here") != []
    assert slug("## 1. Data (HF dataset `pscotti/mindeyev2`)".lstrip("# ")) == "1-data-hf-dataset-pscottimindeyev2"
