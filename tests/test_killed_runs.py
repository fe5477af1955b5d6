"""Executions a killed run left RUNNING: marked FAILED by the next local run, their orphaned
output folders removed where safe. The rules on an MLMD store written here; a real kill -9 of
a real run in tests/test_killed_run_pipeline.py."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import ml_metadata as mlmd
from tfx import v1 as tfx

from pipeline import killed_runs
from pipeline.settings import PipelineSettings

Execution = mlmd.proto.Execution


def _settings(tmp_path: Path) -> PipelineSettings:
    return PipelineSettings.load(
        {}, data_dir=str(tmp_path / "data"), output_dir=str(tmp_path / "outputs")
    )


class _Store:
    """An MLMD store laid out as TFX writes one: pipeline and node contexts, executions."""

    def __init__(self, settings: PipelineSettings):
        os.makedirs(os.path.dirname(settings.metadata_path), exist_ok=True)
        self.settings = settings
        self.store = mlmd.MetadataStore(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(settings.metadata_path)
        )
        self.pipeline_type = self.store.put_context_type(mlmd.proto.ContextType(name="pipeline"))
        self.node_type = self.store.put_context_type(mlmd.proto.ContextType(name="node"))
        self.execution_type = self.store.put_execution_type(mlmd.proto.ExecutionType(name="Step"))
        self.artifact_type = self.store.put_artifact_type(mlmd.proto.ArtifactType(name="Model"))
        [self.pipeline] = self.store.put_contexts(
            [mlmd.proto.Context(type_id=self.pipeline_type, name=settings.name)]
        )
        self.nodes: dict[str, int] = {}

    def execution(self, node_id: str, state, inputs=(), outputs=()) -> int:
        """An execution of the node with artifacts at these URIs (events only: a RUNNING
        execution has its output folders but, in TFX 1.16, no output artifacts yet)."""
        if node_id not in self.nodes:
            [self.nodes[node_id]] = self.store.put_contexts(
                [mlmd.proto.Context(type_id=self.node_type, name=f"{self.settings.name}.{node_id}")]
            )
        events = []
        for kind, uris in ((mlmd.proto.Event.INPUT, inputs), (mlmd.proto.Event.OUTPUT, outputs)):
            for uri in uris:
                artifact = mlmd.proto.Artifact(type_id=self.artifact_type, uri=uri)
                events.append((artifact, mlmd.proto.Event(type=kind)))
        contexts = self.store.get_contexts_by_id([self.pipeline_context_id(), self.nodes[node_id]])
        execution_id, _, _ = self.store.put_execution(
            Execution(type_id=self.execution_type, last_known_state=state), events, contexts
        )
        return execution_id

    def pipeline_context_id(self) -> int:
        return self.store.get_context_by_type_and_name("pipeline", self.settings.name).id

    def state(self, execution_id: int) -> str:
        [execution] = self.store.get_executions_by_id([execution_id])
        return Execution.State.Name(execution.last_known_state)


def _folder(settings: PipelineSettings, *parts) -> Path:
    path = Path(settings.pipeline_root, *map(str, parts))
    path.mkdir(parents=True, exist_ok=True)
    (path / "part-0").write_text("x")
    return path


def test_stale_executions_are_failed_and_only_their_unreferenced_folders_removed(tmp_path):
    settings = _settings(tmp_path)
    s = _Store(settings)
    root = settings.pipeline_root
    transform = s.execution(
        "Transform", Execution.COMPLETE, outputs=[f"{root}/Transform/transform_graph/1"]
    )
    _folder(settings, "Transform", "transform_graph", transform)
    trainer = s.execution("Trainer", Execution.RUNNING)
    model = _folder(settings, "Trainer", "model", trainer)
    model_run = _folder(settings, "Trainer", "model_run", trainer)
    temp = _folder(settings, "Trainer", ".system", "executor_execution", trainer, ".temp")
    stateful = _folder(settings, "Trainer", ".system", "stateful_working_dir", "abc")
    # A NEW execution whose folder a later complete execution read: not an orphan.
    evaluator = s.execution("Evaluator", Execution.NEW)
    shared = _folder(settings, "Evaluator", "blessing", evaluator)
    s.execution("Pusher", Execution.COMPLETE, inputs=[str(shared)])

    cleanup = killed_runs.clean_up(settings)

    assert s.state(trainer) == s.state(evaluator) == "FAILED"
    assert s.state(transform) == "COMPLETE"
    [failed] = s.store.get_executions_by_id([trainer])
    assert "killed" in failed.custom_properties["__execution_result__"].string_value
    assert [(e.node_id, e.id, e.state) for e in cleanup.executions] == [
        ("Trainer", trainer, "RUNNING"),
        ("Evaluator", evaluator, "NEW"),
    ]
    assert cleanup.removed == [str(model), str(model_run), str(temp.parent)]
    assert cleanup.kept == [(str(shared), "referenced by a complete execution")]
    assert not model.exists() and not model_run.exists() and not temp.parent.exists()
    assert shared.exists() and stateful.exists()
    assert Path(root, "Transform", "transform_graph", str(transform)).exists()
    assert cleanup.summary() == (
        f"Metadata: 2 executions left RUNNING or NEW by a killed run marked FAILED: "
        f"Trainer (execution {trainer}), Evaluator (execution {evaluator}); orphaned output "
        f"folders removed: Trainer/model/{trainer}, Trainer/model_run/{trainer}, "
        f"Trainer/.system/executor_execution/{trainer}; kept: Evaluator/blessing/{evaluator} "
        "(referenced by a complete execution)"
    )
    # Nothing left to do the next time.
    assert killed_runs.clean_up(settings) is None


def test_another_pipelines_executions_are_not_touched(tmp_path):
    settings = _settings(tmp_path)
    s = _Store(settings)
    other = settings.with_overrides(name="other-pipeline")
    s.settings = other
    s.store.put_contexts([mlmd.proto.Context(type_id=s.pipeline_type, name=other.name)])
    running = s.execution("Trainer", Execution.RUNNING)
    assert killed_runs.clean_up(settings) is None
    assert s.state(running) == "RUNNING"


def _hold_lock(settings: PipelineSettings, held, release) -> None:
    with killed_runs.run_lock(settings) as holder:
        assert holder is None
        held.set()
        release.wait()


def test_the_run_lock_admits_one_run_and_names_the_holder(tmp_path):
    settings = _settings(tmp_path)
    context = multiprocessing.get_context("fork")
    held, release = context.Event(), context.Event()
    other = context.Process(target=_hold_lock, args=(settings, held, release))
    other.start()
    try:
        assert held.wait(60)
        with killed_runs.run_lock(settings) as holder:
            assert holder == other.pid
    finally:
        release.set()
        other.join()
    with killed_runs.run_lock(settings) as holder:  # released with its process
        assert holder is None
