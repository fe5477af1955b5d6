"""A local run with nothing to do, answered before TFX and TensorFlow load.

A local run whose data, code and settings are those of the last successful run, and whose
outputs nobody changed since, would only find every component cached (and push nothing):
local_runner.py says so in well under a second instead, with that run's summary. Anything
else runs the pipeline as usual, where TFX's cache decides what to run again.

What is compared, without reading a data file:
- inputs: every file under the data directory (path, size, modification time), the
  project's code and schema (models/, pipeline/, schema/, local_runner.py: contents), the
  whole settings tree;
- outputs: the MLMD store's file (size, modification time), the pushed model versions and
  the rejection records (names).

The record is removed when a run starts and written when it succeeds, so a failed, killed or
concurrent run never leaves one that is out of date. Only a local run with local paths and
TFX's cache on uses it.
This module imports nothing heavy (no TensorFlow, TFX or ML Metadata).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from pipeline.names import REJECTIONS_FOLDER
from pipeline.settings import PROJECT_ROOT, PipelineSettings

RECORD_NAME = "last-successful-run.json"
CODE_PATHS = ("models", "pipeline", "schema", "local_runner.py")


def record_path(settings: PipelineSettings) -> str:
    return os.path.join(settings.pipeline_root, RECORD_NAME)


def _applies(settings: PipelineSettings) -> bool:
    """Local paths only (a bucket's files are not listed here), and only when TFX's cache
    would serve every component (not with PIPELINE_ENABLE_CACHE=0, nor for a query's result,
    which nothing fingerprints)."""
    paths = (settings.data.data_dir, settings.pipeline_root, settings.serving_model_dir)
    return settings.pipeline_caching and not any("://" in path for path in paths)


def _hash(parts: list) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _files(root: str) -> list[str]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        found.extend(os.path.join(folder, name) for name in sorted(names))
    return found


def _stat(path: str) -> list:
    try:
        info = os.stat(path)
    except OSError:
        return [path, None]
    return [path, info.st_size, info.st_mtime_ns]


def _listing(path: str) -> list[str]:
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def inputs_fingerprint(settings: PipelineSettings, project_root: Path = PROJECT_ROOT) -> str:
    """What the run reads: the data files' sizes and times, the code's contents, the settings."""
    data = [_stat(path) for path in _files(settings.data.data_dir)]
    code = []
    for name in CODE_PATHS:
        path = project_root / name
        for file in _files(str(path)) if path.is_dir() else [str(path)]:
            if file.endswith((".pyc", ".pyo")):
                continue
            with open(file, "rb") as handle:
                code.append(
                    [os.path.relpath(file, project_root), hashlib.sha256(handle.read()).hexdigest()]
                )
    return _hash([data, code, settings.model_dump(mode="json")])


def outputs_fingerprint(settings: PipelineSettings) -> str:
    """What the run leaves: the MLMD store's file, the pushed versions, the rejection records."""
    return _hash(
        [
            _stat(settings.metadata_path),
            _listing(settings.serving_model_dir),
            _listing(os.path.join(settings.pipeline_root, REJECTIONS_FOLDER)),
        ]
    )


def forget(settings: PipelineSettings) -> None:
    """Before a run: no record stays from a run whose outputs this one will change."""
    if _applies(settings):
        try:
            os.remove(record_path(settings))
        except FileNotFoundError:
            pass


def record(settings: PipelineSettings, inputs: str, summary: str, log_path: str) -> None:
    """After a successful run: its inputs (taken when it started), its outputs, its summary."""
    if not _applies(settings):
        return
    path = record_path(settings)
    entry = {
        "inputs": inputs,
        "outputs": outputs_fingerprint(settings),
        "finished": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "summary": summary,
        "log": log_path,
    }
    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.partial"
    with open(partial, "w") as handle:
        json.dump(entry, handle, indent=1)
    os.replace(partial, path)  # never half-written


def unchanged_since_last_run(settings: PipelineSettings) -> Optional[str]:
    """The message for a run with nothing to do (the last successful run's time, log and
    summary), or None when the pipeline must run."""
    if not _applies(settings):
        return None
    try:
        with open(record_path(settings)) as handle:
            entry = json.load(handle)
    except (OSError, ValueError):
        return None
    if entry.get("outputs") != outputs_fingerprint(settings):
        return None
    if entry.get("inputs") != inputs_fingerprint(settings):
        return None
    return (
        f"{settings.name} is up to date: the data, code and settings are those of the run that "
        f"succeeded at {entry['finished']} (its log: {entry['log']}); nothing to run "
        "(--force runs the pipeline anyway, every component cached)\n" + entry["summary"]
    )


def nothing_to_run_message() -> Optional[str]:
    """For local_runner.py before it imports TFX: the message when this local run has
    nothing to do; None when it must run (or when its settings do not load: the run then
    reports that)."""
    try:
        settings = PipelineSettings.load(orchestrator="local")
    except Exception:  # noqa: BLE001 (the real run reports bad settings)
        return None
    return unchanged_since_last_run(settings)
