"""The one pipeline definition: every runner (local, Airflow, Kubeflow/Vertex) builds it here."""
from __future__ import annotations

import os
from typing import Optional

import tensorflow_model_analysis as tfma
from google.protobuf import wrappers_pb2
from tfx import v1 as tfx

from analysis.leakage import leakage_check
from models import features, model
from pipeline import rejections, spans, tflite
from pipeline.baseline import CANDIDATE_KEY, LatestBlessedBaselineStrategy
from pipeline.continuous import AcceptedSpanRangeStrategy, continuous_nodes
from pipeline.gate import AnomaliesGate
from pipeline.settings import (
    CloudSettings,
    EvaluationSettings,
    PipelineSettings,
    TrainingSettings,
    models_fingerprint,
)
from pipeline.window import WINDOW_EXAMPLES_ID, WindowExamples

EXAMPLE_GEN_ID = "CsvExampleGen"
BIGQUERY_EXAMPLE_GEN_ID = "BigQueryExampleGen"
SPAN_WINDOW_RESOLVER_ID = "span_window_resolver"
BASELINE_RESOLVER_ID = "latest_blessed_model_resolver"


def _example_gen(settings: PipelineSettings, span: Optional[int]) -> tfx.types.BaseComponent:
    """Reads one span (the newest by default), or the whole training window where
    `settings.example_gen_reads_window`, and splits it into train/eval by hash."""
    output_config = tfx.proto.Output(split_config=tfx.proto.SplitConfig(splits=[
        tfx.proto.SplitConfig.Split(name="train", hash_buckets=settings.data.train_hash_buckets),
        tfx.proto.SplitConfig.Split(name="eval", hash_buckets=settings.data.eval_hash_buckets),
    ]))
    range_config = None if span is None else tfx.proto.RangeConfig(
        static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span))
    if settings.data.bigquery_query:
        return tfx.extensions.google_cloud_big_query.BigQueryExampleGen(
            query=settings.data.bigquery_query, output_config=output_config,
            range_config=range_config).with_id(BIGQUERY_EXAMPLE_GEN_ID)
    # Without a resolver to gather the spans of earlier runs, ExampleGen reads every span
    # in the data location: the location holds the training window.
    span_pattern = settings.data.span_pattern
    pattern = (span_pattern.replace("{SPAN}", "*") if settings.example_gen_reads_window
               else span_pattern)
    return tfx.components.CsvExampleGen(
        input_base=settings.runtime_path(settings.data.data_dir),
        input_config=tfx.proto.Input(splits=[
            tfx.proto.Input.Split(name="single_split", pattern=pattern)]),
        output_config=output_config,
        range_config=range_config,
    ).with_id(EXAMPLE_GEN_ID)


def _overall(threshold: tfma.MetricThreshold) -> tfma.PerSliceMetricThreshold:
    """Blessing looks at the whole hold-out; small slices (a rare hour) would be noise."""
    return tfma.PerSliceMetricThreshold(slicing_specs=[tfma.SlicingSpec()], threshold=threshold)


def eval_config(settings: EvaluationSettings) -> tfma.EvalConfig:
    """Metrics, slices and the blessing thresholds of the Evaluator."""
    higher = tfma.MetricDirection.HIGHER_IS_BETTER
    return tfma.EvalConfig(
        model_specs=[tfma.ModelSpec(
            signature_name="serving_default", label_key=features.LABEL_KEY,
            # Called through its signatures only; naming the type spares TFMA a trial Keras
            # load of the model to find it out.
            model_type="tf_generic",
            prediction_key=model.PREDICTION_KEY,
            # The label is derived by Transform, so TFMA reads it from the transformed features.
            preprocessing_function_names=[model.TRANSFORM_SIGNATURE])],
        slicing_specs=[
            tfma.SlicingSpec(),
            *(tfma.SlicingSpec(feature_keys=[key]) for key in features.EVAL_SLICES),
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
            tfma.MetricConfig(class_name="BinaryCrossEntropy"),
            tfma.MetricConfig(class_name="Calibration"),
            # Plots are computed for every slice but read for the overall one (analysis/):
            # 100 buckets/thresholds draw the same curves as TFMA's default 1,000/10,000.
            tfma.MetricConfig(class_name="CalibrationPlot", config='{"num_buckets": 100}'),
            tfma.MetricConfig(class_name="ConfusionMatrixPlot",
                              config='{"num_thresholds": 100}'),
            tfma.MetricConfig(class_name="MeanLabel"),
            tfma.MetricConfig(class_name="MeanPrediction"),
        ])],
        # The metrics above replace the ones compiled into the Keras model (loss, accuracy,
        # auc again), which TFMA computes by loading the model a second time (~3 s).
        options=tfma.Options(include_default_metrics=wrappers_pb2.BoolValue(value=False)),
    )


def create_pipeline(settings: PipelineSettings, *,
                    metadata_connection_config=None,
                    ingest_only_span: Optional[int] = None,
                    span: Optional[int] = None) -> tfx.dsl.Pipeline:
    """The full pipeline; with `ingest_only_span`, only ExampleGen for that span (used to
    ingest spans that arrived before this pipeline's first run). `span` pins the span a full
    run ingests (runners pass the newest complete one); None = the newest span folder.

    `metadata_connection_config` comes from the runner (None where the orchestrator
    provides its own, as Kubeflow does)."""
    settings = spans.with_beam_workers(settings)
    example_gen = _example_gen(settings, span if ingest_only_span is None else ingest_only_span)
    if ingest_only_span is not None and settings.data.infer_schema:
        return _pipeline(settings, [example_gen], metadata_connection_config)
    statistics_gen, schema_gen, example_validator, anomalies_gate = _validation(
        settings, example_gen)
    if ingest_only_span is not None:
        # An earlier span is validated like a new one: a bad one is rejected and stays out
        # of every training window.
        return _pipeline(settings, [example_gen, statistics_gen, schema_gen, example_validator,
                                    anomalies_gate], metadata_connection_config)

    if settings.example_gen_reads_window:
        window_nodes, window = [], example_gen.outputs["examples"]
        training_examples = window
    else:
        span_window = _span_window_resolver(settings, example_gen)
        window = span_window.outputs["examples"]
        # One artifact for Transform: one Beam dataset per split instead of one per span.
        merged = WindowExamples(window=window).with_id(WINDOW_EXAMPLES_ID)
        merged.add_upstream_node(anomalies_gate)
        window_nodes, training_examples = [span_window, merged], merged.outputs["examples"]

    code_config = {"models_fingerprint": models_fingerprint(), "seed": settings.training.seed}
    transform = tfx.components.Transform(
        examples=training_examples, schema=schema_gen.outputs["schema"],
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train", "eval"]),
        # Pre/post-transform statistics cost Transform most of its time on small data;
        # StatisticsGen already describes the raw data.
        disable_statistics=not settings.transform.statistics,
        custom_config=code_config, force_tf_compat_v1=settings.transform.tf1_graph)
    transform.add_upstream_node(anomalies_gate)
    # The data-leakage check (analysis/leakage.py), None when off; a leak it is told to fail
    # on stops the run before Transform, as the gate does.
    leakage = leakage_check(settings.leakage, settings.request_log_path,
                            example_gen.outputs["examples"], schema_gen.outputs["schema"],
                            statistics_gen.outputs["statistics"])
    if leakage:
        # After the gate: a span that breaks the schema stops with the gate's message
        # before the check parses its examples.
        leakage.add_upstream_node(anomalies_gate)
        transform.add_upstream_node(leakage)
    # Warm start, progressive validation and drift (pipeline/continuous.py).
    continuous = continuous_nodes(settings, example_gen, statistics_gen, schema_gen,
                                  anomalies_gate, window)
    for node in continuous.before_training:
        transform.add_upstream_node(node)

    training = settings.training
    training_config = {**code_config, "batch_size": training.batch_size,
                       "distribution_strategy": training.distribution_strategy}
    if training.crossed_embedding_buckets:
        training_config["crossed_embedding_buckets"] = training.crossed_embedding_buckets
    if training.distribution_strategy == "parameter_server":
        training_config.update(ps_workers=training.ps_workers, ps_tasks=training.ps_tasks,
                               ps_min_shard_bytes=training.ps_min_shard_bytes,
                               ps_max_shards=training.ps_max_shards)
    components = [example_gen, statistics_gen, schema_gen, example_validator, anomalies_gate,
                  *window_nodes, *continuous.nodes, transform]
    components += [leakage] if leakage else []
    if training.enable_tuning:
        tuner = tfx.components.Tuner(
            tuner_fn="models.tuner.tuner_fn",
            examples=transform.outputs["transformed_examples"],
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(num_steps=training.tuner_train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps),
            custom_config={**training_config, "max_trials": training.tuner_max_trials})
        hyperparameters = tuner.outputs["best_hyperparameters"]
        components.append(tuner)
    else:
        # No tuning this run: the last tuning result, if any and if the orchestrator can
        # resolve it (else the model's defaults).
        hyperparameters = None
        if settings.resolvers != "none":
            latest_tuning = tfx.dsl.Resolver(
                strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
                hyperparameters=tfx.dsl.Channel(
                    type=tfx.types.standard_artifacts.HyperParameters),
            ).with_id("latest_hyperparameters_resolver")
            hyperparameters = latest_tuning.outputs["hyperparameters"]
            components.append(latest_tuning)

    trainer_class, vertex_config = tfx.components.Trainer, {}
    if settings.cloud.vertex_training_replicas:
        trainer_class = tfx.extensions.google_cloud_ai_platform.Trainer
        vertex_config = _vertex_training_config(training, settings.cloud)
    trainer = trainer_class(
        run_fn="models.model.run_fn",
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        hyperparameters=hyperparameters,
        base_model=continuous.base_model,
        train_args=tfx.proto.TrainArgs(num_steps=training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps),
        custom_config={**training_config, **vertex_config, **(
            {"warm_start_steps_fraction": settings.continuous.warm_start_steps_fraction}
            if continuous.base_model else {})})

    baseline = _baseline_resolver(settings, trainer.outputs["model"])

    # Evaluated on the held-out split of this run's ExampleGen output only: the newest span
    # (or the whole window, where ExampleGen reads it).
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        # Without a baseline TFMA skips the change threshold: the value thresholds decide.
        baseline_model=baseline.outputs["model"] if baseline else None,
        example_splits=["eval"],
        eval_config=eval_config(settings.evaluation))

    pusher = _pusher(settings, trainer.outputs["model"], evaluator.outputs["blessing"])

    components += [node for node in (trainer, baseline, evaluator, pusher) if node]
    if settings.tflite.export:
        components.append(tflite.exporter(settings.tflite, pusher, transform))
    return _pipeline(settings, components, metadata_connection_config)


def _validation(settings: PipelineSettings, example_gen: tfx.types.BaseComponent) -> tuple:
    """StatisticsGen, the schema (imported, or inferred from the span where
    settings.data.infer_schema), ExampleValidator and the gate that stops a run on anomalies."""
    if settings.data.infer_schema:
        statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False)
    else:
        schema_gen = tfx.components.ImportSchemaGen(
            schema_file=settings.runtime_path(settings.data.schema_path))
        # With the schema, categorical INT ids get the top-k counts that their drift and
        # skew comparators need.
        statistics_gen = tfx.components.StatisticsGen(
            examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"])
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"],
                                   examples=example_gen.outputs["examples"],
                                   statistics=statistics_gen.outputs["statistics"],
                                   min_rows=settings.data.min_span_rows)
    return statistics_gen, schema_gen, example_validator, anomalies_gate


def _span_window_resolver(settings: PipelineSettings,
                          example_gen: tfx.types.BaseComponent) -> tfx.dsl.Resolver:
    """The newest `train_window_spans` spans ExampleGen has ingested, in this run or earlier,
    leaving out spans a check rejected (pipeline/rejections.py, pipeline/continuous.py)."""
    span_window = tfx.dsl.Resolver(
        strategy_class=AcceptedSpanRangeStrategy,
        config={"range_config": tfx.proto.RangeConfig(rolling_range=tfx.proto.RollingRange(
            num_spans=settings.data.train_window_spans)),
            "rejections_dir": rejections.records_dir(settings)},
        examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                 producer_component_id=example_gen.id, output_key="examples"),
    ).with_id(SPAN_WINDOW_RESOLVER_ID)
    # A plain Channel sees every run's artifacts but adds no edge: wait for this run's span.
    span_window.add_upstream_node(example_gen)
    return span_window


def _baseline_resolver(settings: PipelineSettings,
                       candidate: tfx.types.BaseChannel) -> Optional[tfx.dsl.Resolver]:
    """The latest blessed model, the Evaluator's baseline; None where no resolver runs."""
    if settings.resolvers == "none":
        return None
    if settings.resolvers == "any":
        # Resolved after training, and never the candidate itself (pipeline/baseline.py).
        strategy, candidate_input = LatestBlessedBaselineStrategy, {CANDIDATE_KEY: candidate}
    else:
        # The stock strategy, which Vertex runs as queries at the start of a run: after a
        # rerun whose Trainer was cached, the blessed model is its own baseline, so the
        # Evaluator and Pusher run once more for it.
        strategy, candidate_input = tfx.dsl.experimental.LatestBlessedModelStrategy, {}
    return tfx.dsl.Resolver(
        strategy_class=strategy,
        model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
        model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
        **candidate_input,
    ).with_id(BASELINE_RESOLVER_ID)


def _pusher(settings: PipelineSettings, model: tfx.types.BaseChannel,
            blessing: tfx.types.BaseChannel) -> tfx.types.BaseComponent:
    """Pushes blessed models to the Vertex AI endpoint if one is set, else to files."""
    if settings.cloud.vertex_endpoint:
        return tfx.extensions.google_cloud_ai_platform.Pusher(
            model=model, model_blessing=blessing,
            custom_config=_vertex_serving_config(settings.cloud))
    return tfx.components.Pusher(
        model=model, model_blessing=blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=settings.serving_model_dir)))


def _vertex_training_config(training: TrainingSettings, cloud: CloudSettings) -> dict:
    """custom_config of the Google Cloud Trainer: a Vertex AI custom job whose first worker
    pool is the chief (Vertex allows one replica there) and the second the other workers;
    every replica runs the pipeline image (TFX sets the command). parameter_server adds the
    third pool, the ps tasks (CPU machines: they hold variables and compute nothing), and
    sizes the worker pool with ps_workers; Vertex writes TF_CONFIG with the types chief,
    worker and ps accordingly."""
    vertex = tfx.extensions.google_cloud_ai_platform
    machine_spec = {"machine_type": cloud.vertex_machine_type}
    if cloud.vertex_accelerator_type:
        machine_spec.update(accelerator_type=cloud.vertex_accelerator_type,
                            accelerator_count=cloud.vertex_accelerator_count)
    pool = {"machine_spec": machine_spec,
            "container_spec": {"image_uri": cloud.container_image}}
    pools = [{**pool, "replica_count": 1}]
    if training.distribution_strategy == "parameter_server":
        pools.append({**pool, "replica_count": training.ps_workers})
        pools.append({"machine_spec": {"machine_type": cloud.vertex_machine_type},
                      "container_spec": {"image_uri": cloud.container_image},
                      "replica_count": training.ps_tasks})
    elif cloud.vertex_training_replicas > 1:
        pools.append({**pool, "replica_count": cloud.vertex_training_replicas - 1})
    return {
        vertex.ENABLE_VERTEX_KEY: True,
        vertex.VERTEX_REGION_KEY: cloud.gcp_region,
        vertex.TRAINING_ARGS_KEY: {"project": cloud.gcp_project,
                                   "job_spec": {"worker_pool_specs": pools}},
    }


def _vertex_serving_config(cloud: CloudSettings) -> dict:
    """custom_config of the Google Cloud Pusher: upload each blessed model to Vertex AI and
    deploy it to the endpoint (created if missing) with all traffic."""
    vertex = tfx.extensions.google_cloud_ai_platform
    return {
        vertex.ENABLE_VERTEX_KEY: True,
        vertex.VERTEX_REGION_KEY: cloud.gcp_region,
        vertex.VERTEX_CONTAINER_IMAGE_URI_KEY: cloud.vertex_serving_image,
        vertex.SERVING_ARGS_KEY: {"project_id": cloud.gcp_project,
                                  "endpoint_name": cloud.vertex_endpoint,
                                  "machine_type": cloud.vertex_serving_machine_type},
    }


def _pipeline(settings: PipelineSettings, components: list,
              metadata_connection_config) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=settings.name,
        pipeline_root=settings.pipeline_root,
        components=components,
        enable_cache=settings.pipeline_caching,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=settings.beam_pipeline_args,
    )
