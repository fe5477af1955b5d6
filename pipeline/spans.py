"""Which spans exist in the data location, which are complete, and which ExampleGen has
already ingested.

A span is complete once its folder holds the marker file (`span_complete_marker`, `_COMPLETE`
by default), written last by whoever delivers the span (scripts/split_data.py, the streaming
job, a copy job), so a half-copied span is never ingested."""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path
from typing import Collection, Optional

import tensorflow as tf
from absl import logging

from pipeline import metadata
from pipeline.settings import PipelineSettings


def available_spans(settings: PipelineSettings) -> list[int]:
    """Span numbers whose input files exist, complete or not, ascending."""
    data = settings.data
    glob = os.path.join(data.data_dir, data.span_pattern.replace("{SPAN}", "*"))
    regex = re.compile(
        re.escape(os.path.join(data.data_dir, data.span_pattern))
        .replace(re.escape("{SPAN}"), r"(\d+)")
        .replace(r"\*", "[^/]*")
        + "$"
    )
    spans = {int(m.group(1)) for path in tf.io.gfile.glob(glob) if (m := regex.match(path))}
    return sorted(spans)


def span_files_pattern(settings: PipelineSettings, span: int) -> str:
    """The glob of one span's input files."""
    return os.path.join(
        settings.data.data_dir, settings.data.span_pattern.replace("{SPAN}", str(span))
    )


def span_dir(settings: PipelineSettings, span: int) -> str:
    """The folder of one span: the directory part of the span pattern."""
    folder = os.path.dirname(settings.data.span_pattern)
    if "{SPAN}" not in folder:
        raise ValueError(
            f"PIPELINE_SPAN_PATTERN={settings.data.span_pattern!r}: completion markers need one "
            "folder per span (e.g. 'span-{SPAN}/*.csv'); or set PIPELINE_SPAN_COMPLETE_MARKER=''"
        )
    return os.path.join(settings.data.data_dir, folder.replace("{SPAN}", str(span)))


def marker_path(settings: PipelineSettings, span: int) -> str:
    return os.path.join(span_dir(settings, span), settings.data.span_complete_marker)


def is_complete(settings: PipelineSettings, span: int) -> bool:
    return not settings.data.span_complete_marker or tf.io.gfile.exists(marker_path(settings, span))


def complete_spans(settings: PipelineSettings) -> list[int]:
    """Span numbers with input files and a completion marker, ascending."""
    return [span for span in available_spans(settings) if is_complete(settings, span)]


def accepted_spans(settings: PipelineSettings, rejected: Collection[int] = ()) -> list[int]:
    """Complete spans no check rejected (pipeline/rejections.py), ascending."""
    return [span for span in complete_spans(settings) if span not in rejected]


def newest_complete_span(settings: PipelineSettings, rejected: Collection[int] = ()) -> int:
    """The span a full run ingests: the newest complete span not rejected; an error naming
    the data location when there is none."""
    accepted = accepted_spans(settings, rejected)
    if accepted:
        return accepted[-1]
    complete = complete_spans(settings)
    if complete:
        raise ValueError(
            f"PIPELINE_DATA_DIR={settings.data.data_dir!r}: every complete span ({complete}) was "
            "rejected by a check (records: <pipeline root>/rejected_spans/); deliver a new span"
        )
    incomplete = available_spans(settings)
    hint = (
        f" (spans {incomplete} have files but no {settings.data.span_complete_marker!r} marker yet)"
        if incomplete
        else ""
    )
    raise ValueError(
        f"PIPELINE_DATA_DIR={settings.data.data_dir!r}: no complete span matching "
        f"{settings.data.span_pattern!r}{hint}; a span counts once its folder holds "
        f"{settings.data.span_complete_marker!r}"
    )


def mark_complete(span_folder: str, marker: str = "_COMPLETE") -> None:
    """Writes the marker (last, after the span's files), atomically."""
    path = os.path.join(span_folder, marker)
    tmp = path + ".tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write("")
    tf.io.gfile.rename(tmp, path, overwrite=True)


def earlier_spans_to_ingest(
    settings: PipelineSettings, ingested: set[int], rejected: Collection[int] = ()
) -> list[int]:
    """The older accepted spans of the training window (the newest `train_window_spans`
    complete spans no check rejected, all but the newest, which a full run ingests) that
    ExampleGen has not ingested yet: what a new pipeline, or a grown window, catches up."""
    window = accepted_spans(settings, rejected)[-settings.data.train_window_spans : -1]
    return [span for span in window if span not in ingested]


def new_span(
    settings: PipelineSettings, ingested: set[int], rejected: Collection[int] = ()
) -> Optional[int]:
    """The newest complete span no check rejected, if ExampleGen has not ingested it yet,
    else None: what a trigger checks before starting a run."""
    accepted = accepted_spans(settings, rejected)
    if not accepted or accepted[-1] in ingested:
        return None
    return accepted[-1]


def ingested_spans(settings: PipelineSettings, example_gen_id: str) -> set[int]:
    """Spans with an Examples artifact from this pipeline's ExampleGen in the local MLMD."""
    store = metadata.open_store(settings)
    if store is None:
        return set()
    return {
        metadata.span_of(artifact)
        for artifact in metadata.node_outputs(store, settings.name, example_gen_id, "Examples")
    }


def window_input_bytes(settings: PipelineSettings) -> int:
    """Bytes of the input files of the newest `train_window_spans` complete spans."""
    total = 0
    for span in complete_spans(settings)[-settings.data.train_window_spans :]:
        total += sum(
            tf.io.gfile.stat(path).length
            for path in tf.io.gfile.glob(span_files_pattern(settings, span))
        )
    return total


def beam_pipeline_args(settings: PipelineSettings) -> list[str]:
    """The pipeline's Beam arguments, with PIPELINE_BEAM_DIRECT_NUM_WORKERS=auto resolved
    against the data (see with_beam_workers)."""
    return with_beam_workers(settings).beam_pipeline_args


def with_beam_workers(settings: PipelineSettings) -> PipelineSettings:
    """The settings with PIPELINE_BEAM_DIRECT_NUM_WORKERS=auto resolved against the data: one
    DirectRunner worker process per core for a training window of at least
    PIPELINE_BEAM_MULTIPROCESSING_MIN_MB, else in-process. Only for local and Airflow runs reading
    files: a compiled Kubeflow/Vertex spec must not depend on the compiling machine's view of
    the data (there "auto" stays in-process; use a cluster preset)."""
    if (
        settings.beam.direct_num_workers != "auto"
        or settings.beam.preset != "direct"
        or settings.data.bigquery_query
        or settings.on_kubeflow
    ):
        return settings
    megabytes = window_input_bytes(settings) / 2**20
    large = megabytes >= settings.beam.multiprocessing_min_mb
    logging.info(
        "Beam DirectRunner: %s (training window %.0f MB, threshold %d MB)",
        "one worker process per core" if large else "in-process",
        megabytes,
        settings.beam.multiprocessing_min_mb,
    )
    return settings.with_overrides(beam_direct_num_workers="0" if large else "1")


def transform_materializes(settings: PipelineSettings) -> bool:
    """Whether Transform writes the transformed examples (PIPELINE_TRANSFORM_MATERIALIZE), with
    auto resolved against the data as with_beam_workers resolves the Beam mode: false once the
    training window's input files reach PIPELINE_TRANSFORM_MATERIALIZE_MIN_MB. Only local and
    Airflow runs reading files look at the data; a compiled Kubeflow/Vertex spec (or a query)
    keeps materializing under auto. Forced on where only transformed examples will do: the
    distribution strategies other than default, the TF Lite export (its representative data)
    and Vertex training. Logs the decision."""
    strategy = settings.training.distribution_strategy
    forced = [
        variable
        for variable, needs in (
            (f"PIPELINE_DISTRIBUTION_STRATEGY={strategy}", strategy != "default"),
            ("PIPELINE_TFLITE_EXPORT", settings.tflite.export),
            ("PIPELINE_VERTEX_TRAINING_REPLICAS", settings.cloud.vertex_training_replicas > 0),
        )
        if needs
    ]
    setting = settings.transform.materialize
    if forced:
        materialize, why = True, f"needed by {', '.join(forced)}"
    elif setting != "auto":
        materialize, why = setting == "true", f"PIPELINE_TRANSFORM_MATERIALIZE={setting}"
    elif settings.data.bigquery_query or settings.on_kubeflow:
        materialize, why = True, "auto: the data is not read where the pipeline is compiled"
    else:
        megabytes = window_input_bytes(settings) / 2**20
        materialize = megabytes < settings.transform.materialize_min_mb
        why = (
            f"training window {megabytes:.0f} MB, threshold "
            f"{settings.transform.materialize_min_mb} MB"
        )
    # Asked not to, and forced: a warning, not an error (the run still trains the same model).
    log = logging.warning if forced and setting == "false" else logging.info
    log(
        "Transform: %s (%s)",
        "materializes the transformed examples"
        if materialize
        else "writes no transformed examples; the Tuner and the Trainer transform the raw window",
        why,
    )
    return materialize


def read_csv(path: Path) -> list[dict[str, str]]:
    """A span file's rows as dicts of raw strings (tests, benchmarks and replays slice spans)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    """Rows as a span file, the header from the first row's keys."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
