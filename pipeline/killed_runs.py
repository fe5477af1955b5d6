"""What a killed local run leaves behind, cleaned up when the next one starts.

A run killed with `kill -9` (or a machine that went down) never tells MLMD how its executions
ended: they stay RUNNING (or NEW) forever, and their output folders, which TFX creates before
the executor starts, stay on disk with no artifact pointing at them. The next local run, before
any work, marks those executions FAILED (with a result message saying why) and removes their
orphaned output folders, as TFX itself does when an executor fails:

- `<pipeline root>/<node>/<output>/<execution id>/` for each of the node's outputs, and
- `<pipeline root>/<node>/.system/executor_execution/<execution id>/` (its temp files),

each only where that is safe: on a local file system, inside the pipeline root, and not
referenced by any artifact of a COMPLETE or CACHED execution (a folder that is, or one not on a
local file system, is listed and kept). The node's stateful working folders are kept, as TFX
keeps them after a failure.

Only executions no live run owns are touched: every local run holds the pipeline's run lock
(`<metadata dir>/run.lock`, an flock, which the kernel releases when its process dies, even by
kill -9) for its whole length, and the cleanup runs only in the run that took the lock. A run
that finds the lock held (another local run of the same pipeline in progress) leaves MLMD alone.
Airflow runs share the SQLite store but not the lock: do not start a local run while an
Airflow run of the same pipeline is in progress.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import os
import shutil
from typing import Iterator, Optional

import ml_metadata as mlmd
from absl import logging
from tfx.orchestration.portable.mlmd import execution_lib
from tfx.proto.orchestration import execution_result_pb2
from tfx.utils import status as status_lib

from pipeline import metadata
from pipeline.settings import PipelineSettings

Execution = mlmd.proto.Execution
STALE_STATES = (Execution.NEW, Execution.RUNNING)
SUCCESSFUL_STATES = (Execution.COMPLETE, Execution.CACHED)
LOCK_FILE = "run.lock"
# TFX's layout of a node's folder under the pipeline root (tfx/orchestration/portable/
# outputs_utils.py): outputs at <node>/<output key>/<execution id>, its own files under .system.
SYSTEM_DIR = ".system"
EXECUTOR_EXECUTION_DIR = "executor_execution"
RESULT_MESSAGE = "left {state} by a local run that was killed; marked FAILED by the next local run"


@dataclasses.dataclass
class StaleExecution:
    id: int
    node_id: str
    state: str  # RUNNING or NEW
    folders: list[str]  # its output folders on disk


@dataclasses.dataclass
class Cleanup:
    """What the cleanup found and did."""

    pipeline_root: str
    executions: list[StaleExecution]
    removed: list[str]
    kept: list[tuple[str, str]]  # (folder, why it was kept)

    def summary(self) -> str:
        """One line: how many executions, which components, what happened to their folders."""
        count = len(self.executions)
        states = " or ".join(sorted({e.state for e in self.executions}, reverse=True))
        names = ", ".join(f"{e.node_id} (execution {e.id})" for e in self.executions)
        line = (
            f"Metadata: {count} execution{'s' if count > 1 else ''} left {states} by a killed "
            f"run marked FAILED: {names}"
        )
        if self.removed:
            removed = ", ".join(map(self._short, self.removed))
            line += f"; orphaned output folders removed: {removed}"
        if self.kept:
            line += "; kept: " + ", ".join(f"{self._short(f)} ({why})" for f, why in self.kept)
        if not self.removed and not self.kept:
            line += "; no output folders on disk"
        return line

    def _short(self, folder: str) -> str:
        """A folder relative to the pipeline root, where it is under it."""
        relative = os.path.relpath(folder, self.pipeline_root)
        return folder if relative.startswith("..") else relative


def lock_path(settings: PipelineSettings) -> str:
    return os.path.join(os.path.dirname(settings.metadata_path), LOCK_FILE)


@contextlib.contextmanager
def run_lock(settings: PipelineSettings) -> Iterator[Optional[int]]:
    """Holds the pipeline's run lock for the block; yields None when it was taken, else the
    pid written by the run holding it (0 if unknown), and the block runs without it."""
    path = lock_path(settings)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            lock.seek(0)
            holder = lock.read().strip()
            yield int(holder) if holder.isdigit() else 0
            return
        try:
            lock.seek(0)
            lock.truncate()
            lock.write(str(os.getpid()))
            lock.flush()
            yield None
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def stale_executions(store: mlmd.MetadataStore, settings: PipelineSettings) -> list[StaleExecution]:
    """The pipeline's executions in state NEW or RUNNING, oldest first, with the output folders
    TFX made for them that exist."""
    prefix = f"{settings.name}."
    stale = []
    for context in store.get_contexts_by_type("node"):
        if not context.name.startswith(prefix):
            continue
        node_id = context.name[len(prefix) :]
        for execution in store.get_executions_by_context(context.id):
            if execution.last_known_state in STALE_STATES:
                stale.append(
                    StaleExecution(
                        execution.id,
                        node_id,
                        Execution.State.Name(execution.last_known_state),
                        _output_folders(settings.pipeline_root, node_id, execution.id),
                    )
                )
    return sorted(stale, key=lambda e: e.id)


def _output_folders(pipeline_root: str, node_id: str, execution_id: int) -> list[str]:
    node_dir = os.path.join(pipeline_root, node_id)
    if not os.path.isdir(node_dir):
        return []
    candidates = [
        os.path.join(node_dir, key, str(execution_id))
        for key in sorted(os.listdir(node_dir))
        if not key.startswith(".")
    ]
    candidates.append(os.path.join(node_dir, SYSTEM_DIR, EXECUTOR_EXECUTION_DIR, str(execution_id)))
    return [folder for folder in candidates if os.path.exists(folder)]


def referenced_uris(store: mlmd.MetadataStore, settings: PipelineSettings) -> set[str]:
    """URIs of every artifact a COMPLETE or CACHED execution of the pipeline read or wrote."""
    context = store.get_context_by_type_and_name("pipeline", settings.name)
    if context is None:
        return set()
    done = [
        e.id
        for e in store.get_executions_by_context(context.id)
        if e.last_known_state in SUCCESSFUL_STATES
    ]
    events = store.get_events_by_execution_ids(done) if done else []
    ids = list({event.artifact_id for event in events})
    return {a.uri.rstrip("/") for a in store.get_artifacts_by_id(ids)} if ids else set()


def _why_kept(folder: str, pipeline_root: str, referenced: set[str]) -> Optional[str]:
    """Why an orphan candidate must stay, or None if removing it is safe."""
    if "://" in pipeline_root:
        return "not on a local file system"
    root = os.path.realpath(pipeline_root)
    real = os.path.realpath(folder)
    if not real.startswith(root + os.sep):
        return "outside the pipeline root"
    for uri in referenced:
        if uri == folder or uri.startswith(folder + "/") or folder.startswith(uri + "/"):
            return "referenced by a complete execution"
    return None


def mark_failed(store: mlmd.MetadataStore, executions: list[StaleExecution]) -> None:
    """Sets each execution FAILED, with a result message as TFX writes for a failure."""
    if not executions:
        return
    by_id = {e.id: e for e in executions}
    updated = []
    for execution in store.get_executions_by_id(list(by_id)):
        if execution.last_known_state not in STALE_STATES:
            continue
        result = execution_result_pb2.ExecutionResult(
            code=status_lib.Code.ABORTED,
            result_message=RESULT_MESSAGE.format(state=by_id[execution.id].state),
        )
        execution_lib.set_execution_result(result, execution)
        execution.last_known_state = Execution.FAILED
        updated.append(execution)
    store.put_executions(updated)


def clean_up(settings: PipelineSettings, remove_folders: bool = True) -> Optional[Cleanup]:
    """Marks the executions a killed run left FAILED and removes their orphaned output
    folders where safe (see the module's docstring); None when there were none. Call it only
    while holding `run_lock`."""
    store = metadata.open_store(settings)
    if store is None:
        return None
    stale = stale_executions(store, settings)
    if not stale:
        return None
    mark_failed(store, stale)
    referenced = referenced_uris(store, settings)
    cleanup = Cleanup(settings.pipeline_root, stale, [], [])
    for execution in stale:
        for folder in execution.folders:
            why = _why_kept(folder, settings.pipeline_root, referenced)
            if why is None and remove_folders:
                shutil.rmtree(folder, ignore_errors=True)
                cleanup.removed.append(folder)
            else:
                cleanup.kept.append((folder, why or "removal off"))
    for execution in stale:
        logging.info(
            "Execution %d of %s was left %s by a killed run: marked FAILED; output folders: %s",
            execution.id,
            execution.node_id,
            execution.state,
            ", ".join(execution.folders) or "none",
        )
    return cleanup
