"""The Keras model, its input pipeline, training (`run_fn`) and the exported signatures.

Keras 2 (`tf_keras`): see models/__init__.py for why.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Optional

import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras
from absl import logging

from models import features, hyperparameters, warm_start
from pipeline import ps_cluster, runtime, signature_methods

# The signatures' names are shared with serving/ and the Evaluator. serving_keyed is
# serving_raw plus a `key` string passed through untouched: batch predictions
# (serving/batch_predict.py) stay joinable to their rows whatever order a runner emits them in.
from pipeline.names import (
    CLASSIFY_CLASSES_OUTPUT,
    CLASSIFY_METHOD_NAME,
    CLASSIFY_REGRESS_INPUT,
    CLASSIFY_SCORES_OUTPUT,
    CLASSIFY_SIGNATURE,
    KEY_INPUT,
    PREDICTION_KEY,
    RAW_EXAMPLES_CONFIG,
    REGRESS_METHOD_NAME,
    REGRESS_OUTPUT,
    REGRESS_SIGNATURE,
    SERVING_DEFAULT_SIGNATURE,
    SERVING_KEYED_SIGNATURE,
    SERVING_RAW_SIGNATURE,
    TRANSFORM_SIGNATURE,
)
from pipeline.tfx_api import tfx

runtime.leave_tf_keras_alone()  # tracing fit() 12 s -> 1 s (pipeline/runtime.py)
# Examples held in memory by tf.data's cache; the shipped data is ~15k rows.
CACHE_MAX_FILES_BYTES = 512 * 1024 * 1024
# Below this (compressed) size the records are held in memory in content order, which makes
# training repeatable (see _in_content_order); the shipped data is ~2 MB.
CONTENT_ORDER_MAX_FILES_BYTES = 64 * 1024 * 1024
# Decimals of the floats in the content-order key: coarse enough that a last-bit difference
# rarely crosses a rounding boundary, fine enough that distinct records keep distinct keys.
ORDER_KEY_FLOAT_DECIMALS = 2
# Records read from one file before moving to the next. tf.data's parallel file reads
# (num_parallel_reads) hand every record from thread to thread alone: 1.1M raw records took
# 28.5 s to load, against 1.5 s read in blocks of 256 (and 5.1 s read file after file).
READ_BLOCK_RECORDS = 256
# Files read at once (each holds a decompression buffer).
READ_PARALLEL_FILES = 8
# Training and validation steps run per call of the traced step function: one Python round
# trip per 25 batches instead of per batch. Same updates in the same order (the losses agree
# to the last digit), epochs about twice as fast on the shipped data.
STEPS_PER_EXECUTION = 25
# The opt-in crossed feature (PIPELINE_CROSSED_EMBEDDING_BUCKETS > 0): its hashed ids and
# their embedding table, the one large variable, which parameter_server shards across ps tasks.
CROSSED_IDS_LAYER = "crossed_ids"
CROSSED_EMBEDDING_LAYER = "crossed_embedding"
# The classification signature's classes: the label is false or true (the model's one sigmoid
# output is P(true)), named as TF Estimators' binary classifiers name them.
CLASSES = ("0", "1")
# The method names TF Serving's Classify/Regress expect (TF2 saves every signature as predict).
SIGNATURE_METHOD_NAMES = {
    CLASSIFY_SIGNATURE: CLASSIFY_METHOD_NAME,
    REGRESS_SIGNATURE: REGRESS_METHOD_NAME,
}


def _categorical_inputs() -> dict[str, int]:
    """Transformed categorical input name -> number of ids."""
    sizes = {
        features.bucketized_name(k): features.NUMERIC_BUCKETS for k in features.NUMERIC_FEATURES
    }
    sizes.update(
        {features.transformed_name(k): features.NUM_BUCKETS + 1 for k in features.BUCKET_FEATURES}
    )
    sizes.update({features.transformed_name(k): n for k, n in features.IDENTITY_FEATURES.items()})
    sizes.update(
        {features.transformed_name(k): features.vocab_size(k) for k in features.VOCAB_FEATURES}
    )
    return sizes


def _categorical_input_name(key: str) -> str:
    """The transformed categorical input of raw column `key` (numbers: their buckets)."""
    return (
        features.bucketized_name(key)
        if key in features.NUMERIC_FEATURES
        else (features.transformed_name(key))
    )


def crossed_inputs() -> tuple[str, str]:
    """The two categorical inputs the crossed feature crosses: CROSSED_FEATURES in
    models/features.py if it names them, else the two with the most ids."""
    categorical = _categorical_inputs()
    chosen = getattr(features, "CROSSED_FEATURES", None)
    if chosen:
        names = tuple(_categorical_input_name(k) for k in chosen)
        unknown = [k for k, name in zip(chosen, names) if name not in categorical]
        if len(names) != 2 or unknown:
            raise ValueError(
                f"CROSSED_FEATURES={list(chosen)} in models/features.py: name two "
                f"categorical features (unknown: {unknown})"
            )
        return names
    if len(categorical) < 2:
        raise ValueError(
            f"the crossed feature needs two categorical inputs; the dataset has {len(categorical)}"
        )
    first, second = sorted(categorical, key=lambda k: -categorical[k])[:2]
    return first, second


def model_input_keys() -> list[str]:
    return [features.transformed_name(k) for k in features.NUMERIC_FEATURES] + list(
        _categorical_inputs()
    )


def input_dataset(
    file_patterns: list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    shuffle: bool = True,
    repeat: bool = True,
    seed: Optional[int | tf.Tensor] = None,
    input_context: Optional[tf.distribute.InputContext] = None,
    content_order: bool = True,
    raw: bool = False,
) -> tf.data.Dataset:
    """(features, label) batches from Transform's gzipped TFRecords, or with `raw` from the
    raw examples Transform read (ExampleGen's), each batch parsed with the raw feature spec and
    put through Transform's graph, as the serving signatures do: the same model inputs and
    label either way.

    Batches before parsing (one vectorized parse per batch), reads files in parallel,
    holds the serialized records in memory when they fit (in content order, for repeatable
    training, when they are small), and prefetches.

    With an `input_context` of several input pipelines (one per worker), every worker reads
    the same seeded, shuffled stream and keeps every n-th record: a global step then trains on
    exactly the consecutive records one worker would batch alone (so a multi-worker run
    matches a single-worker run with the global batch size). `batch_size` is per pipeline.

    `content_order=False` skips the content ordering (it reads the records eagerly, which a
    parameter-server worker's traced dataset function cannot; asynchronous training is not
    repeatable anyway).
    """
    files = sorted(f for pattern in file_patterns for f in tf.io.gfile.glob(pattern))
    if not files:
        kind = "raw" if raw else "transformed"
        raise FileNotFoundError(f"no {kind} examples match {file_patterns}")
    if raw:
        feature_spec = tf_transform_output.raw_feature_spec()
        # Once, outside the map function: it loads the transform graph.
        transform_layer = tf_transform_output.transform_features_layer()
    else:
        feature_spec = tf_transform_output.transformed_feature_spec()
    dataset = _read_records(files)
    files_bytes = sum(tf.io.gfile.stat(f).length for f in files)
    if content_order and files_bytes < CONTENT_ORDER_MAX_FILES_BYTES:
        dataset = _in_content_order(dataset, None if raw else feature_spec)
    elif files_bytes < CACHE_MAX_FILES_BYTES:
        dataset = dataset.cache()
    if shuffle:
        dataset = dataset.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    if input_context is not None and input_context.num_input_pipelines > 1:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    dataset = dataset.batch(batch_size, drop_remainder=repeat)

    def parse(serialized):
        parsed = tf.io.parse_example(serialized, feature_spec)
        if raw:
            parsed = transform_layer(parsed)
        label = parsed.pop(features.LABEL_KEY)
        return {k: parsed[k] for k in model_input_keys()}, label

    return dataset.map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def _read_records(files: list[str]) -> tf.data.Dataset:
    """The serialized records of the gzipped TFRecord `files`, several files read in parallel,
    in blocks of READ_BLOCK_RECORDS taken from each file in turn (a fixed order)."""
    return (
        tf.data.Dataset.from_tensor_slices(files)
        .interleave(
            lambda path: tf.data.TFRecordDataset(path, compression_type="GZIP").batch(
                READ_BLOCK_RECORDS
            ),
            cycle_length=min(len(files), READ_PARALLEL_FILES),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
        .unbatch()
    )


def _in_content_order(
    records: tf.data.Dataset, feature_spec: Optional[dict[str, tf.io.FixedLenFeature]]
) -> tf.data.Dataset:
    """The records in memory, in an order set by their content alone.

    Beam writes Transform's output in no fixed order, so two runs on the same data (or the
    same data written by another runner) would otherwise shuffle, batch and train
    differently; with the order fixed, the seeds make training repeatable. The order key
    rounds the floats (ORDER_KEY_FLOAT_DECIMALS): Beam's combiners add Transform's
    statistics in no fixed order, so a z-score may differ in its last bit from run to run,
    and a key over the raw bytes would then reorder most records. Raw examples
    (`feature_spec` None) are byte-for-byte the same in every run: their bytes are the key."""
    batches = list(records.batch(65_536))
    if not batches:
        return records
    serialized = tf.concat(batches, axis=0)
    keys = serialized if feature_spec is None else _content_keys(serialized, feature_spec)
    # Stable: records with equal keys (near-duplicates) keep their relative order.
    order = tf.argsort(tf.strings.to_hash_bucket_fast(keys, 2**62), stable=True)
    return tf.data.Dataset.from_tensor_slices(tf.gather(serialized, order))


def _content_keys(
    serialized: tf.Tensor, feature_spec: dict[str, tf.io.FixedLenFeature]
) -> tf.Tensor:
    """One string per transformed record: its values, floats rounded."""
    parsed = tf.io.parse_example(serialized, feature_spec)
    columns = []
    for name in sorted(parsed):
        value = tf.reshape(parsed[name], [tf.shape(serialized)[0], -1])
        if value.dtype.is_floating:
            value = tf.cast(
                tf.round(tf.cast(value, tf.float64) * 10.0**ORDER_KEY_FLOAT_DECIMALS), tf.int64
            )
        if value.dtype != tf.string:
            value = tf.strings.as_string(value)
        columns.append(tf.strings.reduce_join(value, axis=1, separator=","))
    return tf.strings.reduce_join(tf.stack(columns, axis=1), axis=1, separator="|")


def build_model(
    hp: hyperparameters.keras_tuner.HyperParameters, crossed_embedding_buckets: int = 0
) -> keras.Model:
    """A deep network over embeddings of the categorical inputs and the z-scored numbers.

    With `crossed_embedding_buckets` > 0, also an embedding of the two crossed_inputs()
    crossed and hashed into that many buckets: a table of buckets x embedding_dim floats,
    the model-parallel variant (parameter_server shards the table across its ps tasks)."""
    embedding_dim = hp.get("embedding_dim")
    inputs, deep = {}, []
    for key in features.NUMERIC_FEATURES:
        name = features.transformed_name(key)
        inputs[name] = keras.Input(shape=(), name=name, dtype=tf.float32)
        deep.append(keras.layers.Reshape((1,))(inputs[name]))
    for name, size in _categorical_inputs().items():
        inputs[name] = keras.Input(shape=(), name=name, dtype=tf.int64)
        deep.append(
            keras.layers.Embedding(size, embedding_dim, name=f"{name}_embedding")(inputs[name])
        )
    if crossed_embedding_buckets:
        first, second = crossed_inputs()
        crossed = keras.layers.HashedCrossing(crossed_embedding_buckets, name=CROSSED_IDS_LAYER)(
            (inputs[first], inputs[second])
        )
        deep.append(
            keras.layers.Embedding(
                crossed_embedding_buckets, embedding_dim, name=CROSSED_EMBEDDING_LAYER
            )(crossed)
        )

    x = keras.layers.Concatenate()(deep)
    for i in range(hp.get("num_layers")):
        x = keras.layers.Dense(hp.get("hidden_units"), activation="relu", name=f"dense_{i}")(x)
        if hp.get("dropout"):
            x = keras.layers.Dropout(hp.get("dropout"))(x)
    output = keras.layers.Dense(1, activation="sigmoid", name=PREDICTION_KEY)(x)
    model = keras.Model(inputs=inputs, outputs=output)
    model.compile(
        optimizer=keras.optimizers.Adam(hp.get("learning_rate")),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[keras.metrics.AUC(name="auc"), keras.metrics.BinaryAccuracy(name="accuracy")],
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    # Adam creates its slot variables inside the first traced training step, and a tf.function
    # that creates variables is traced again: created here, the step is traced once (about 1 s
    # less per model, in every Tuner trial too; the same weights to the last digit).
    model.optimizer.build(model.trainable_variables)
    return model


def distribution_strategy(
    name: str, cluster_resolver=None, config: Optional[dict] = None
) -> tf.distribute.Strategy:
    """default: one device; mirrored: synchronous replicas on this machine's GPUs, or on its
    logical CPU devices if it has no GPU and several are configured; multi_worker: synchronous
    all-reduce across the workers TF_CONFIG lists; parameter_server: asynchronous training
    on the workers of `cluster_resolver`'s cluster (this process coordinates), variables on
    its ps tasks, large ones split in shards (variable_partitioner)."""
    if name == "parameter_server":
        if cluster_resolver is None:
            raise ValueError("parameter_server needs a cluster (run_fn starts or finds one)")
        num_ps = cluster_resolver.cluster_spec().num_tasks("ps")
        return tf.distribute.ParameterServerStrategy(
            cluster_resolver, variable_partitioner=variable_partitioner(config or {}, num_ps)
        )
    if name == "mirrored":
        if not tf.config.list_logical_devices("GPU"):
            cpus = [d.name for d in tf.config.list_logical_devices("CPU")]
            if len(cpus) > 1:
                return tf.distribute.MirroredStrategy(cpus)
        return tf.distribute.MirroredStrategy()
    if name == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "default":
        return tf.distribute.get_strategy()
    raise ValueError(
        f"distribution_strategy={name!r}: expected default, mirrored, multi_worker "
        "or parameter_server"
    )


def variable_partitioner(config: dict, num_ps: int):
    """Variables of at least 2 x ps_min_shard_bytes are split by rows into shards of at least
    that size, at most ps_max_shards (0: one per ps task) of them, placed on the ps tasks in
    turn; smaller variables stay whole on one ps task."""
    max_shards = int(config.get("ps_max_shards") or 0) or num_ps
    return tf.distribute.experimental.partitioners.MinSizePartitioner(
        min_shard_bytes=int(config.get("ps_min_shard_bytes") or 256 << 10), max_shards=max_shards
    )


def shard_placement(model: keras.Model) -> dict[str, list[tuple[str, list[int]]]]:
    """Sharded variable -> [(device, shape)] of its shards, in shard order (a variable that
    the partitioner split is a ShardedVariable whose parts Keras lists as `<name>/part_<i>`)."""
    placement: dict[str, list] = {}
    for variable in model.variables:
        match = re.fullmatch(r"(.+)/part_(\d+)(:\d+)?", variable.name)
        if match:
            placement.setdefault(match.group(1), []).append(
                (int(match.group(2)), variable.device, variable.shape.as_list())
            )
    return {
        name: [(device, shape) for _, device, shape in sorted(parts)]
        for name, parts in placement.items()
    }


def _distributed_input(
    strategy: tf.distribute.Strategy,
    file_patterns: list[str],
    tf_transform_output: tft.TFTransformOutput,
    global_batch: int,
    **kwargs,
):
    """input_dataset for `strategy`: across workers, each worker builds its own share (see
    input_dataset) instead of tf.data's auto-sharding by file, whose split depends on how
    many files Transform wrote; on one machine, the plain dataset."""
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        return keras.utils.experimental.DatasetCreator(
            lambda context: _worker_dataset(
                file_patterns, tf_transform_output, global_batch, **kwargs
            )
        )
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return input_dataset(file_patterns, tf_transform_output, global_batch, **kwargs)
    return strategy.distribute_datasets_from_function(
        lambda context: input_dataset(
            file_patterns,
            tf_transform_output,
            global_batch // context.num_input_pipelines,
            input_context=context,
            **kwargs,
        )
    )


def _worker_dataset(
    file_patterns: list[str],
    tf_transform_output: tft.TFTransformOutput,
    batch_size: int,
    seed: Optional[int] = None,
    **kwargs,
) -> tf.data.Dataset:
    """A parameter-server worker's input (its DatasetCreator function, traced once and run on
    every worker): all the records, shuffled with the seed plus the worker's index, so workers
    see them in different orders and a worker that dies takes no share of the data with it
    (ParameterServerStrategy's InputContext is the same on every worker; the index is known
    only when the function runs on one). Each worker step is one batch of `batch_size`."""
    worker_seed = None
    if seed is not None:
        worker = tf.distribute.coordinator.experimental_get_current_worker_index()
        worker_seed = tf.cast(worker, tf.int64) + int(seed)
    return input_dataset(
        file_patterns,
        tf_transform_output,
        batch_size,
        seed=worker_seed,
        content_order=False,
        **kwargs,
    )


def _unsharded_copy(model: keras.Model, build, checkpoint_dir: str) -> keras.Model:
    """The trained weights in a model built outside the strategy, with whole variables.

    Signatures traced on the coordinator capture each shard of a sharded table and look ids up
    shard by shard; the SavedModel stores the table whole, so such a signature would read the
    wrong rows for every id past the first shard. A checkpoint stores a sharded variable whole
    too: written from the trained model and read into a plain one, it carries every weight."""
    path = tf.train.Checkpoint(model=model).write(os.path.join(checkpoint_dir, "trained"))
    plain = build()
    tf.train.Checkpoint(model=plain).read(path).assert_existing_objects_matched()
    logging.info("Exporting the trained weights as whole variables (from %s)", path)
    return plain


def _is_chief() -> bool:
    """The chief writes the model: the "chief" task if the cluster has one, else worker 0."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task")
    if not task:
        return True
    if "chief" in tf_config.get("cluster", {}):
        return task["type"] == "chief"
    return task["type"] == "worker" and int(task["index"]) == 0


def _raw_input_specs(raw_feature_spec: dict) -> dict[str, tf.TensorSpec]:
    """JSON-friendly inputs: every number as float64 (an int or a float both fit), strings
    as strings; NaN or "" marks a missing value, as an absent value in a tf.Example would."""
    specs = {}
    for key in features.raw_feature_keys():
        dtype = tf.string if raw_feature_spec[key].dtype == tf.string else tf.float64
        specs[key] = tf.TensorSpec([None], dtype, name=key)
    return specs


def _signature_function(input_spec: Any) -> Callable:
    """tf.function without AutoGraph, for the serving signatures: they have no Python control
    flow over tensors, and converting them and the Transform layer's code they call cost
    about 0.6 s per export."""
    return tf.function(input_signature=[input_spec], autograph=False)


def _parsed_specs(feature_spec: dict) -> dict[str, tf.TypeSpec]:
    """What tf.io.parse_example returns for `feature_spec`, as a tf.function signature."""
    specs: dict[str, tf.TypeSpec] = {}
    for key, spec in feature_spec.items():
        if isinstance(spec, tf.io.FixedLenFeature):
            specs[key] = tf.TensorSpec([None, *spec.shape], spec.dtype, name=key)
        else:
            specs[key] = tf.SparseTensorSpec([None, None], spec.dtype)
    return specs


def raw_to_sparse(values: tf.Tensor, dtype: tf.DType) -> tf.SparseTensor:
    """A [batch, 1] SparseTensor holding the present values, cast to the schema's dtype."""
    present = tf.not_equal(values, "") if values.dtype == tf.string else ~tf.math.is_nan(values)
    indices = tf.where(present)
    kept = tf.gather_nd(values, indices)
    if dtype != tf.string:
        kept = tf.cast(kept, dtype)
    return tf.SparseTensor(
        tf.concat([indices, tf.zeros_like(indices)], axis=1),
        kept,
        tf.stack([tf.size(values, out_type=tf.int64), tf.constant(1, tf.int64)]),
    )


def export_signatures(model: keras.Model, tf_transform_output: tft.TFTransformOutput) -> dict:
    """serving_default (serialized tf.Example), serving_raw (typed raw values), serving_keyed
    (serving_raw plus a passed-through `key`), classification and regression (TF Serving's
    Classify/Regress on serialized tf.Examples: `inputs` in; `classes` and `scores`, or
    `outputs` = P(true), out) and transform_features (for TFMA); all apply the same
    Transform graph. Saving writes them all as predict signatures: SIGNATURE_METHOD_NAMES
    are set after saving (export)."""
    model.tft_layer = tf_transform_output.transform_features_layer()
    raw_feature_spec = tf_transform_output.raw_feature_spec()
    training_only = features.label_columns()
    serving_spec = {k: v for k, v in raw_feature_spec.items() if k not in training_only}
    input_keys = model_input_keys()

    # One traced function behind every signature: each trace of the Transform layer lifts its
    # whole graph into the signature's (about 0.4 s each), so the signatures share this one.
    model_spec = {k: raw_feature_spec[k] for k in features.raw_feature_keys()}

    @_signature_function(_parsed_specs(model_spec))
    def predict(raw: dict) -> dict:
        transformed = model.tft_layer(raw)
        return {PREDICTION_KEY: model({k: transformed[k] for k in input_keys})}

    @_signature_function(tf.TensorSpec([None], tf.string, name="examples"))
    def serve_examples(serialized):
        parsed = tf.io.parse_example(serialized, serving_spec)
        return predict({k: parsed[k] for k in model_spec})

    @_signature_function(_raw_input_specs(raw_feature_spec))
    def serve_raw(raw):
        return predict({k: raw_to_sparse(v, raw_feature_spec[k].dtype) for k, v in raw.items()})

    keyed_specs = {
        **_raw_input_specs(raw_feature_spec),
        KEY_INPUT: tf.TensorSpec([None], tf.string, name=KEY_INPUT),
    }

    @_signature_function(keyed_specs)
    def serve_keyed(raw):
        raw = dict(raw)
        key = raw.pop(KEY_INPUT)
        outputs = predict({k: raw_to_sparse(v, raw_feature_spec[k].dtype) for k, v in raw.items()})
        return {**outputs, KEY_INPUT: tf.identity(key)}

    @_signature_function(tf.TensorSpec([None], tf.string, name=CLASSIFY_REGRESS_INPUT))
    def classify_examples(serialized):
        p = tf.reshape(serve_examples(serialized)[PREDICTION_KEY], [-1, 1])
        classes = tf.tile(tf.constant([CLASSES]), [tf.shape(p)[0], 1])
        return {
            CLASSIFY_CLASSES_OUTPUT: classes,
            CLASSIFY_SCORES_OUTPUT: tf.concat([1.0 - p, p], axis=1),
        }

    @_signature_function(tf.TensorSpec([None], tf.string, name=CLASSIFY_REGRESS_INPUT))
    def regress_examples(serialized):
        return {REGRESS_OUTPUT: tf.reshape(serve_examples(serialized)[PREDICTION_KEY], [-1])}

    @_signature_function(tf.TensorSpec([None], tf.string, name="examples"))
    def transform_features(serialized):
        return model.tft_layer(tf.io.parse_example(serialized, raw_feature_spec))

    return {
        SERVING_DEFAULT_SIGNATURE: serve_examples.get_concrete_function(),
        SERVING_RAW_SIGNATURE: serve_raw.get_concrete_function(),
        SERVING_KEYED_SIGNATURE: serve_keyed.get_concrete_function(),
        CLASSIFY_SIGNATURE: classify_examples.get_concrete_function(),
        REGRESS_SIGNATURE: regress_examples.get_concrete_function(),
        TRANSFORM_SIGNATURE: transform_features.get_concrete_function(),
    }


def run_fn(fn_args: tfx.components.FnArgs) -> None:
    """Trains the model (TFX Trainer entry point) and exports it with its signatures.

    parameter_server: a worker or ps replica of a TF_CONFIG cluster (Vertex) serves its task
    instead; the coordinator trains on the cluster pipeline/ps_cluster.py finds or starts."""
    config = fn_args.custom_config or {}
    name = config.get("distribution_strategy", "default")
    if name != "parameter_server":
        _train_and_export(fn_args, distribution_strategy(name))
        return
    if ps_cluster.serve_task_from_tf_config():
        return
    with ps_cluster.training_cluster(
        int(config.get("ps_workers", 2)),
        int(config.get("ps_tasks", 2)),
        log_dir=os.path.join(fn_args.model_run_dir, "ps-cluster"),
    ) as resolver:
        _train_and_export(fn_args, distribution_strategy(name, resolver, config))


def _train_and_export(fn_args: tfx.components.FnArgs, strategy: tf.distribute.Strategy) -> None:
    config = fn_args.custom_config or {}
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    hp = hyperparameters.from_config(fn_args.hyperparameters)
    logging.info("Training with hyperparameters %s", hp.values)
    batch_size = int(config.get("batch_size", 128))
    seed = config.get("seed")
    if seed is not None:
        keras.utils.set_random_seed(int(seed))

    # Each replica gets batch_size examples: the global batch grows with the replicas (under
    # parameter_server one replica: each worker's step is one batch).
    global_batch = batch_size * strategy.num_replicas_in_sync
    logging.info(
        "Training on %d replica(s) with %s, global batch %d",
        strategy.num_replicas_in_sync,
        type(strategy).__name__,
        global_batch,
    )
    raw = bool(config.get(RAW_EXAMPLES_CONFIG))
    logging.info("Reading %s examples", "raw" if raw else "transformed")
    train = _distributed_input(
        strategy, fn_args.train_files, tf_transform_output, global_batch, seed=seed, raw=raw
    )
    evaluation = _distributed_input(
        strategy, fn_args.eval_files, tf_transform_output, global_batch, shuffle=False, raw=raw
    )
    with strategy.scope():
        model = build_model(hp, int(config.get("crossed_embedding_buckets") or 0))
    for variable, shards in shard_placement(model).items():
        logging.info(
            "Sharded variable %s: %s",
            variable,
            ", ".join(f"{shape} on {device}" for device, shape in shards),
        )
    train_steps = fn_args.train_steps
    # Warm start (PIPELINE_WARM_START): from the served model's weights, fewer steps do.
    if fn_args.base_model and warm_start.warm_start(model, fn_args.base_model, tf_transform_output):
        train_steps = max(int(train_steps * float(config["warm_start_steps_fraction"])), 10)
    model.fit(
        train,
        steps_per_epoch=max(train_steps // 10, 1),
        epochs=10,
        validation_data=evaluation,
        validation_steps=fn_args.eval_steps,
        verbose=2,
    )
    if isinstance(strategy, tf.distribute.ParameterServerStrategy):
        model = _unsharded_copy(
            model,
            lambda: build_model(hp, int(config.get("crossed_embedding_buckets") or 0)),
            os.path.join(fn_args.model_run_dir, "trained-weights"),
        )

    # Under MultiWorkerMirroredStrategy every worker saves (saving is collective), but only
    # the chief writes to the real output; the others write to a scratch directory.
    output_dir = fn_args.serving_model_dir
    if not _is_chief():
        output_dir = os.path.join(
            fn_args.model_run_dir,
            "worker-scratch",
            str(json.loads(os.environ["TF_CONFIG"])["task"]["index"]),
        )
    export(model, tf_transform_output, output_dir)


def export(model: keras.Model, tf_transform_output: tft.TFTransformOutput, output_dir: str) -> None:
    """Saves the model with export_signatures, then gives the classify/regress signatures
    TF Serving's method names."""
    # save_traces=False: the model has only built-in layers, and tracing each layer call for
    # Keras reloading costs seconds; the signatures below are traced regardless.
    model.save(
        output_dir,
        save_format="tf",
        save_traces=False,
        signatures=export_signatures(model, tf_transform_output),
    )
    signature_methods.set_method_names(output_dir, SIGNATURE_METHOD_NAMES)
