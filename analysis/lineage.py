"""Where the served model came from, read from MLMD: the run that trained it, the data spans,
schema, statistics, transform graph and hyperparameters it was trained with, its evaluation
and blessing, and when it was pushed.

    make lineage                     # the model being served (newest pushed version)
    make lineage MODEL=<model path>  # a pushed version dir or a Trainer model artifact
    tfx-template lineage [<model path>]
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import sys
from typing import Optional

import ml_metadata as mlmd

from analysis import artifacts
from pipeline import metadata
from pipeline.names import WINDOW_EXAMPLES_ID
from pipeline.settings import PipelineSettings

HYPERPARAMETERS_FILE = "best_hyperparameters.txt"  # what the Tuner writes


@dataclasses.dataclass
class Lineage:
    model_uri: str
    trained_in_run: str
    trained_at: str
    spans: list[int]
    examples: list[str]
    schema: str
    # span -> StatisticsGen output (spans ingested before the first full run have none)
    statistics: dict[int, str]
    transform_graph: str
    hyperparameters: dict
    hyperparameters_source: str
    evaluation: Optional[str]
    blessed: Optional[bool]
    baseline_model: Optional[str]
    pushed_to: Optional[str]
    pushed_at: Optional[str]
    pushed_in_run: Optional[str]

    def lines(self) -> list[str]:
        stats = ", ".join(f"span {span}: {uri}" for span, uri in sorted(self.statistics.items()))
        return [
            f"model:           {self.model_uri}",
            f"trained in run:  {self.trained_in_run} ({self.trained_at})",
            f"spans:           {', '.join(map(str, self.spans))}",
            *[f"  examples:      {uri}" for uri in self.examples],
            f"schema:          {self.schema}",
            f"statistics:      {stats or 'none (spans ingested before a full run)'}",
            f"transform graph: {self.transform_graph}",
            f"hyperparameters: {json.dumps(self.hyperparameters, sort_keys=True)} "
            f"({self.hyperparameters_source})",
            f"evaluation:      {self.evaluation or 'not evaluated'}",
            "blessing:        "
            + (
                "not evaluated"
                if self.blessed is None
                else "BLESSED"
                if self.blessed
                else "NOT blessed"
            )
            + (
                f" (baseline: {self.baseline_model})"
                if self.baseline_model
                else " (no baseline)"
                if self.blessed is not None
                else ""
            ),
            "pushed:          "
            + (
                f"{self.pushed_to} at {self.pushed_at} (run {self.pushed_in_run})"
                if self.pushed_to
                else "not pushed"
            ),
        ]


def _time(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc).strftime(
        "%Y-%m-%d %H:%M:%S UTC"
    )


class _Graph:
    """Walks MLMD events between executions and artifacts."""

    def __init__(self, store: mlmd.MetadataStore, pipeline_name: str):
        self.store = store
        self.node_of = artifacts.node_ids_by_execution(store, pipeline_name)
        self.run_type = store.get_context_type("pipeline_run").id

    def executions_with(self, artifact_id: int, event_types) -> list[mlmd.proto.Execution]:
        ids = sorted(
            {
                ev.execution_id
                for ev in self.store.get_events_by_artifact_ids([artifact_id])
                if ev.type in event_types
            }
        )
        return self.store.get_executions_by_id(ids) if ids else []

    def producer(self, artifact_id: int) -> mlmd.proto.Execution:
        """The execution that first output the artifact (later cached executions re-output it)."""
        executions = self.executions_with(artifact_id, metadata.OUTPUT_EVENTS)
        if not executions:
            raise LookupError(f"no execution output artifact {artifact_id}")
        return min(executions, key=lambda e: e.id)

    def artifacts_of(self, execution_id: int, event_types) -> dict[str, list[mlmd.proto.Artifact]]:
        events = [
            ev
            for ev in self.store.get_events_by_execution_ids([execution_id])
            if ev.type in event_types and ev.path.steps
        ]
        by_id = {
            a.id: a for a in self.store.get_artifacts_by_id(list({ev.artifact_id for ev in events}))
        }
        result: dict = {}
        for ev in sorted(events, key=lambda ev: ev.artifact_id):
            result.setdefault(ev.path.steps[0].key, []).append(by_id[ev.artifact_id])
        return result

    def inputs(self, execution_id: int) -> dict[str, list[mlmd.proto.Artifact]]:
        return self.artifacts_of(execution_id, artifacts.INPUT_EVENTS)

    def outputs(self, execution_id: int) -> dict[str, list[mlmd.proto.Artifact]]:
        return self.artifacts_of(execution_id, metadata.OUTPUT_EVENTS)

    def run_of(self, execution_id: int) -> str:
        return next(
            c.name
            for c in self.store.get_contexts_by_execution(execution_id)
            if c.type_id == self.run_type
        )


def served_model_path(settings: PipelineSettings) -> str:
    """The newest pushed version: the one TF Serving serves from the model base path."""
    base = settings.serving_model_dir
    versions = (
        sorted((v for v in os.listdir(base) if v.isdigit()), key=int) if os.path.isdir(base) else []
    )
    if not versions:
        raise artifacts.NoRunError(
            f"no pushed model under {base}: run the pipeline until a "
            "model is blessed (make run), or pass a model path"
        )
    return os.path.join(base, versions[-1])


def _find_model(
    store: mlmd.MetadataStore, path: str
) -> tuple[mlmd.proto.Artifact, Optional[mlmd.proto.Artifact]]:
    """(Model, PushedModel or None) for a pushed version dir or a Trainer model directory."""
    path = os.path.abspath(path).rstrip("/")
    for pushed in store.get_artifacts_by_type("PushedModel"):
        destination = pushed.custom_properties.get("pushed_destination")
        if destination is not None and destination.string_value.rstrip("/") == path:
            return None, pushed  # the model comes from the Pusher's inputs
    for model in store.get_artifacts_by_type("Model"):
        if model.uri.rstrip("/") in (path, os.path.dirname(path)):  # also .../Format-Serving
            return model, None
    raise LookupError(
        f"{path} is neither a pushed model version nor a Trainer model in this "
        "pipeline's MLMD store"
    )


def _hyperparameters(graph: _Graph, trainer_inputs: dict) -> tuple[dict, str]:
    import tensorflow as tf

    hp = trainer_inputs.get("hyperparameters", [])
    if hp:
        with tf.io.gfile.GFile(os.path.join(hp[0].uri, HYPERPARAMETERS_FILE)) as f:
            config = json.load(f)
        values = config.get("values", config)
        return values, f"tuning result {hp[0].uri}"
    from models import hyperparameters

    return dict(hyperparameters.search_space().values), "defaults of models/hyperparameters.py"


def lineage(settings: PipelineSettings, model_path: Optional[str] = None) -> Lineage:
    store = artifacts.open_store(settings)
    graph = _Graph(store, settings.name)
    model, pushed = _find_model(store, model_path or served_model_path(settings))
    pusher = graph.producer(pushed.id) if pushed else None
    if pushed:
        model = graph.inputs(pusher.id)["model"][0]
    trainer = graph.producer(model.id)
    trainer_inputs = graph.inputs(trainer.id)
    transform_graph = trainer_inputs["transform_graph"][0]
    transform = graph.producer(transform_graph.id)
    raw_examples = graph.inputs(transform.id)["examples"]
    if len(raw_examples) == 1:
        merge = graph.producer(raw_examples[0].id)
        if graph.node_of.get(merge.id) == WINDOW_EXAMPLES_ID:
            # The window's spans, gathered into one artifact for Transform
            # (pipeline/components/window_examples.py).
            raw_examples = graph.inputs(merge.id)["window"]
    spans = sorted(metadata.span_of(e) for e in raw_examples)
    statistics = {}
    for examples in raw_examples:
        stats = artifacts.statistics_of_examples(store, settings.name, examples.id)
        if stats is not None:
            statistics[metadata.span_of(examples)] = stats.uri
    hp, hp_source = _hyperparameters(graph, trainer_inputs)

    # The evaluation that judged this model: the one whose blessing the Pusher read, else
    # the newest Evaluator execution with the model as candidate.
    evaluator = None
    if pusher is not None:
        blessing = graph.inputs(pusher.id)["model_blessing"][0]
        evaluator = graph.producer(blessing.id)
    else:
        evaluators = [
            e
            for e in graph.executions_with(model.id, artifacts.INPUT_EVENTS)
            if graph.node_of.get(e.id) == "Evaluator"
            and model.id in {a.id for a in graph.inputs(e.id).get("model", [])}
        ]
        evaluator = evaluators[-1] if evaluators else None
    evaluation = blessed = baseline = None
    if evaluator is not None:
        outputs = graph.outputs(evaluator.id)
        evaluation = outputs["evaluation"][0].uri
        blessed = bool(outputs["blessing"][0].custom_properties["blessed"].int_value)
        baselines = graph.inputs(evaluator.id).get("baseline_model", [])
        baseline = baselines[0].uri if baselines else None

    return Lineage(
        model_uri=model.uri,
        trained_in_run=graph.run_of(trainer.id),
        trained_at=_time(trainer.create_time_since_epoch),
        spans=spans,
        examples=[e.uri for e in sorted(raw_examples, key=metadata.span_of)],
        schema=trainer_inputs["schema"][0].uri,
        statistics=statistics,
        transform_graph=transform_graph.uri,
        hyperparameters=hp,
        hyperparameters_source=hp_source,
        evaluation=evaluation,
        blessed=blessed,
        baseline_model=baseline,
        pushed_to=(pushed.custom_properties["pushed_destination"].string_value if pushed else None),
        pushed_at=_time(pusher.last_update_time_since_epoch) if pusher else None,
        pushed_in_run=graph.run_of(pusher.id) if pusher else None,
    )


def print_lineage(model: Optional[str] = None) -> int:
    """`tfx-template lineage`: prints the lineage of `model` (default: the model being served)
    (0), or one `error: ...` line (1)."""
    try:
        settings = PipelineSettings.load()
        result = lineage(settings, model)
    except (ValueError, LookupError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print("\n".join(result.lines()))
    return 0
