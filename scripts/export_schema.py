"""Writes a starting schema for a new dataset from the latest SchemaGen output.

    PIPELINE_INFER_SCHEMA=1 make run     # the pipeline infers a schema with SchemaGen
    make schema                          # = tfx-template schema [--out PATH] [--force]

The inferred schema gets TRAINING and SERVING environments, with the raw label column
(models/features.py label_columns, KNOWN_AFTER_LABEL) left out of SERVING. Curate it (domains,
presence, drift and skew comparators: see the comments in schema/schema.pbtxt) before you rely
on it. An existing file is only replaced with --force, and the new one is written atomically.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import tensorflow_data_validation as tfdv
from tensorflow_metadata.proto.v0 import schema_pb2

from models import features
from pipeline import metadata
from pipeline.names import SCHEMA_GEN_ID
from pipeline.settings import PipelineSettings


def latest_inferred_schema(settings: PipelineSettings) -> str:
    """Path of the newest schema.pbtxt that SchemaGen wrote for this pipeline."""
    store = metadata.open_store(settings)
    schemas = metadata.node_outputs(store, settings.name, SCHEMA_GEN_ID, "Schema") if store else []
    if not schemas:
        raise SystemExit(
            f"error: no SchemaGen output for pipeline {settings.name!r} in "
            f"{settings.metadata_path}: run `PIPELINE_INFER_SCHEMA=1 make run` first"
        )
    return os.path.join(schemas[-1].uri, "schema.pbtxt")


def with_environments(schema: schema_pb2.Schema, training_only: list[str]) -> schema_pb2.Schema:
    """TRAINING and SERVING environments, the training-only columns (the label's sources,
    columns known only after the label) only in TRAINING."""
    del schema.default_environment[:]
    schema.default_environment.extend(["TRAINING", "SERVING"])
    for feature in schema.feature:
        if feature.name in training_only and "SERVING" not in feature.not_in_environment:
            feature.not_in_environment.append("SERVING")
    return schema


def export_schema(out: Optional[str] = None, force: bool = False) -> str:
    """`tfx-template schema`: writes the newest inferred schema, with environments, to `out`
    (default PIPELINE_SCHEMA_PATH); an existing file only with `force`. Returns the path."""
    settings = PipelineSettings.load()
    out = out or settings.data.schema_path
    if os.path.exists(out) and not force:
        sys.exit(
            f"error: {out} exists (a curated schema?): pass --force to replace it, "
            "or --out to write elsewhere"
        )
    source = latest_inferred_schema(settings)
    schema = with_environments(
        tfdv.load_schema_text(source), features.label_columns() + features.KNOWN_AFTER_LABEL
    )
    temporary = out + ".tmp"
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tfdv.write_schema_text(schema, temporary)
    os.replace(temporary, out)
    print(f"wrote {out} from {source}")
    return out
