"""The docs say only what is true: every `qkbench` command and flag they show exists, every
config key in their YAML is a key of the config models, the column table is the typed record's,
and the layout table names every module."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml
from qkbench.cli import build_parser
from qkbench.plan import config as config_module
from qkbench.records.record import columns_markdown

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```([\w-]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# The sections of a config whose keys are a model's fields (backends entries carry options).
SECTIONS = {"sweep": config_module.Sweep, "timing": config_module.Timing,
            "agreement": config_module.AgreementSettings, "output": config_module.Output}


def _blocks(kind: set[str]) -> list[tuple[Path, str]]:
    return [(doc, body) for doc in DOCS for lang, body in FENCE.findall(doc.read_text("utf-8"))
            if lang in kind]


def _command_lines() -> list[tuple[Path, str]]:
    """`qkbench …` lines in shell blocks, and `qkbench …` in inline code anywhere."""
    found = []
    for doc, body in _blocks({"bash", "sh", "shell", "console", "text", ""}):
        for line in body.replace("\\\n", " ").splitlines():  # join continued lines
            line = line.strip().removeprefix("$ ").split("  #")[0].split(" # ")[0]
            for part in re.split(r"&&|\|\||;|\|", line):
                part = part.strip()
                if part.startswith(("qkbench ", "python -m qkbench ")):
                    found.append((doc, part))
    for doc in DOCS:
        text = FENCE.sub("", doc.read_text("utf-8"))
        found += [(doc, code) for code in re.findall(r"`(qkbench [^`]+)`", text)]
    return found


def _subparsers() -> dict:
    parser = build_parser()
    (action,) = [a for a in parser._actions if a.choices and isinstance(a.choices, dict)]
    return action.choices


def test_docs_show_commands():
    assert len(_command_lines()) > 20  # the parser below is really reading the docs


@pytest.mark.parametrize("doc,line", _command_lines(), ids=lambda v: str(v)[-60:])
def test_every_command_and_flag_the_docs_show_exists(doc, line):
    words = shlex.split(line.replace("[", " ").replace("]", " ").replace("...", " "))
    words = words[3:] if words[:3] == ["python", "-m", "qkbench"] else words[1:]
    commands = _subparsers()
    if not words or words[0].startswith("-"):
        return  # `qkbench --version`
    assert words[0] in commands, f"{doc.name}: `{line}`: no command {words[0]!r}"
    command = commands[words[0]]
    nested = [a.choices for a in command._actions if isinstance(a.choices, dict)]
    if nested:  # `qkbench submit slurm ...`: the flags are the scheduler's
        assert len(words) > 1 and words[1] in nested[0], f"{doc.name}: `{line}`: no {words[:2]}"
        command = nested[0][words[1]]
    flags = {flag for action in command._actions for flag in action.option_strings}
    for word in words[1:]:
        if word.startswith("--"):
            assert word.split("=")[0] in flags, f"{doc.name}: `{line}`: no flag {word}"


def _yaml_snippets() -> list[tuple[Path, object]]:
    out = []
    for doc, body in _blocks({"yaml", "yml"}):
        data = yaml.safe_load(body)
        if isinstance(data, dict) and "jobs" in data:
            continue  # a CI workflow, not a config
        out.append((doc, data))
    return out


def test_docs_show_config_snippets():
    assert len(_yaml_snippets()) >= 3


@pytest.mark.parametrize("doc,data", _yaml_snippets(), ids=lambda v: str(v)[:40])
def test_every_config_key_the_docs_show_exists(doc, data):
    assert isinstance(data, dict), f"{doc.name}: a YAML snippet that is not a mapping"
    fields = config_module.Config.model_fields
    for key, value in data.items():
        assert key in fields, f"{doc.name}: no config key {key!r}"
        if key not in SECTIONS:
            continue
        assert isinstance(value, dict), f"{doc.name}: {key} is a mapping"
        for inner in value:
            assert inner in SECTIONS[key].model_fields, f"{doc.name}: no config key {key}.{inner}"


def test_full_config_snippets_are_valid_configs():
    """A snippet with a name, a sweep and backends is a whole config: it must validate."""
    whole = [(doc, data) for doc, data in _yaml_snippets()
             if isinstance(data, dict) and {"name", "sweep", "backends"} <= set(data)]
    assert whole
    for doc, data in whole:
        data = {**data, "backends": [b for b in data["backends"]
                                     if not (isinstance(b, str) and ":" in b)]}  # examples
        config_module.parse(data, doc.name)


def test_the_column_table_is_the_typed_record():
    text = (REPO / "docs" / "run-directory.md").read_text("utf-8")
    table = text.split("<!-- columns: generated from qkbench.records.record.columns_markdown() -->"
                       )[1].split("<!-- end columns -->")[0].strip()
    assert table == columns_markdown(), "regenerate the table in docs/run-directory.md"


def test_the_layout_table_names_every_module():
    text = (REPO / "docs" / "layout.md").read_text("utf-8")
    named = set(re.findall(r"^\| `([\w/]+\.py)` \|", text, re.MULTILINE))
    modules = {str(p.relative_to(REPO)) for folder in ("harness", "backends")
               for p in (REPO / folder).rglob("*.py") if p.name != "__init__.py"}
    assert modules == named, (f"missing: {sorted(modules - named)}; "
                              f"gone: {sorted(named - modules)}")


def test_links_between_docs_resolve():
    # methodology, correctness, attention, gpu and numba are written in parallel (other issues)
    pending = {"methodology.md", "correctness.md", "attention.md", "gpu.md", "numba.md"}
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", doc.read_text("utf-8")):
            if Path(target).name in pending:
                continue
            assert (doc.parent / target).is_file(), f"{doc.name} links to missing {target}"


def test_the_readme_is_a_door():
    assert len((REPO / "README.md").read_text("utf-8").splitlines()) <= 250


def test_ci_runs_the_readme_test_command():
    """CI calls the README's test command, word for word (with `python3` for `python`): what a
    newcomer runs is what is kept green."""
    readme = (REPO / "README.md").read_text("utf-8").replace("\\\n", " ")
    line = next(line for line in readme.splitlines() if "-m pytest" in line)
    commands = [" ".join(part.split()).replace("python ", "python3 ")
                for part in line.split("&&") if "pytest" in part]
    ci = [" ".join(line.split()) for line in (REPO / ".ci" / "run").read_text().splitlines()
          if not line.lstrip().startswith("#")]
    assert commands and all(command in ci for command in commands), (commands, ci)
