"""Names shared across the pipeline, the runners, serving and the analysis views: node ids,
artifact property keys, signature names and file names. Plain strings only (imports nothing),
so anything can import them without importing TFX.
"""

# ---- Node ids (what MLMD records each step's executions and outputs under) -----------------
EXAMPLE_GEN_ID = "CsvExampleGen"
BIGQUERY_EXAMPLE_GEN_ID = "BigQueryExampleGen"
SCHEMA_GEN_ID = "SchemaGen"
ANOMALIES_GATE_ID = "AnomaliesGate"
LEAKAGE_CHECK_ID = "LeakageCheck"
DRIFT_CHECK_ID = "DriftCheck"
PROGRESSIVE_VALIDATION_ID = "ProgressiveValidation"
WINDOW_EXAMPLES_ID = "WindowExamples"
EVALUATOR_ID = "Evaluator"
PUSHER_ID = "Pusher"
TFLITE_EXPORTER_ID = "TFLiteExporter"
SPAN_WINDOW_RESOLVER_ID = "span_window_resolver"
BASELINE_RESOLVER_ID = "latest_blessed_model_resolver"
CURRENT_MODEL_RESOLVER_ID = "current_model_resolver"
PREVIOUS_SPAN_RESOLVER_ID = "previous_span_resolver"
LATEST_HYPERPARAMETERS_RESOLVER_ID = "latest_hyperparameters_resolver"

# ---- Resolver input keys and artifact custom properties ------------------------------------
NEW_SPAN_KEY = "new_span"  # CurrentModelStrategy: this run's span
# PreviousSpanStrategy: in, every ingested span; out, the window's span before this run's.
PREVIOUS_SPAN_KEY = "previous_span"
CANDIDATE_KEY = "candidate"  # LatestBlessedBaselineStrategy: this run's trained model
SPAN_PROPERTY = "span"  # ExampleGen's span number (and ProgressiveValidation's)
SPANS_PROPERTY = "spans"  # WindowExamples: the spans merged into one artifact
AUC_PROPERTY = "auc"  # ProgressiveValidation: the current model's AUC on the new span
MODEL_ID_PROPERTY = "model_id"  # ProgressiveValidation: which model was scored
# Tuner and Trainer custom_config: set when they read raw examples and apply the transform
# graph themselves (Transform materializes none); absent, they read transformed examples.
RAW_EXAMPLES_CONFIG = "raw_examples"
# TFX's Evaluator names the judged model `candidate` when a baseline was evaluated too.
EVALUATOR_CANDIDATE = "candidate"

# ---- Signatures of the exported model (models/model.py writes them, serving/ calls them) ---
SERVING_DEFAULT_SIGNATURE = "serving_default"  # serialized tf.Examples in
SERVING_RAW_SIGNATURE = "serving_raw"  # raw columns as tensors in
SERVING_KEYED_SIGNATURE = "serving_keyed"  # like serving_raw, with a key passed through
TRANSFORM_SIGNATURE = "transform_features"  # the Transform graph alone (TFMA's preprocessing)
PREDICTION_KEY = "probabilities"  # every signature's output
KEY_INPUT = "key"  # serving_keyed's pass-through input
# TF Serving's Classify/Regress signatures (the names TF Estimators export): one input
# `inputs` of serialized tf.Examples; classification outputs `classes` and `scores`
# [batch, classes], regression `outputs` [batch]. TF Serving checks the method names only with
# --enable_signature_method_name_check; pipeline/signature_methods.py writes them regardless.
CLASSIFY_SIGNATURE = "classification"
REGRESS_SIGNATURE = "regression"
CLASSIFY_METHOD_NAME = "tensorflow/serving/classify"
REGRESS_METHOD_NAME = "tensorflow/serving/regress"
PREDICT_METHOD_NAME = "tensorflow/serving/predict"
CLASSIFY_REGRESS_INPUT = "inputs"
CLASSIFY_CLASSES_OUTPUT = "classes"
CLASSIFY_SCORES_OUTPUT = "scores"
REGRESS_OUTPUT = "outputs"

# ---- Files ---------------------------------------------------------------------------------
ANOMALIES_FILE = "SchemaDiff.pb"  # what ExampleValidator writes in each split's folder
STATISTICS_FILE = "FeatureStats.pb"  # what StatisticsGen writes in each split's folder
LEAKAGE_REPORT_FILE = "leakage.json"
TFLITE_MODEL_FILE = "model.tflite"
TRAIN_SPLIT, EVAL_SPLIT = "train", "eval"


def split_dir_name(split: str) -> str:
    """The folder TFX writes one split of an artifact to (`artifact_utils.get_split_uri`
    needs an Artifact object; this takes a plain URI's child name)."""
    return f"Split-{split}"


# Under the pipeline root: the record of each span a check rejected (pipeline/rejections.py).
REJECTIONS_FOLDER = "rejected_spans"
