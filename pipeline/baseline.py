"""The Evaluator's baseline: the latest blessed model other than the candidate itself."""
from typing import Optional

import ml_metadata as mlmd
from tfx import types
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)

CANDIDATE_KEY = "candidate"


class LatestBlessedBaselineStrategy(LatestBlessedModelStrategy):
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
        inputs = {key: [a for a in artifacts if a.id not in candidate_ids]
                  for key, artifacts in input_dict.items() if key != CANDIDATE_KEY}
        result = super().resolve_artifacts(store, inputs)
        if result is None:
            return None
        return {**result, CANDIDATE_KEY: candidates}


def this_runs_candidate(store: mlmd.MetadataStore,
                        candidates: list[types.Artifact]) -> list[types.Artifact]:
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
    outputs = [event for event in store.get_events_by_artifact_ids(list(by_id))
               if event.type in (mlmd.proto.Event.OUTPUT, mlmd.proto.Event.DECLARED_OUTPUT)]
    executions = {e.id: e for e in store.get_executions_by_id(
        {event.execution_id for event in outputs})}
    # The Trainer's type is that of the first execution to output a candidate; resolvers that
    # passed models on record outputs too, under their own type.
    trainer_type = executions[min(event.execution_id for event in outputs)].type_id
    newest = max((event for event in outputs
                  if executions[event.execution_id].type_id == trainer_type),
                 key=lambda event: event.execution_id)
    return [by_id[newest.artifact_id]]
