"""A throwaway copy of the project for tests (and measurements) that write models/features.py,
schema/schema.pbtxt and data/: `tfx-template new-dataset` and `python local_runner.py`
run in the copy as subprocesses, so the real files are never touched.

The copy holds the tracked files of the project's code (not data/, not tests/). Its commands
run with cwd and PYTHONPATH set to the copy: PYTHONPATH entries come before site-packages,
and the editable install's finder is appended to sys.meta_path, so the copy's packages win.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
COPIED_DIRS = ("pipeline", "models", "schema", "analysis", "serving", "streaming", "scripts", "cli")
COPIED_FILES = (
    "local_runner.py",
    "airflow_runner.py",
    "kubeflow_runner.py",
    "pyproject.toml",
    "Makefile",
)


def tracked_files(root: Path = ROOT) -> list[str]:
    """The project files to copy, as git tracks them (the working tree's versions); without
    git, every file under the copied folders."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--", *COPIED_DIRS, *COPIED_FILES],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        names = [n for n in listed.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):
        names = [
            str(p.relative_to(root))
            for d in COPIED_DIRS
            for p in (root / d).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts
        ] + list(COPIED_FILES)
    # New, not yet committed modules of the working tree count too.
    return [n for n in names if (root / n).is_file()]


def copy_project(dest: Path, root: Path = ROOT) -> Path:
    """The project's code under dest (created); returns dest."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in tracked_files(root):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / name, target)
    for name in ("pipeline/new_dataset.py",):  # in case it is not committed yet
        if (root / name).is_file() and not (dest / name).is_file():
            shutil.copy2(root / name, dest / name)
    return dest


def env(project: Path, **overrides: str) -> dict[str, str]:
    """The environment of a command in the copy: its own imports, outputs under it."""
    base = {
        k: v for k, v in os.environ.items() if not (k.startswith("PIPELINE_") or k == "PYTHONPATH")
    }
    return {
        **base,
        "PYTHONPATH": str(project),
        "TF_USE_LEGACY_KERAS": "1",
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PIPELINE_OUTPUT_DIR": str(project / "outputs"),
        **overrides,
    }


def run_new_dataset(
    project: Path, args: Sequence[str], timeout: float = 1800, **env_overrides: str
) -> subprocess.CompletedProcess:
    """`tfx-template new-dataset ARGS` in the copy."""
    return subprocess.run(
        [sys.executable, "-m", "cli.main", "new-dataset", *args],
        cwd=project,
        env=env(project, **env_overrides),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_local_runner(
    project: Path, timeout: Optional[float] = 3600, **env_overrides: str
) -> subprocess.CompletedProcess:
    """`python local_runner.py` (what `make run` runs) in the copy."""
    return subprocess.run(
        [sys.executable, "local_runner.py"],
        cwd=project,
        env=env(project, **env_overrides),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def serving_versions(project: Path, pipeline_name: str) -> list[str]:
    """Pushed model versions of the copy's pipeline."""
    base = project / "outputs" / "serving_model" / pipeline_name
    return sorted(os.listdir(base)) if base.is_dir() else []
