"""The `tfx-template` CLI (cli/main.py) and the commands the docs write: every command's
`--help` shows its options and examples, every `make <target>` and `tfx-template <command>` in
README.md and docs/ exists, the make targets of the quickstart's table call the command next
to them, a mistake on the command line is one line, and the runner files print their help
without building anything."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
COMMANDS = [
    "run",
    "watch",
    "stream",
    "replay",
    "serve",
    "batch-predict",
    "skew",
    "serving-strategy",
    "report",
    "lineage",
    "new-dataset",
    "data",
    "generate-data",
    "schema",
]
# Documented commands not there yet (a strict xfail below fails once one exists).
PENDING: set[str] = set()

FENCED = re.compile(r"```.*?```", re.DOTALL)
INLINE = re.compile(r"`([^`\n]+)`")
MAKE = re.compile(r"(?<![\w$(-])make\s+([a-z][\w-]*)(?![\w*-])")
CLI = re.compile(r"(?<![\w-])tfx-template\s+([a-z][\w-]*)")
TARGET = re.compile(r"^([A-Za-z][\w-]*)\s*:(?!=)", re.MULTILINE)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def code_in(path: Path) -> list[str]:
    """The code of a Markdown file: fenced blocks and inline code spans."""
    text = path.read_text(encoding="utf-8")
    return FENCED.findall(text) + INLINE.findall(FENCED.sub("", text))


def documented(pattern: re.Pattern) -> dict[str, list[str]]:
    """name -> the files whose code uses it."""
    found: dict[str, list[str]] = {}
    for path in DOCS:
        for code in code_in(path):
            for name in pattern.findall(code):
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def make_targets() -> set[str]:
    return set(TARGET.findall((REPO / "Makefile").read_text()))


def recipe(target: str) -> str:
    """The recipe lines of a Makefile target."""
    lines = (REPO / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"^{re.escape(target)}\s*:", line))
    body = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        body.append(line.strip())
    return "\n".join(body)


def _pending(names) -> list:
    return [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=True, reason=f"`tfx-template {name}` is not there yet"),
        )
        if name in PENDING
        else name
        for name in sorted(names)
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_options_and_examples(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, result.output
    assert f"Usage: tfx-template {command} " in result.output
    examples = result.output.split("Examples:", 1)
    assert len(examples) == 2, f"no examples in `tfx-template {command} --help`"
    # The examples show the command itself (or the make target calling it).
    assert f"tfx-template {command}" in examples[1] or "make " in examples[1]


def test_every_command_is_tested_and_listed():
    result = invoke("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^  ([a-z][\w-]*)  ", result.output.split("Commands:", 1)[1], re.MULTILINE)
    assert sorted(listed) == sorted(COMMANDS)
    assert invoke().exit_code == 0  # no command: the same help


@pytest.mark.parametrize("command", _pending(documented(CLI)))
def test_documented_commands_exist(command):
    result = invoke(command, "--help")
    assert result.exit_code == 0, f"`tfx-template {command}` is in the docs: {result.output}"


@pytest.mark.parametrize("target", sorted(documented(MAKE)))
def test_documented_make_targets_exist(target):
    assert target in make_targets(), f"`make {target}` is in {documented(MAKE)[target]}"


QUICKSTART_ROW = re.compile(
    r"^\| `make ([a-z][\w-]*)[^`]*` \| `tfx-template ([a-z][\w-]*)", re.MULTILINE
)


@pytest.mark.parametrize(
    "target, command",
    [
        pytest.param(target, command, marks=pytest.mark.xfail(strict=True, reason="not yet"))
        if command in PENDING
        else (target, command)
        for target, command in QUICKSTART_ROW.findall(
            (REPO / "docs" / "quickstart.md").read_text(encoding="utf-8")
        )
    ],
)
def test_make_targets_call_the_cli(target, command):
    assert f"$(CLI) {command}" in recipe(target), recipe(target)


def test_unknown_option_is_one_line():
    result = invoke("skew", "--no-such-option")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: No such option: --no-such-option")
    assert result.stderr.count("\n") == 1, result.stderr
    assert "tfx-template skew --help" in result.stderr


def test_bad_value_and_missing_argument_are_one_line():
    for args, fragment in (
        (["serve", "--port", "eighty"], "'--port'"),
        (["generate-data"], "OUT_DIR"),
        (["stream"], "--input/--subscription"),
    ):
        result = invoke(*args)
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: ") and fragment in result.stderr
        assert result.stderr.count("\n") == 1, result.stderr


def test_the_module_runs_as_the_console_script():
    """`python -m cli.main` is what `tfx-template` (the [project.scripts] entry) runs."""
    assert re.search(
        r'^tfx-template = "cli\.main:app"$', (REPO / "pyproject.toml").read_text(), re.MULTILINE
    )
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "skew", "--bogus"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: No such option: --bogus")
    assert result.stderr.endswith("(see 'tfx-template skew --help')\n")
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("runner", ["airflow_runner.py", "kubeflow_runner.py"])
def test_runner_help_prints_the_docstring_without_building(runner):
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, runner, "--help"], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    seconds = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    docstring = ast.get_docstring(ast.parse((REPO / runner).read_text()), clean=False)
    assert result.stdout.strip() == docstring.strip()
    # Importing TFX alone takes 10 s or more: a quick exit built and compiled nothing.
    assert seconds < 8, f"{runner} --help took {seconds:.1f} s"
