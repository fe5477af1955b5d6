"""TFX's public API as `tfx.v1` names it, without importing tfx.v1's cloud extensions.

`from tfx import v1` imports `tfx.v1.extensions`, hence the Vertex AI client: 3.3 s and about
150 MB in every process that builds or runs the pipeline (measured 2026-12-02), whether or not
a cloud setting asks for it. `tfx` below holds the very classes tfx.v1 re-exports, imported
from the modules tfx.v1 imports them from, under the same names:

    from pipeline.tfx_api import tfx

    tfx.components.Trainer(...), tfx.dsl.Resolver(...), tfx.proto.TrainArgs(...)

`tfx.extensions` (Vertex AI, BigQuery) is imported on first use, where a cloud setting asks for
it. On a TFX upgrade, compare these paths with tfx/v1/*/__init__.py.
"""

from __future__ import annotations

import importlib
from types import SimpleNamespace
from typing import Any

from tfx.components.evaluator.component import Evaluator
from tfx.components.example_gen.csv_example_gen.component import CsvExampleGen
from tfx.components.example_validator.component import ExampleValidator
from tfx.components.pusher.component import Pusher
from tfx.components.schema_gen.component import SchemaGen
from tfx.components.schema_gen.import_schema_gen.component import ImportSchemaGen
from tfx.components.statistics_gen.component import StatisticsGen
from tfx.components.trainer.component import Trainer
from tfx.components.trainer.fn_args_utils import DataAccessor, FnArgs
from tfx.components.transform.component import Transform
from tfx.components.tuner.component import Tuner, TunerFnResult
from tfx.dsl.component.experimental.annotations import (
    InputArtifact,
    OutputArtifact,
    OutputDict,
    Parameter,
)
from tfx.dsl.component.experimental.decorators import component
from tfx.dsl.components.base.base_component import BaseComponent
from tfx.dsl.components.common.importer import Importer
from tfx.dsl.components.common.resolver import Resolver, ResolverStrategy
from tfx.dsl.input_resolution.strategies.latest_artifact_strategy import LatestArtifactStrategy
from tfx.dsl.input_resolution.strategies.latest_blessed_model_strategy import (
    LatestBlessedModelStrategy,
)
from tfx.dsl.input_resolution.strategies.span_range_strategy import SpanRangeStrategy
from tfx.orchestration import metadata
from tfx.orchestration.local.local_dag_runner import LocalDagRunner
from tfx.orchestration.pipeline import Pipeline
from tfx.proto import (
    example_gen_pb2,
    pusher_pb2,
    range_config_pb2,
    trainer_pb2,
    transform_pb2,
    tuner_pb2,
)
from tfx.types import standard_artifacts
from tfx.types.artifact import Artifact
from tfx.types.channel import BaseChannel, Channel


class _Api(SimpleNamespace):
    """The namespace; `extensions` (and any name only tfx.v1 has) comes from tfx.v1 itself,
    imported on first use."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):  # pickle, copy and introspection probes: not TFX names
            raise AttributeError(name)
        return getattr(importlib.import_module("tfx.v1"), name)


tfx = _Api(
    components=SimpleNamespace(
        CsvExampleGen=CsvExampleGen,
        StatisticsGen=StatisticsGen,
        SchemaGen=SchemaGen,
        ImportSchemaGen=ImportSchemaGen,
        ExampleValidator=ExampleValidator,
        Transform=Transform,
        Tuner=Tuner,
        Trainer=Trainer,
        Evaluator=Evaluator,
        Pusher=Pusher,
        FnArgs=FnArgs,
        DataAccessor=DataAccessor,
        TunerFnResult=TunerFnResult,
    ),
    dsl=SimpleNamespace(
        Pipeline=Pipeline,
        Resolver=Resolver,
        Importer=Importer,
        Channel=Channel,
        Artifact=Artifact,
        components=SimpleNamespace(
            InputArtifact=InputArtifact,
            OutputArtifact=OutputArtifact,
            OutputDict=OutputDict,
            Parameter=Parameter,
            component=component,
        ),
        experimental=SimpleNamespace(
            ResolverStrategy=ResolverStrategy,
            LatestArtifactStrategy=LatestArtifactStrategy,
            LatestBlessedModelStrategy=LatestBlessedModelStrategy,
            SpanRangeStrategy=SpanRangeStrategy,
        ),
    ),
    proto=SimpleNamespace(
        Input=example_gen_pb2.Input,
        Output=example_gen_pb2.Output,
        SplitConfig=example_gen_pb2.SplitConfig,
        RangeConfig=range_config_pb2.RangeConfig,
        RollingRange=range_config_pb2.RollingRange,
        StaticRange=range_config_pb2.StaticRange,
        TrainArgs=trainer_pb2.TrainArgs,
        EvalArgs=trainer_pb2.EvalArgs,
        TuneArgs=tuner_pb2.TuneArgs,
        SplitsConfig=transform_pb2.SplitsConfig,
        PushDestination=pusher_pb2.PushDestination,
        Versioning=pusher_pb2.Versioning,
    ),
    types=SimpleNamespace(
        Artifact=Artifact,
        BaseChannel=BaseChannel,
        BaseComponent=BaseComponent,
        standard_artifacts=standard_artifacts,
    ),
    orchestration=SimpleNamespace(
        LocalDagRunner=LocalDagRunner,
        metadata=SimpleNamespace(
            sqlite_metadata_connection_config=metadata.sqlite_metadata_connection_config,
            mysql_metadata_connection_config=metadata.mysql_metadata_connection_config,
        ),
    ),
)
