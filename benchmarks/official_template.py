"""Copies TFX's official `taxi` template with its CLI and switches on all its steps.

The template ships as a tutorial: only CsvExampleGen runs, every other component is built
but its `components.append(...)` line is commented out, to be uncommented step by step
(the `TODO(step 5)` / `TODO(step 6)` comments in pipeline/pipeline.py). Every edit here is
a text edit that must match exactly; a template that no longer matches fails loudly.
"""

from __future__ import annotations

import ast
import collections
import re
import shutil
import subprocess
from pathlib import Path
from typing import Mapping

PIPELINE_NAME = "official"

# Commented-out `components.append(<name>)` lines of pipeline/pipeline.py in TFX 1.16, with
# how many times each occurs. example_validator and the second schema_gen (ImportSchemaGen)
# sit in the `schema_path is not None` branch, which the local runner does not take.
EXPECTED_COMMENTED_COMPONENTS = collections.Counter(
    {
        "statistics_gen": 1,
        "schema_gen": 2,
        "example_validator": 1,
        "transform": 1,
        "trainer": 1,
        "model_resolver": 1,
        "evaluator": 1,
        "pusher": 1,
    }
)
# Component ids whose output directories must exist after a run of the patched template.
EXPECTED_COMPONENT_DIRS = (
    "CsvExampleGen",
    "StatisticsGen",
    "SchemaGen",
    "Transform",
    "Trainer",
    "Evaluator",
    "Pusher",
)
# The official model's serving signature returns its probability under this key.
OUTPUT_KEY = "outputs"

_COMMENTED_APPEND = re.compile(
    r"^(?P<indent>[ \t]*)#[ \t]?(?P<statement>components\.append\((?P<name>\w+)\))[ \t]*$",
    re.MULTILINE,
)


class TemplateMismatch(RuntimeError):
    """The template's text is not what these edits expect (a different TFX version?)."""


def copy_template(tfx_cli: Path, destination: Path, env: Mapping[str, str]) -> None:
    """`tfx template copy --model=taxi` into `destination` (HOME comes from `env`)."""
    result = subprocess.run(
        [
            str(tfx_cli),
            "template",
            "copy",
            "--model=taxi",
            f"--pipeline_name={PIPELINE_NAME}",
            f"--destination_path={destination}",
        ],
        env=dict(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise TemplateMismatch(
            f"`tfx template copy` exited with {result.returncode}:\n{result.stderr[-3000:]}"
        )
    for required in ("local_runner.py", "pipeline/pipeline.py", "pipeline/configs.py"):
        if not (destination / required).is_file():
            raise TemplateMismatch(f"template copy has no {required} in {destination}")


def uncomment_components(pipeline_py: Path) -> list[str]:
    """Uncomments every `# components.append(x)` line; returns the component variables."""
    text = pipeline_py.read_text()
    found = collections.Counter(m.group("name") for m in _COMMENTED_APPEND.finditer(text))
    if found != EXPECTED_COMMENTED_COMPONENTS:
        raise TemplateMismatch(
            f"{pipeline_py}: commented-out components.append lines {dict(found)}, "
            f"expected {dict(EXPECTED_COMMENTED_COMPONENTS)}"
        )
    text = _COMMENTED_APPEND.sub(r"\g<indent>\g<statement>", text)
    _write_python(pipeline_py, text)
    return sorted(found.elements())


def set_module_constant(path: Path, name: str, value: str) -> str:
    """Replaces the one-line module-level assignment `NAME = ...`; returns the old line."""
    pattern = re.compile(rf"^{re.escape(name)} = .*$", re.MULTILINE)
    text = path.read_text()
    matches = pattern.findall(text)
    if len(matches) != 1:
        raise TemplateMismatch(f"{path}: expected one line `{name} = ...`, found {len(matches)}")
    _write_python(path, pattern.sub(lambda _: f"{name} = {value!r}", text))
    return matches[0]


def _write_python(path: Path, text: str) -> None:
    try:
        ast.parse(text, filename=str(path))
    except SyntaxError as error:
        raise TemplateMismatch(f"{path} no longer parses after editing: {error}") from None
    path.write_text(text)


def prepare(
    tfx_cli: Path, destination: Path, data_dir: Path, output_dir: Path, env: Mapping[str, str]
) -> list[str]:
    """Copies the template, enables every component and points it at our data and output
    directories; returns a description of each edit. Its defaults (train/eval steps, the
    model, Beam args, enable_cache unset = off) are left alone."""
    copy_template(tfx_cli, destination, env)
    enabled = uncomment_components(destination / "pipeline" / "pipeline.py")
    runner = destination / "local_runner.py"
    old_data = set_module_constant(runner, "DATA_PATH", str(data_dir))
    old_output = set_module_constant(runner, "OUTPUT_DIR", str(output_dir))
    # The template's own copy of the full sample includes our hold-out: remove it, so a
    # DATA_PATH that somehow still pointed there would fail instead of training on it.
    shutil.rmtree(destination / "data")
    return [f"pipeline/pipeline.py: uncommented components.append({name})" for name in enabled] + [
        f"local_runner.py: `{old_data}` -> DATA_PATH = '{data_dir}'",
        f"local_runner.py: `{old_output}` -> OUTPUT_DIR = '{output_dir}'",
    ]


def pipeline_root(output_dir: Path) -> Path:
    """Where the template's local_runner puts its artifacts (PIPELINE_ROOT)."""
    return output_dir / "tfx_pipeline_output" / PIPELINE_NAME


def metadata_path(output_dir: Path) -> Path:
    """Its SQLite MLMD store (METADATA_PATH)."""
    return output_dir / "tfx_metadata" / PIPELINE_NAME / "metadata.db"


def serving_model_dir(output_dir: Path) -> Path:
    """Where its Pusher writes (SERVING_MODEL_DIR = PIPELINE_ROOT/serving_model)."""
    return pipeline_root(output_dir) / "serving_model"
