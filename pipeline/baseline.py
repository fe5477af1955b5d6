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
        candidates = input_dict[CANDIDATE_KEY]
        candidate_ids = {artifact.id for artifact in candidates}
        # MLMD artifact ids are unique across types, so filtering every list is safe.
        inputs = {key: [a for a in artifacts if a.id not in candidate_ids]
                  for key, artifacts in input_dict.items() if key != CANDIDATE_KEY}
        result = super().resolve_artifacts(store, inputs)
        if result is None:
            return None
        return {**result, CANDIDATE_KEY: candidates}
