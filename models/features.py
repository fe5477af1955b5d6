"""The dataset's features: the one place that names raw columns and how each is treated.

Edit this file (with `preprocessing.py` and `schema/schema.pbtxt`) for a new dataset.
"""
from __future__ import annotations

# Heavy-tailed amounts: log1p, then z-score; also quantile buckets, because their effect is
# not monotonic (short fares and airport fares both tip well, mid-range fares less).
NUMERIC_FEATURES = ["fare", "trip_miles", "trip_seconds"]
NUMERIC_BUCKETS = 20

# Coordinates: quantile buckets, so the model sees neighbourhoods, not raw degrees.
BUCKET_FEATURES = ["pickup_latitude", "pickup_longitude", "dropoff_latitude", "dropoff_longitude"]
NUM_BUCKETS = 10

# Small known integer ranges: used as ids directly; the value count is max id + 1.
IDENTITY_FEATURES = {
    "trip_start_hour": 24,
    "trip_start_day": 8,
    "trip_start_month": 13,
    "pickup_community_area": 78,
    "dropoff_community_area": 78,
}

# Open-ended categories: a vocabulary learned by Transform, plus out-of-vocabulary buckets.
VOCAB_FEATURES = {
    # feature: (top_k, frequency_threshold)
    "payment_type": (10, 1),
    "company": (30, 5),
    "dropoff_census_tract": (200, 5),
}
NUM_OOV_BUCKETS = 2

# In the data but not model inputs: the timestamp only orders trips into spans, and
# pickup_census_tract is almost always empty.
UNUSED_FEATURES = ["trip_start_timestamp", "pickup_census_tract"]

# The label is derived in preprocessing from the raw `tips` column, which exists only at
# training time (the schema's SERVING environment excludes it).
RAW_LABEL_KEY = "tips"
LABEL_KEY = "big_tipper"
BIG_TIP_FRACTION = 0.2

# Columns that are strings; all other model inputs are numbers.
STRING_FEATURES = ["payment_type", "company"]


def transformed_name(key: str) -> str:
    return key + "_xf"


def bucketized_name(key: str) -> str:
    return key + "_bucket_xf"


def raw_feature_keys() -> list[str]:
    """Every raw column a serving request carries (all inputs, no label)."""
    return (NUMERIC_FEATURES + BUCKET_FEATURES + list(IDENTITY_FEATURES) + list(VOCAB_FEATURES))


def vocab_size(key: str) -> int:
    top_k, _ = VOCAB_FEATURES[key]
    return top_k + NUM_OOV_BUCKETS
