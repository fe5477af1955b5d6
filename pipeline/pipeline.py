"""The one pipeline definition: every runner (local, Airflow, Kubeflow/Vertex) builds it here."""
from __future__ import annotations

import os
from typing import Optional

import tensorflow_model_analysis as tfma
from tfx import v1 as tfx

from models import features, model
from pipeline import configs
from pipeline.baseline import CANDIDATE_KEY, LatestBlessedBaselineStrategy
from pipeline.gate import AnomaliesGate

EXAMPLE_GEN_ID = "CsvExampleGen"
SPAN_WINDOW_RESOLVER_ID = "span_window_resolver"


def _example_gen(settings: configs.Settings, span: Optional[int]) -> tfx.components.CsvExampleGen:
    """Reads one span (the newest by default) and splits it into train/eval by hash."""
    return tfx.components.CsvExampleGen(
        input_base=settings.data_dir,
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="single_split", pattern=settings.span_pattern)]),
        output_config=tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
            tfx.proto.SplitConfig.Split(name="train", hash_buckets=settings.train_hash_buckets),
            tfx.proto.SplitConfig.Split(name="eval", hash_buckets=settings.eval_hash_buckets),
        ])),
        range_config=None if span is None else tfx.proto.RangeConfig(
            static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span)),
    ).with_id(EXAMPLE_GEN_ID)


def _overall(threshold: tfma.MetricThreshold) -> tfma.PerSliceMetricThreshold:
    """Blessing looks at the whole hold-out; small slices (a rare hour) would be noise."""
    return tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)


def eval_config(settings: configs.Settings) -> tfma.EvalConfig:
    """Metrics, slices and the blessing thresholds of the Evaluator."""
    higher = tfma.MetricDirection.HIGHER_IS_BETTER
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_default", label_key=features.LABEL_KEY,
            prediction_key=model.PREDICTION_KEY,
            # The label is derived by Transform, so TFMA reads it from the transformed features.
            preprocessing_function_names=[model.TRANSFORM_SIGNATURE])],
        slicing_specs=[
            tfma.SlicingSpec(),
            tfma.SlicingSpec(feature_keys=["payment_type"]),
            tfma.SlicingSpec(feature_keys=["trip_start_hour"]),
        ],
        metrics_specs=[tfma.MetricsSpec(metrics=[
            tfma.MetricConfig(class_name="ExampleCount"),
            tfma.MetricConfig(class_name="AUC", per_slice_thresholds=[_overall(tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(lower_bound={"value": settings.min_auc}),
                change_threshold=tfma.GenericChangeThreshold(
                    direction=higher, absolute={"value": -settings.max_auc_drop})))]),
            tfma.MetricConfig(class_name="BinaryAccuracy", per_slice_thresholds=[_overall(
                tfma.MetricThreshold(value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": settings.min_binary_accuracy})))]),
            tfma.MetricConfig(class_name="Precision"),
            tfma.MetricConfig(class_name="Recall"),
            tfma.MetricConfig(class_name="AUCPrecisionRecall"),
            tfma.MetricConfig(class_name="Calibration"),
            tfma.MetricConfig(class_name="CalibrationPlot"),
            tfma.MetricConfig(class_name="ConfusionMatrixPlot"),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
        ])],
    )


def create_pipeline(settings: configs.Settings, *,
                    metadata_connection_config=None,
                    ingest_only_span: Optional[int] = None) -> tfx.dsl.Pipeline:
    """The full pipeline; with `ingest_only_span`, only ExampleGen for that span (used to
    ingest spans that arrived before this pipeline's first run).

    `metadata_connection_config` comes from the runner (None where the orchestrator
    provides its own, as Kubeflow does)."""
    example_gen = _example_gen(settings, ingest_only_span)
    if ingest_only_span is not None:
        return _pipeline(settings, [example_gen], metadata_connection_config)

    if settings.infer_schema:
        statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False)
    else:
        schema_gen = tfx.components.ImportSchemaGen(schema_file=settings.schema_path)
        # With the schema, categorical INT ids (hour, day) get the top-k counts that their
        # drift and skew comparators need.
        statistics_gen = tfx.components.StatisticsGen(
            examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"],
                                   examples=example_gen.outputs["examples"])

    # The newest `train_window_spans` spans ExampleGen has ingested, in this run or earlier.
    span_window = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.SpanRangeStrategy,
        config={"range_config": tfx.proto.RangeConfig(rolling_range=tfx.proto.RollingRange(
            num_spans=settings.train_window_spans))},
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                 producer_component_id=example_gen.id, output_key="examples"),
    ).with_id(SPAN_WINDOW_RESOLVER_ID)
    # A plain Channel sees every run's artifacts but adds no edge: wait for this run's span.
    span_window.add_upstream_node(example_gen)

    code_config = {"models_fingerprint": configs.models_fingerprint(), "seed": settings.seed}
    transform = tfx.components.Transform(
        examples=span_window.outputs["examples"], schema=schema_gen.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train", "eval"]),
        # Pre/post-transform statistics cost Transform most of its time on small data;
        # StatisticsGen already describes the raw data.
        disable_statistics=not settings.transform_statistics,
        custom_config=code_config)
    transform.add_upstream_node(anomalies_gate)

    training_config = {**code_config, "batch_size": settings.batch_size,
                       "distribution_strategy": settings.distribution_strategy}
    components = [example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
                  span_window, transform]
    if settings.enable_tuning:
        tuner = tfx.components.Tuner(
            tuner_fn="models.tuner.tuner_fn",
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(num_steps=settings.tuner_train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=settings.eval_steps),
            custom_config={**training_config, "max_trials": settings.tuner_max_trials})
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)
    else:
        # No tuning this run: the last tuning result, if any (else the model's defaults).
        latest_tuning = tfx.dsl.Resolver(
            strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
            hyperparameters=tfx.dsl.Channel(type=tfx.types.standard_artifacts.HyperParameters),
        ).with_id("latest_hyperparameters_resolver")
        hyperparameters = latest_tuning.outputs["hyperparameters"]
        components.append(latest_tuning)

    trainer = tfx.components.Trainer(
        run_fn="models.model.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=hyperparameters,
        train_args=tfx.proto.TrainArgs(num_steps=settings.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=settings.eval_steps),
        custom_config=training_config)

    latest_blessed_model = tfx.dsl.Resolver(
        strategy_class=LatestBlessedBaselineStrategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        **{CANDIDATE_KEY: trainer.outputs["model"]},
    ).with_id("latest_blessed_model_resolver")

    # Evaluated on the newest span's held-out split only (this run's ExampleGen output).
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=latest_blessed_model.outputs["model"],
        example_splits=["eval"],
        eval_config=eval_config(settings))

    pusher = tfx.components.Pusher(
        model=trainer.outputs["model"],
        model_blessing=evaluator.outputs["blessing"],
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=settings.serving_model_dir)))

    components += [trainer, latest_blessed_model, evaluator, pusher]
    return _pipeline(settings, components, metadata_connection_config)


def _pipeline(settings: configs.Settings, components: list,
              metadata_connection_config) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=settings.pipeline_name,
        pipeline_root=settings.pipeline_root,
        components=components,
        enable_cache=settings.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=settings.beam_pipeline_args,
    )
