"""ProgressiveValidation: the model being served, scored on the new span before anything
trains on it (no `from __future__ import annotations`: TFX reads the type hints)."""

import os

import tensorflow_model_analysis as tfma
from absl import logging
from tfx.types import artifact_utils
from tfx.utils import path_utils

from pipeline.evaluation import overall_metrics, progressive_eval_config
from pipeline.names import AUC_PROPERTY, MODEL_ID_PROPERTY, SPAN_PROPERTY
from pipeline.tfx_api import tfx


@tfx.dsl.components.component
def ProgressiveValidation(
    examples: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Examples],
    # Output keys differ from the Evaluator's and ExampleValidator's: Airflow's legacy driver
    # names artifacts <output key>:<run id>, and MLMD wants names unique per type.
    current_model_evaluation: tfx.dsl.components.OutputArtifact[
        tfx.types.standard_artifacts.ModelEvaluation
    ],
    model: tfx.dsl.components.InputArtifact[tfx.types.standard_artifacts.Model] = None,
    split: tfx.dsl.components.Parameter[str] = "eval",
) -> None:
    """Scores the model being served on the new span before anything trains on it (the same
    hold-out the candidate is scored on, so the two figures compare). Writes a TFMA result
    and records `auc`, `span` and `model_id` on the output in MLMD. Without a blessed model
    yet (a new pipeline) it records nothing to compare."""
    span = examples.get_int_custom_property(SPAN_PROPERTY)
    current_model_evaluation.set_int_custom_property(SPAN_PROPERTY, span)
    if model is None:
        logging.info(
            "Progressive validation: no blessed model yet, nothing to score on span %d", span
        )
        return
    eval_config = progressive_eval_config()
    shared_model = tfma.default_eval_shared_model(
        eval_saved_model_path=path_utils.serving_model_path(model.uri), eval_config=eval_config
    )
    tfma.run_model_analysis(
        eval_shared_model=shared_model,
        eval_config=eval_config,
        data_location=os.path.join(artifact_utils.get_split_uri([examples], split), "*"),
        file_format="tfrecords",
        output_path=current_model_evaluation.uri,
    )
    metrics = overall_metrics(current_model_evaluation.uri)
    current_model_evaluation.set_float_custom_property(AUC_PROPERTY, metrics["auc"])
    current_model_evaluation.set_int_custom_property(MODEL_ID_PROPERTY, model.id)
    logging.info(
        "Progressive validation: the current model (artifact %d) scores AUC %.4f on "
        "span %d before training on it",
        model.id,
        metrics["auc"],
        span,
    )
