"""The one pipeline definition: every runner (local, Airflow, Kubeflow/Vertex) builds it here."""

from __future__ import annotations

import dataclasses
from typing import Optional

from tfx.dsl.components.base import executor_spec

from pipeline import rejections, spans, vertex
from pipeline.atomic_push import AtomicPushExecutor
from pipeline.code_fingerprint import models_fingerprint
from pipeline.components.anomalies_gate import AnomaliesGate
from pipeline.components.drift_check import DriftCheck
from pipeline.components.fast_csv_example_gen import with_fast_executor
from pipeline.components.leakage_check import LeakageCheck
from pipeline.components.progressive_validation import ProgressiveValidation
from pipeline.components.statistics_gen_executor import Executor as StatisticsExecutor
from pipeline.components.tflite_exporter import TFLiteExporter
from pipeline.components.window_examples import WindowExamples
from pipeline.evaluation import eval_config
from pipeline.names import (
    BASELINE_RESOLVER_ID,
    BIGQUERY_EXAMPLE_GEN_ID,
    CANDIDATE_KEY,
    CURRENT_MODEL_RESOLVER_ID,
    DRIFT_CHECK_ID,
    EXAMPLE_GEN_ID,
    LATEST_HYPERPARAMETERS_RESOLVER_ID,
    LEAKAGE_CHECK_ID,
    NEW_SPAN_KEY,
    PREVIOUS_SPAN_KEY,
    PREVIOUS_SPAN_RESOLVER_ID,
    PROGRESSIVE_VALIDATION_ID,
    RAW_EXAMPLES_CONFIG,
    SPAN_WINDOW_RESOLVER_ID,
    TFLITE_EXPORTER_ID,
    WINDOW_EXAMPLES_ID,
)
from pipeline.resolvers import (
    AcceptedSpanRangeStrategy,
    CurrentModelStrategy,
    LatestBlessedBaselineStrategy,
    PreviousSpanStrategy,
)
from pipeline.settings import (
    LeakageSettings,
    PipelineSettings,
    TfliteSettings,
    TrainingSettings,
    TransformSettings,
)
from pipeline.tfx_api import tfx


def _example_gen(settings: PipelineSettings, span: Optional[int]) -> tfx.types.BaseComponent:
    """Reads one span (the newest by default), or the whole training window where
    `settings.example_gen_reads_window`, and splits it into train/eval by hash."""
    output_config = tfx.proto.Output(
        split_config=tfx.proto.SplitConfig(
            splits=[
                tfx.proto.SplitConfig.Split(
                    name="train", hash_buckets=settings.data.train_hash_buckets
                ),
                tfx.proto.SplitConfig.Split(
                    name="eval", hash_buckets=settings.data.eval_hash_buckets
                ),
            ]
        )
    )
    range_config = (
        None
        if span is None
        else tfx.proto.RangeConfig(
            static_range=tfx.proto.StaticRange(start_span_number=span, end_span_number=span)
        )
    )
    if settings.data.bigquery_query:
        return tfx.extensions.google_cloud_big_query.BigQueryExampleGen(
            query=settings.data.bigquery_query,
            output_config=output_config,
            range_config=range_config,
        ).with_id(BIGQUERY_EXAMPLE_GEN_ID)
    # Without a resolver to gather the spans of earlier runs, ExampleGen reads every span
    # in the data location: the location holds the training window.
    span_pattern = settings.data.span_pattern
    pattern = (
        span_pattern.replace("{SPAN}", "*") if settings.example_gen_reads_window else span_pattern
    )
    example_gen = tfx.components.CsvExampleGen(
        input_base=settings.runtime_path(settings.data.data_dir),
        input_config=tfx.proto.Input(
            splits=[tfx.proto.Input.Split(name="single_split", pattern=pattern)]
        ),
        output_config=output_config,
        range_config=range_config,
    ).with_id(EXAMPLE_GEN_ID)
    return with_fast_executor(example_gen) if settings.data.fast_csv_reader else example_gen


def create_pipeline(
    settings: PipelineSettings,
    *,
    metadata_connection_config=None,
    ingest_only_span: Optional[int] = None,
    span: Optional[int] = None,
) -> tfx.dsl.Pipeline:
    """The full pipeline; with `ingest_only_span`, only the ingestion and validation of that
    span (used to ingest spans that arrived before this pipeline's first run: a bad one is
    rejected and stays out of every training window). `span` pins the span a full run
    ingests (runners pass the newest complete one); None = the newest span folder.

    `metadata_connection_config` comes from the runner (None where the orchestrator
    provides its own, as Kubeflow does)."""
    example_gen = _example_gen(settings, span if ingest_only_span is None else ingest_only_span)
    if ingest_only_span is not None and settings.data.infer_schema:
        return _pipeline(settings, [example_gen], metadata_connection_config)
    validation = _validation(settings, example_gen)
    if ingest_only_span is not None:
        return _pipeline(settings, [example_gen, *validation.nodes], metadata_connection_config)

    window_nodes, training_examples = _training_window(settings, example_gen, validation.gate)
    checks = _checks_before_training(settings, example_gen, validation)
    code_config = {"models_fingerprint": models_fingerprint(), "seed": settings.training.seed}
    materialize = spans.transform_materializes(settings)
    transform = _transform(
        settings.transform, training_examples, validation.schema, code_config, materialize
    )
    for node in [validation.gate, *checks.before_training]:
        transform.add_upstream_node(node)
    training_config = _training_config(settings.training, code_config, materialize)
    # Without materialized examples the Tuner and the Trainer read Transform's own input and
    # apply its graph to each batch (models/model.py, input_dataset).
    examples = transform.outputs["transformed_examples"] if materialize else training_examples
    tuning_nodes, hyperparameters = _hyperparameters(
        settings.training, settings.resolvers, transform, examples, training_config
    )
    trainer = _trainer(
        settings,
        transform,
        examples,
        validation.schema,
        hyperparameters,
        checks.base_model,
        training_config,
    )
    baseline = _baseline_resolver(settings, trainer.outputs["model"])
    # Evaluated on the held-out split of this run's ExampleGen output only: the newest span
    # (or the whole window, where ExampleGen reads it).
    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        # Without a baseline TFMA skips the change threshold: the value thresholds decide.
        baseline_model=baseline.outputs["model"] if baseline else None,
        example_splits=["eval"],
        eval_config=eval_config(settings.evaluation),
    )
    pusher = _pusher(settings, trainer.outputs["model"], evaluator.outputs["blessing"])
    components = [
        example_gen,
        *validation.nodes,
        *window_nodes,
        *checks.nodes,
        transform,
        *tuning_nodes,
        trainer,
        *([baseline] if baseline else []),
        evaluator,
        pusher,
    ]
    if settings.tflite.export:
        components.append(_tflite_exporter(settings.tflite, pusher, transform))
    return _pipeline(settings, components, metadata_connection_config)


@dataclasses.dataclass
class Validation:
    """StatisticsGen, the schema, ExampleValidator and the gate that stops a bad span."""

    statistics_gen: tfx.types.BaseComponent
    schema_gen: tfx.types.BaseComponent
    example_validator: tfx.types.BaseComponent
    gate: tfx.types.BaseComponent

    @property
    def nodes(self) -> list:
        return [self.statistics_gen, self.schema_gen, self.example_validator, self.gate]

    @property
    def schema(self) -> tfx.types.BaseChannel:
        return self.schema_gen.outputs["schema"]


@dataclasses.dataclass
class Checks:
    """The checks of the new span after the gate (leakage, drift, progressive validation) and
    the warm start's model: nodes, the Trainer's base model, what must finish before
    Transform reads the new span."""

    nodes: list = dataclasses.field(default_factory=list)
    base_model: Optional[tfx.types.BaseChannel] = None
    before_training: list = dataclasses.field(default_factory=list)

    def add(self, node: tfx.types.BaseComponent, after: tfx.types.BaseComponent) -> None:
        """A check that runs after `after` (the gate: a span that breaks the schema stops
        with the gate's clear message before any check parses it) and before Transform."""
        node.add_upstream_node(after)
        self.nodes.append(node)
        self.before_training.append(node)


def _training_window(
    settings: PipelineSettings, example_gen: tfx.types.BaseComponent, gate: tfx.types.BaseComponent
) -> tuple:
    """(nodes, what Transform reads): the span window resolver and one merged artifact, or
    ExampleGen's output where it reads the whole window itself."""
    if settings.example_gen_reads_window:
        return [], example_gen.outputs["examples"]
    span_window = _span_window_resolver(settings, example_gen)
    # One artifact for Transform: one Beam dataset per split instead of one per span.
    merged = WindowExamples(window=span_window.outputs["examples"]).with_id(WINDOW_EXAMPLES_ID)
    merged.add_upstream_node(gate)
    return [span_window, merged], merged.outputs["examples"]


def _checks_before_training(
    settings: PipelineSettings,
    example_gen: tfx.types.BaseComponent,
    validation: Validation,
) -> Checks:
    """The leakage check, the drift check, progressive validation and the warm start, as the
    settings ask. The last three need custom resolvers or the previous span, so they exist
    only where TFX resolves inputs itself and ExampleGen reads one span per run."""
    checks = Checks()
    examples = example_gen.outputs["examples"]
    if settings.leakage.check:
        checks.add(
            _leakage_check(settings.leakage, settings.request_log_path, examples, validation),
            after=validation.gate,
        )
    if settings.resolvers != "any" or settings.example_gen_reads_window:
        return checks
    if settings.continuous.warm_start or settings.continuous.progressive_validation:
        current = tfx.dsl.Resolver(
            strategy_class=CurrentModelStrategy,
            model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
            model_blessing=tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing),
            **{NEW_SPAN_KEY: examples},
        ).with_id(CURRENT_MODEL_RESOLVER_ID)
        checks.nodes.append(current)
        if settings.continuous.warm_start:
            checks.base_model = current.outputs["model"]
        if settings.continuous.progressive_validation:
            checks.add(
                ProgressiveValidation(examples=examples, model=current.outputs["model"]).with_id(
                    PROGRESSIVE_VALIDATION_ID
                ),
                after=validation.gate,
            )
    if settings.continuous.check_drift and not settings.data.infer_schema:
        previous = _previous_span_resolver(settings, example_gen)
        checks.nodes.append(previous)
        checks.add(
            DriftCheck(
                statistics=validation.statistics_gen.outputs["statistics"],
                schema=validation.schema,
                examples=examples,
                # Not the whole window: it holds `examples` too (PreviousSpanStrategy says why).
                previous_span=previous.outputs[PREVIOUS_SPAN_KEY],
            ).with_id(DRIFT_CHECK_ID),
            after=validation.gate,
        )
    return checks


def _leakage_check(
    settings: LeakageSettings,
    request_log_path: str,
    examples: tfx.types.BaseChannel,
    validation: Validation,
) -> tfx.types.BaseComponent:
    """`request_log_path` is the model server's request log, read where the step runs: a local
    path (or one tf.io.gfile reads) the server writes to; absent there, the comparison is
    skipped."""
    return LeakageCheck(
        examples=examples,
        schema=validation.schema,
        statistics=validation.statistics_gen.outputs["statistics"],
        auc_threshold=settings.auc_threshold,
        sample_rows=settings.sample_rows,
        fail_on_leak=int(settings.fails_run),
        serving_log=request_log_path if settings.serving_log else "",
        min_serving_rows=settings.min_serving_rows,
        presence_gap=settings.presence_gap,
        distribution_distance=settings.distribution_distance,
    ).with_id(LEAKAGE_CHECK_ID)


def _transform(
    settings: TransformSettings,
    examples: tfx.types.BaseChannel,
    schema: tfx.types.BaseChannel,
    code_config: dict,
    materialize: bool,
) -> tfx.types.BaseComponent:
    return tfx.components.Transform(
        examples=examples,
        schema=schema,
        preprocessing_fn="models.preprocessing.preprocessing_fn",
        splits_config=tfx.proto.SplitsConfig(analyze=["train"], transform=["train", "eval"]),
        # Pre/post-transform statistics cost Transform most of its time on small data;
        # StatisticsGen already describes the raw data.
        disable_statistics=not settings.statistics,
        custom_config=code_config,
        force_tf_compat_v1=settings.tf1_graph,
        materialize=materialize,
    )


def _training_config(settings: TrainingSettings, code_config: dict, materialize: bool) -> dict:
    """custom_config of the Tuner and the Trainer (models/model.py reads it)."""
    config = {
        **code_config,
        "batch_size": settings.batch_size,
        "distribution_strategy": settings.distribution_strategy,
    }
    if not materialize:
        config[RAW_EXAMPLES_CONFIG] = 1  # absent otherwise: the config of earlier runs
    if settings.crossed_embedding_buckets:
        config["crossed_embedding_buckets"] = settings.crossed_embedding_buckets
    if settings.distribution_strategy == "parameter_server":
        config.update(
            ps_workers=settings.ps_workers,
            ps_tasks=settings.ps_tasks,
            ps_min_shard_bytes=settings.ps_min_shard_bytes,
            ps_max_shards=settings.ps_max_shards,
        )
    return config


def _hyperparameters(
    settings: TrainingSettings,
    resolvers: str,
    transform: tfx.types.BaseComponent,
    examples: tfx.types.BaseChannel,
    training_config: dict,
) -> tuple:
    """(nodes, the Trainer's hyperparameters channel): the Tuner's result; with tuning off,
    the last tuning result if the orchestrator can resolve it (else None: the model's
    defaults)."""
    if settings.enable_tuning:
        tuner = tfx.components.Tuner(
            tuner_fn="models.tuner.tuner_fn",
            examples=examples,
            transform_graph=transform.outputs["transform_graph"],
            train_args=tfx.proto.TrainArgs(num_steps=settings.tuner_train_steps),
            eval_args=tfx.proto.EvalArgs(num_steps=settings.eval_steps),
            custom_config={**training_config, "max_trials": settings.tuner_max_trials},
        )
        return [tuner], tuner.outputs["best_hyperparameters"]
    if resolvers == "none":
        return [], None
    latest_tuning = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestArtifactStrategy,
        hyperparameters=tfx.dsl.Channel(type=tfx.types.standard_artifacts.HyperParameters),
    ).with_id(LATEST_HYPERPARAMETERS_RESOLVER_ID)
    return [latest_tuning], latest_tuning.outputs["hyperparameters"]


def _trainer(
    settings: PipelineSettings,
    transform: tfx.types.BaseComponent,
    examples: tfx.types.BaseChannel,
    schema: tfx.types.BaseChannel,
    hyperparameters: Optional[tfx.types.BaseChannel],
    base_model: Optional[tfx.types.BaseChannel],
    training_config: dict,
) -> tfx.types.BaseComponent:
    """The Trainer, in the step, or as a Vertex AI training job with vertex_training_replicas;
    warm-started from `base_model` when there is one."""
    trainer_class, vertex_config = tfx.components.Trainer, {}
    training = settings.training
    if settings.cloud.vertex_training_replicas:
        trainer_class = tfx.extensions.google_cloud_ai_platform.Trainer
        vertex_config = vertex.training_config(training, settings.cloud)
    warm_start = (
        {"warm_start_steps_fraction": settings.continuous.warm_start_steps_fraction}
        if base_model
        else {}
    )
    return trainer_class(
        run_fn="models.model.run_fn",
        examples=examples,
        transform_graph=transform.outputs["transform_graph"],
        schema=schema,
        hyperparameters=hyperparameters,
        base_model=base_model,
        train_args=tfx.proto.TrainArgs(num_steps=training.train_steps),
        eval_args=tfx.proto.EvalArgs(num_steps=training.eval_steps),
        custom_config={**training_config, **vertex_config, **warm_start},
    )


def _tflite_exporter(
    settings: TfliteSettings, pusher: tfx.types.BaseComponent, transform: tfx.types.BaseComponent
) -> tfx.types.BaseComponent:
    """Runs after the Pusher, on what it pushed."""
    return TFLiteExporter(
        pushed_model=pusher.outputs["pushed_model"],
        transformed_examples=transform.outputs["transformed_examples"],
        quantization=settings.quantization,
        representative_examples=settings.representative_examples,
    ).with_id(TFLITE_EXPORTER_ID)


def _validation(settings: PipelineSettings, example_gen: tfx.types.BaseComponent) -> Validation:
    """StatisticsGen, the schema (imported, or inferred from the span where
    settings.data.infer_schema), ExampleValidator and the gate that stops a run on anomalies."""
    if settings.data.infer_schema:
        statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"])
        schema_gen = tfx.components.SchemaGen(
            statistics=statistics_gen.outputs["statistics"], infer_feature_shape=False
        )
    else:
        schema_gen = tfx.components.ImportSchemaGen(
            schema_file=settings.runtime_path(settings.data.schema_path)
        )
        # With the schema, categorical INT ids get the top-k counts that their drift and
        # skew comparators need.
        statistics_gen = tfx.components.StatisticsGen(
            examples=example_gen.outputs["examples"], schema=schema_gen.outputs["schema"]
        )
    # Small splits' statistics are computed in memory, without a Beam pipeline's start-up.
    statistics_gen.executor_spec = executor_spec.BeamExecutorSpec(StatisticsExecutor)
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(
        anomalies=example_validator.outputs["anomalies"],
        examples=example_gen.outputs["examples"],
        statistics=statistics_gen.outputs["statistics"],
        min_rows=settings.data.min_span_rows,
    )
    return Validation(statistics_gen, schema_gen, example_validator, anomalies_gate)


def _span_window_resolver(
    settings: PipelineSettings, example_gen: tfx.types.BaseComponent
) -> tfx.dsl.Resolver:
    """The newest `train_window_spans` spans ExampleGen has ingested, in this run or earlier,
    leaving out spans a check rejected (pipeline/rejections.py, pipeline/resolvers.py)."""
    span_window = tfx.dsl.Resolver(
        strategy_class=AcceptedSpanRangeStrategy,
        config=_window_config(settings),
        examples=_every_span(example_gen),
    ).with_id(SPAN_WINDOW_RESOLVER_ID)
    # A plain Channel sees every run's artifacts but adds no edge: wait for this run's span.
    span_window.add_upstream_node(example_gen)
    return span_window


def _previous_span_resolver(
    settings: PipelineSettings, example_gen: tfx.types.BaseComponent
) -> tfx.dsl.Resolver:
    """The span of the training window before this run's: the drift check's reference."""
    previous = tfx.dsl.Resolver(
        strategy_class=PreviousSpanStrategy,
        config=_window_config(settings),
        **{PREVIOUS_SPAN_KEY: _every_span(example_gen)},
    ).with_id(PREVIOUS_SPAN_RESOLVER_ID)
    previous.add_upstream_node(example_gen)  # the window must hold this run's span
    return previous


def _window_config(settings: PipelineSettings) -> dict:
    """AcceptedSpanRangeStrategy's config: the training window's size and the rejections."""
    return {
        "range_config": tfx.proto.RangeConfig(
            rolling_range=tfx.proto.RollingRange(num_spans=settings.data.train_window_spans)
        ),
        "rejections_dir": rejections.records_dir(settings),
    }


def _every_span(example_gen: tfx.types.BaseComponent) -> tfx.dsl.Channel:
    """Every Examples artifact ExampleGen has output, in any run of the pipeline."""
    return tfx.dsl.Channel(
        type=tfx.types.standard_artifacts.Examples,
        producer_component_id=example_gen.id,
        output_key="examples",
    )


def _baseline_resolver(
    settings: PipelineSettings, candidate: tfx.types.BaseChannel
) -> Optional[tfx.dsl.Resolver]:
    """The latest blessed model, the Evaluator's baseline; None where no resolver runs."""
    if settings.resolvers == "none":
        return None
    if settings.resolvers == "any":
        # Resolved after training, and never the candidate itself (pipeline/resolvers.py).
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


def _pusher(
    settings: PipelineSettings, model: tfx.types.BaseChannel, blessing: tfx.types.BaseChannel
) -> tfx.types.BaseComponent:
    """Pushes blessed models to the Vertex AI endpoint if one is set, else to files."""
    if settings.cloud.vertex_endpoint:
        return tfx.extensions.google_cloud_ai_platform.Pusher(
            model=model,
            model_blessing=blessing,
            custom_config=vertex.serving_config(settings.cloud),
        )
    # The standard Pusher (node id, outputs, blessing) with TFX's push made atomic where the
    # file system allows it (pipeline/atomic_push.py). TFX logs that custom_executor_spec is
    # deprecated in favour of a component subclass, but a subclass would be another component
    # type in MLMD and in the compiled Airflow/Kubeflow specs, no longer TFX's Pusher.
    return tfx.components.Pusher(
        model=model,
        model_blessing=blessing,
        push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(
                base_directory=settings.serving_model_dir
            )
        ),
        custom_executor_spec=executor_spec.ExecutorClassSpec(AtomicPushExecutor),
    )


def _pipeline(
    settings: PipelineSettings, components: list, metadata_connection_config
) -> tfx.dsl.Pipeline:
    return tfx.dsl.Pipeline(
        pipeline_name=settings.name,
        pipeline_root=settings.pipeline_root,
        components=components,
        enable_cache=settings.pipeline_caching,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=spans.beam_pipeline_args(settings),
    )
