"""The resolver strategies: which artifacts of earlier runs a run's nodes get.

- AcceptedSpanRangeStrategy: the training window, the newest N spans no check rejected;
- PreviousSpanStrategy: the window's span before this run's (what the drift check compares);
- CurrentModelStrategy: the model being served when this run's span arrived (warm start,
  progressive validation);
- LatestBlessedBaselineStrategy: the Evaluator's baseline, never the candidate itself.

TFX runs custom strategies only where it resolves inputs from MLMD itself (local, Airflow);
`PipelineSettings.resolvers` says which orchestrator can run what, and pipeline/pipeline.py
adds the resolver nodes accordingly.
"""

from typing import Optional

import ml_metadata as mlmd
from tfx import types

from pipeline import rejections
from pipeline.names import CANDIDATE_KEY, NEW_SPAN_KEY, PREVIOUS_SPAN_KEY, SPAN_PROPERTY
from pipeline.tfx_api import tfx


class CurrentModelStrategy(tfx.dsl.experimental.LatestBlessedModelStrategy):
    """The latest blessed model that existed before this run's span was ingested: the model
    being served when the span arrived.

    It is the Trainer's warm start and what progressive validation scores on the new span.
    Models created after the span was ingested (by an earlier run on this same span) are
    left out, so a rerun with no new data gets the same inputs and stays cached."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        new_span = newest_examples(input_dict[NEW_SPAN_KEY])
        inputs = {key: artifacts for key, artifacts in input_dict.items() if key != NEW_SPAN_KEY}
        if new_span is not None:
            # MLMD ids grow with creation time, across types.
            inputs = {
                key: [
                    a
                    for a in artifacts
                    if not isinstance(a, tfx.types.standard_artifacts.Model) or a.id < new_span.id
                ]
                for key, artifacts in inputs.items()
            }
        result = super().resolve_artifacts(store, inputs)
        return {**result, NEW_SPAN_KEY: [new_span] if new_span else []}


def newest_examples(examples: list[types.Artifact]) -> Optional[types.Artifact]:
    """This run's span. The local runner passes exactly that; Airflow's legacy resolver passes
    every run's ExampleGen output, of which this run's is the newest span (newest id)."""
    if not examples:
        return None
    return max(examples, key=lambda a: (a.get_int_custom_property(SPAN_PROPERTY), a.id))


def newest_spans(
    artifacts: list[types.Artifact], num_spans: int, start_span: int = 0
) -> list[types.Artifact]:
    """The artifacts of the newest `num_spans` distinct spans from `start_span` on, newest
    span first (SpanRangeStrategy's order); of a span ingested twice, the newest artifact."""
    by_span: dict[int, types.Artifact] = {}
    for artifact in artifacts:
        span = artifact.get_int_custom_property(SPAN_PROPERTY)
        if span >= start_span and (span not in by_span or artifact.id > by_span[span].id):
            by_span[span] = artifact
    return [by_span[span] for span in sorted(by_span, reverse=True)[:num_spans]]


class AcceptedSpanRangeStrategy(tfx.dsl.experimental.SpanRangeStrategy):
    """SpanRangeStrategy (the training window) over the spans no check rejected
    (pipeline/rejections.py): a rolling range is the newest `num_spans` *accepted* spans,
    reaching back past rejected ones, where the stock strategy takes span numbers
    newest-N+1..newest and a rejected span would shrink the window."""

    def __init__(self, range_config, rejections_dir: str = ""):
        super().__init__(range_config)
        self._rejections_dir = rejections_dir

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        rejected = rejections.rejected_spans(self._rejections_dir)
        accepted = {
            key: [a for a in artifacts if a.get_int_custom_property(SPAN_PROPERTY) not in rejected]
            for key, artifacts in input_dict.items()
        }
        if not self._range_config.HasField("rolling_range"):
            return super().resolve_artifacts(store, accepted)
        rolling = self._range_config.rolling_range
        result = {
            key: newest_spans(artifacts, rolling.num_spans, rolling.start_span_number)
            for key, artifacts in accepted.items()
        }
        return result if all(result.values()) else None


class PreviousSpanStrategy(AcceptedSpanRangeStrategy):
    """The training window's span before this run's, in a channel of its own
    (`previous_span`, given every span ExampleGen ingested); none when the window holds no
    earlier span. The drift check compares this run's span with it.

    This run's span is the window's newest: the runners ingest the newest complete span no
    check rejected. Taking it from ExampleGen's output as a second input instead fails on the
    local runner: TFX's IR compiler merges two inputs that read one producer's output, and the
    resolver's inputs then fail to resolve (a KeyError, logged, and an empty output).

    Never this run's span itself: TFX's legacy orchestration (AirflowDagRunner) records one
    INPUT event per channel and position, and MLMD keeps one event per artifact, execution
    and type, so an execution given the same artifact in two channels fails to register
    ("Given event already exists"); the IR runners merge such events, Airflow does not.
    Passing the whole window next to this run's span did exactly that."""

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        window = super().resolve_artifacts(store, input_dict)
        spans = window[PREVIOUS_SPAN_KEY] if window else []
        # Newest span first (newest_spans' order): this run's, then the one before it.
        return {PREVIOUS_SPAN_KEY: spans[1:2]}


class LatestBlessedBaselineStrategy(tfx.dsl.experimental.LatestBlessedModelStrategy):
    """LatestBlessedModelStrategy that never returns the candidate (input `candidate`).

    When nothing changed, the Trainer's execution is cached and its model is the one that is
    already blessed; comparing it with itself would re-run the Evaluator and push the same
    model again. Without it, a rerun with no new data is cached end to end.
    """

    def resolve_artifacts(
        self, store: mlmd.MetadataStore, input_dict: dict[str, list[types.Artifact]]
    ) -> Optional[dict[str, list[types.Artifact]]]:
        candidates = this_runs_candidate(store, input_dict[CANDIDATE_KEY])
        candidate_ids = {artifact.id for artifact in candidates}
        # MLMD artifact ids are unique across types, so filtering every list is safe.
        inputs = {
            key: [a for a in artifacts if a.id not in candidate_ids]
            for key, artifacts in input_dict.items()
            if key != CANDIDATE_KEY
        }
        result = super().resolve_artifacts(store, inputs)
        if result is None:
            return None
        return {**result, CANDIDATE_KEY: candidates}


def this_runs_candidate(
    store: mlmd.MetadataStore, candidates: list[types.Artifact]
) -> list[types.Artifact]:
    """The model this run's Trainer output.

    The local (IR) runner resolves the `candidate` channel to exactly that (Vertex uses the
    stock strategy, see PipelineSettings.resolvers). Airflow's
    legacy resolver resolves every channel over all runs of the pipeline, so it passes every
    model the Trainer ever output, and all of them would be left out of the baseline. This
    run's is the one the newest Trainer execution output (a cached execution outputs the model
    it reuses; Airflow runs one DAG run at a time)."""
    if len(candidates) <= 1:
        return candidates
    by_id = {artifact.id: artifact for artifact in candidates}
    outputs = [
        event
        for event in store.get_events_by_artifact_ids(list(by_id))
        if event.type in (mlmd.proto.Event.OUTPUT, mlmd.proto.Event.DECLARED_OUTPUT)
    ]
    executions = {
        e.id: e for e in store.get_executions_by_id({event.execution_id for event in outputs})
    }
    # The Trainer's type is that of the first execution to output a candidate; resolvers that
    # passed models on record outputs too, under their own type.
    trainer_type = executions[min(event.execution_id for event in outputs)].type_id
    newest = max(
        (event for event in outputs if executions[event.execution_id].type_id == trainer_type),
        key=lambda event: event.execution_id,
    )
    return [by_id[newest.artifact_id]]
