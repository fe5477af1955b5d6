"""StatisticsGen's executor, computing small splits in memory (pipeline/in_memory_statistics.py).

The component, its inputs, outputs and artifacts are TFX's; only where a split's statistics
are computed changes. TFX's own executor runs whenever an option needs its Beam path (sharded
output, sampling, reading a subset of paths), Beam would not run in this process, or a split's
records exceed in_memory_statistics.IN_MEMORY_MAX_BYTES. On the DirectRunner both paths run in
this process: the DirectRunner's worker flags, which the pipeline sets for Transform and the
Evaluator on large data, are dropped here (beam_args.in_process_context)."""

from __future__ import annotations

import os
from typing import Any

from absl import logging
from tensorflow_data_validation.statistics import stats_options as options
from tfx import types
from tfx.components.statistics_gen import executor as tfx_executor
from tfx.components.util import examples_utils, tfxio_utils
from tfx.proto import example_gen_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import io_utils, json_utils, stats_utils

from pipeline import beam_args, in_memory_statistics

_TELEMETRY = ["StatisticsGen"]


class Executor(tfx_executor.Executor):
    """TFX's StatisticsGen executor; splits that fit computed in memory, without Beam."""

    def __init__(self, context: Any = None) -> None:
        super().__init__(beam_args.in_process_context(context))

    def Do(
        self,
        input_dict: dict[str, list[types.Artifact]],
        output_dict: dict[str, list[types.Artifact]],
        exec_properties: dict[str, Any],
    ) -> None:
        examples = artifact_utils.get_single_instance(
            input_dict[standard_component_specs.EXAMPLES_KEY]
        )
        stats_options = _stats_options(exec_properties)
        splits = _split_names(examples, exec_properties)
        if not splits or not self.in_memory(examples, splits, stats_options, exec_properties):
            return super().Do(input_dict, output_dict, exec_properties)
        self._log_startup(input_dict, output_dict, exec_properties)
        if input_dict.get(standard_component_specs.SCHEMA_KEY):
            if stats_options.schema:
                raise ValueError(
                    "A schema was provided as an input and the stats_options exec_property "
                    "also contains a schema value. At most one of these may be set."
                )
            stats_options.schema = io_utils.SchemaReader().read(
                io_utils.get_only_uri_in_dir(
                    artifact_utils.get_single_uri(input_dict[standard_component_specs.SCHEMA_KEY])
                )
            )
        statistics = artifact_utils.get_single_instance(
            output_dict[standard_component_specs.STATISTICS_KEY]
        )
        # The output artifact's properties, as TFX's executor sets them.
        statistics.split_names = artifact_utils.encode_split_names(splits)
        statistics.span = examples.span
        statistics.set_string_custom_property(
            tfx_executor.STATS_DASHBOARD_LINK, stats_utils.generate_stats_dashboard_link(statistics)
        )
        statistics.set_json_value_custom_property(
            tfx_executor.SAMPLE_RATE_BY_SPLIT_PROPERTY_NAME,
            json_utils.dumps({split: stats_options.sample_rate or 1.0 for split in splits}),
        )
        tf_examples = (
            examples_utils.get_payload_format(examples)
            == example_gen_pb2.PayloadFormat.FORMAT_TF_EXAMPLE
        )
        for split in splits:
            logging.info("Generating statistics for split %s in memory.", split)
            if tf_examples:
                patterns = tfxio_utils.get_file_format_and_patterns([examples], split)[0]
                split_statistics = in_memory_statistics.compute_examples(patterns, stats_options)
            else:
                tfxio = tfxio_utils.get_split_tfxio(
                    examples=[examples], split=split, telemetry_descriptors=_TELEMETRY
                )
                split_statistics = in_memory_statistics.compute(tfxio, stats_options)
            path = os.path.join(
                artifact_utils.get_split_uri([statistics], split), tfx_executor.DEFAULT_FILE_NAME
            )
            in_memory_statistics.write_binary(split_statistics, path)

    def in_memory(
        self,
        examples: types.Artifact,
        splits: list[str],
        stats_options: options.StatsOptions,
        exec_properties: dict[str, Any],
    ) -> bool:
        """Whether these splits' statistics are computed in memory (else TFX's Beam path)."""
        needs_beam = (
            exec_properties.get(standard_component_specs.SHARDED_STATS_OUTPUT_KEY)
            or json_utils.loads(
                exec_properties.get(standard_component_specs.SAMPLE_RATE_BY_SPLIT_KEY, "null")
            )
            or stats_options.sample_rate not in (None, 1.0)
            or stats_options.experimental_filter_read_paths
        )
        if needs_beam:
            return False
        return all(
            in_memory_statistics.fits_in_memory(pattern, self._beam_pipeline_args)
            for split in splits
            for pattern in tfxio_utils.get_file_format_and_patterns([examples], split)[0]
        )


def _stats_options(exec_properties: dict[str, Any]) -> options.StatsOptions:
    json_options = exec_properties.get(standard_component_specs.STATS_OPTIONS_JSON_KEY)
    return options.StatsOptions.from_json(json_options) if json_options else options.StatsOptions()


def _split_names(examples: types.Artifact, exec_properties: dict[str, Any]) -> list[str]:
    """The splits TFX's executor computes: the artifact's, minus exclude_splits (none when
    exclude_splits is malformed)."""
    excluded = (
        json_utils.loads(exec_properties.get(standard_component_specs.EXCLUDE_SPLITS_KEY, "null"))
        or []
    )
    if not isinstance(excluded, list):
        return []  # TFX's executor says what is wrong with it
    if examples.has_custom_property(examples_utils.CUSTOM_SPLIT_PATTERN_PROPERTY_NAME):
        splits = list(
            json_utils.loads(
                examples.get_string_custom_property(
                    examples_utils.CUSTOM_SPLIT_PATTERN_PROPERTY_NAME
                )
            )
        )
    else:
        splits = artifact_utils.decode_split_names(examples.split_names)
    return [split for split in splits if split not in excluded]
