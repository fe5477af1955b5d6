"""Serving strategy from the workload: the cardinality and peakedness of the request keys, and
the seed's rule on them.

    tfx-template serving-strategy [--log PATH | --span N] [--key COLUMN ...] [--json]

The rule (docs/serving.md, "Choosing a serving strategy"): very low cardinality, whatever the
peakedness -> static serving (precompute every key); high cardinality and a flat workload ->
dynamic serving (the model answers every request); high cardinality and a peaked workload ->
hybrid (precompute the head, the model answers the long tail). The thresholds are settings
(analysis/settings.py, PIPELINE_SERVING_STRATEGY_*).

Each row (one instance of a request, or one row of a span) gets a key: the keyed signature's
`key` input when the request used it, else the values of the model's inputs (or of the `--key`
columns), hashed. Numbers are compared as a tf.Example stores them (whole numbers as integers,
others at float32 precision), so a value sent as JSON, as a b64 tf.Example or read from a CSV
gives the same key.
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import hashlib
import io
import json
import math
import os
import sys
from collections import Counter
from typing import Any, Iterable, Optional, Sequence

import numpy as np
import tensorflow as tf

from analysis.settings import ServingStrategySettings
from models import features
from pipeline import serving_log, spans
from pipeline.names import KEY_INPUT, SERVING_KEYED_SIGNATURE
from pipeline.settings import PipelineSettings

TOP_K = (1, 10, 100, 1000, 10000)
COVERAGES = (0.8, 0.9, 0.95)
KEY_HASH_BYTES = 8  # 16 hex characters: collisions stay unlikely up to ~10^9 keys
VERSION_BYTES = 10  # a pushed version is Unix seconds (10 digits) when the log names none
TOP_KEYS_SHOWN = 10  # the head's first keys in --json


class StrategyError(RuntimeError):
    pass


# ---- keys ------------------------------------------------------------------------------------


def normalized(value: Any, numeric: bool = True) -> Any:
    """A value as a key part: missing (None, "", NaN) as None; whole numbers as int, other
    numbers at float32 precision (as tf.Example's float_list holds them); text of a numeric
    column parsed as a number."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str):
        if value == "":
            return None
        if not numeric:
            return value
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, (bool, int, float, np.number)):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer() and abs(number) < 2**53:
            return int(number)
        return float(np.float32(number))
    return value if value is None else json.dumps(value, sort_keys=True)


def row_key(row: dict[str, Any], columns: Sequence[str]) -> str:
    """The key of a row from `columns`: one column's value as text, several hashed."""
    strings = set(features.STRING_FEATURES)
    values = [normalized(row.get(c), c not in strings) for c in columns]
    if len(values) == 1:
        return "" if values[0] is None else str(values[0])
    text = json.dumps(values, separators=(",", ":"))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=KEY_HASH_BYTES).hexdigest()


@dataclasses.dataclass
class Keys:
    """The keys of a workload's rows, where they came from, and the model version seen."""

    keys: list[str]
    source: str
    description: str  # how the keys were made
    version: Optional[str] = None


def _describe_columns(columns: Sequence[str], explicit: bool) -> str:
    if len(columns) == 1:
        return f"column '{columns[0]}'"
    return (
        f"a hash of columns {', '.join(columns)}"
        if explicit
        else f"a hash of the {len(columns)} model inputs"
    )


def log_keys(path: str, columns: Optional[Sequence[str]] = None) -> Keys:
    """The keys of the successful requests in a request log (serving/request_log.py's format).
    Without `columns`: the keyed signature's key where a request used it, else the model's
    inputs."""
    explicit = bool(columns)
    columns = list(columns or features.raw_feature_keys())
    keys, keyed, versions, seen = [], 0, Counter(), set()
    if not os.path.isfile(path):
        raise StrategyError(
            f"no request log at {path}: serve with PIPELINE_SERVING_LOG_SAMPLING_RATE>0 "
            "first, or pass --log or --span"
        )
    for record in serving_log.read(path):
        use_key = not explicit and record.get("signature_name") == SERVING_KEYED_SIGNATURE
        for row in serving_log.logged_rows([record]):
            seen.update(row)
            if use_key and row.get(KEY_INPUT) is not None:
                value = row[KEY_INPUT]
                if isinstance(value, bytes):
                    value = value.decode("utf-8", "replace")
                keys.append(str(value))
                keyed += 1
            else:
                keys.append(row_key(row, columns))
            if record.get("version") is not None:
                versions[str(record["version"])] += 1
    if explicit:
        _check_columns(columns, seen, f"the request log {path}")
    how = _describe_columns(columns, explicit)
    if keyed == len(keys) and keys:
        how = "the keyed signature's key"
    elif keyed:
        how = f"the keyed signature's key ({keyed} rows), else {how}"
    version = versions.most_common(1)[0][0] if versions else None
    return Keys(keys, path, how, version)


def span_keys(
    settings: PipelineSettings, span: int, columns: Optional[Sequence[str]] = None
) -> Keys:
    """The keys of every row of a span's input files (the rows a batch job would score)."""
    explicit = bool(columns)
    columns = list(columns or features.raw_feature_keys())
    pattern = spans.span_files_pattern(settings, span)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise StrategyError(f"no input files for span {span}: nothing matches {pattern}")
    keys, header = [], set()
    for path in files:
        with tf.io.gfile.GFile(path) as f:
            reader = csv.DictReader(io.StringIO(f.read()))
            header.update(reader.fieldnames or [])
            keys.extend(row_key(row, columns) for row in reader)
    _check_columns(columns, header, f"span {span} ({pattern})")
    return Keys(keys, f"span {span} ({len(files)} file(s))", _describe_columns(columns, explicit))


def _check_columns(columns: Sequence[str], seen: set[str], where: str) -> None:
    missing = [c for c in columns if c not in seen]
    if missing:
        raise StrategyError(
            f"--key {', '.join(missing)}: no row of {where} has it; "
            f"columns there: {', '.join(sorted(seen)) or 'none'}"
        )


# ---- the workload ----------------------------------------------------------------------------


@dataclasses.dataclass
class Workload:
    rows: int
    distinct: int
    seen_once: int  # keys occurring in exactly one row
    top_k_share: dict[int, float]  # k -> share of rows whose key is among the k most frequent
    head_for: dict[float, int]  # coverage -> fewest keys covering that share of rows
    counts: list[tuple[str, int]]  # keys by frequency, most frequent first

    @property
    def distinct_ratio(self) -> float:
        return self.distinct / self.rows

    @property
    def unseen_rate(self) -> float:
        """Good-Turing: the chance that the next row's key was never seen is about the share
        of rows whose key occurs once."""
        return self.seen_once / self.rows

    def head(self, coverage: float) -> int:
        """The fewest keys (the most frequent) whose rows are at least `coverage` of all."""
        cumulative = np.cumsum([c for _, c in self.counts]).tolist()
        return bisect.bisect_left(cumulative, coverage * self.rows) + 1

    def share_of_head(self, size: int) -> float:
        return sum(c for _, c in self.counts[:size]) / self.rows

    def mean_key_bytes(self, size: int) -> float:
        head = self.counts[:size]
        return sum(len(k.encode("utf-8")) for k, _ in head) / len(head) if head else 0.0


def describe(
    keys: Iterable[str], top_k: Sequence[int] = TOP_K, coverages: Sequence[float] = COVERAGES
) -> Workload:
    counts = Counter(keys).most_common()
    rows = sum(c for _, c in counts)
    if not rows:
        raise StrategyError("the workload has no rows (no successful request logged)")
    cumulative = np.cumsum([c for _, c in counts]).tolist()
    workload = Workload(
        rows=rows,
        distinct=len(counts),
        seen_once=sum(1 for _, c in counts if c == 1),
        # k beyond the distinct keys says nothing more (100%)
        top_k_share={k: cumulative[k - 1] / rows for k in sorted(set(top_k)) if k <= len(counts)},
        head_for={},
        counts=counts,
    )
    workload.head_for = {c: workload.head(c) for c in sorted(set(coverages))}
    return workload


def table_bytes(rows: int, key_bytes: float, version_bytes: int) -> dict[str, int]:
    """Storage of `rows` rows of the predictions table (serving/warehouse.py's columns: key,
    probability, model_version, span).
    SQLite: measured with the warehouse's table (key as TEXT PRIMARY KEY, so stored twice:
    in the table and its index, filled about 70% by keys arriving in any order): about
    2.1 x key + version + 30 bytes a row (74 bytes for 16-byte keys, 125 for 40-byte keys),
    plus about two 4 KB pages of any file (its schema page, the table's and index's roots).
    BigQuery's billed size: STRING 2 + its UTF-8 bytes, FLOAT64 and INT64 8 each."""
    if not rows:
        return {"sqlite": 0, "bigquery": 0}
    sqlite = rows * (2.1 * key_bytes + version_bytes + 30) + 2 * 4096
    bigquery = rows * ((2 + key_bytes) + 8 + (2 + version_bytes) + 8)
    return {"sqlite": int(round(sqlite)), "bigquery": int(round(bigquery))}


# ---- the rule --------------------------------------------------------------------------------


@dataclasses.dataclass
class Recommendation:
    strategy: str  # static, dynamic or hybrid
    reason: str
    table_rows: int
    table_bytes: dict[str, int]
    hit_rate: float  # expected share of requests the table answers


def recommend(
    workload: Workload,
    settings: ServingStrategySettings,
    version_bytes: int = VERSION_BYTES,
) -> Recommendation:
    """The seed's rule with the settings' thresholds."""
    head = workload.head(settings.head_coverage)
    head_share = head / workload.distinct
    low_cardinality = (
        workload.distinct <= settings.static_max_keys
        and workload.unseen_rate <= settings.static_max_unseen_rate
    )
    if low_cardinality:
        rows = workload.distinct
        return Recommendation(
            "static",
            f"low cardinality: {workload.distinct:,} keys (static allows "
            f"{settings.static_max_keys:,}) and {workload.unseen_rate:.1%} of rows with a key "
            f"seen once (static allows {settings.static_max_unseen_rate:.1%})",
            rows,
            table_bytes(rows, workload.mean_key_bytes(rows), version_bytes),
            1.0 - workload.unseen_rate,
        )
    why_high = (
        f"{workload.distinct:,} keys (static allows {settings.static_max_keys:,})"
        if workload.distinct > settings.static_max_keys
        else f"{workload.unseen_rate:.1%} of rows with a key seen once (static allows "
        f"{settings.static_max_unseen_rate:.1%})"
    )
    peaked = head_share <= settings.peaked_max_head_share
    coverage = (
        f"the top {head:,} keys ({head_share:.1%} of them) cover "
        f"{settings.head_coverage:.0%} of rows (peaked: at most "
        f"{settings.peaked_max_head_share:.0%})"
    )
    if peaked:
        return Recommendation(
            "hybrid",
            f"high cardinality, {why_high}; peaked, {coverage}",
            head,
            table_bytes(head, workload.mean_key_bytes(head), version_bytes),
            workload.share_of_head(head),
        )
    return Recommendation(
        "dynamic",
        f"high cardinality, {why_high}; flat, {coverage}",
        0,
        table_bytes(0, 0, version_bytes),
        0.0,
    )


# ---- the command -----------------------------------------------------------------------------


def report(keys: Keys, settings: ServingStrategySettings, top_k: Sequence[int]) -> dict:
    """The workload's figures and the recommendation, as --json prints them."""
    coverages = sorted({*COVERAGES, settings.head_coverage})
    workload = describe(keys.keys, top_k, coverages)
    version_bytes = len(keys.version) if keys.version else VERSION_BYTES
    advice = recommend(workload, settings, version_bytes)
    return {
        "source": keys.source,
        "key": keys.description,
        "rows": workload.rows,
        "distinct_keys": workload.distinct,
        "distinct_ratio": workload.distinct_ratio,
        "keys_seen_once": workload.seen_once,
        "unseen_rate": workload.unseen_rate,
        "top_k_share": {str(k): v for k, v in workload.top_k_share.items()},
        "head_for_coverage": {f"{c:g}": n for c, n in workload.head_for.items()},
        "top_keys": [{"key": k, "rows": c} for k, c in workload.counts[:TOP_KEYS_SHOWN]],
        "recommendation": dataclasses.asdict(advice),
        "thresholds": settings.model_dump(),
    }


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def text(figures: dict) -> str:
    """The report for people: a short table and a one-line recommendation."""
    advice = figures["recommendation"]
    lines = [
        f"{figures['rows']:,} rows from {figures['source']}; key: {figures['key']}",
        "",
        f"  {'cardinality':<28}{figures['distinct_keys']:,} distinct keys "
        f"({figures['distinct_ratio']:.1%} of rows)",
        f"  {'keys seen once':<28}{figures['keys_seen_once']:,} "
        f"(new-key rate ~{figures['unseen_rate']:.1%})",
    ]
    for k, share in figures["top_k_share"].items():
        label = f"top {int(k):,} key{'s' if int(k) > 1 else ''}"
        lines.append(f"  {label:<28}{share:.1%} of rows")
    for coverage, n in figures["head_for_coverage"].items():
        lines.append(
            f"  {f'head covering {float(coverage):.0%}':<28}{n:,} keys "
            f"({n / figures['distinct_keys']:.1%} of keys)"
        )
    lines.append("")
    size = advice["table_bytes"]
    what = {
        "static": f"precompute every key ({advice['table_rows']:,})",
        "hybrid": f"precompute the top {advice['table_rows']:,} keys, the model answers the rest",
        "dynamic": "the model answers every request",
    }[advice["strategy"]]
    if advice["table_rows"]:
        what += (
            f"; table ~{_size(size['sqlite'])} in SQLite, ~{_size(size['bigquery'])} in "
            f"BigQuery; expected hit rate {advice['hit_rate']:.1%}"
        )
    lines += [f"recommendation: {advice['strategy']}: {what}", f"why: {advice['reason']}"]
    return "\n".join(lines)


def run_serving_strategy(
    log: Optional[str] = None,
    span: Optional[int] = None,
    key: Optional[Sequence[str]] = None,
    top_k: Optional[Sequence[int]] = None,
    as_json: bool = False,
) -> int:
    """`tfx-template serving-strategy`: the request `log` (default PIPELINE_SERVING_LOG_PATH) or
    a `span`'s rows; keys from the `key` columns (default: the keyed signature's key, else the
    model's inputs). 0: a recommendation printed; 2: one `error: ...` line."""
    pipeline = PipelineSettings.load()
    settings = ServingStrategySettings.load()
    try:
        if log and span is not None:
            raise StrategyError("pass --log or --span, not both")
        keys = (
            span_keys(pipeline, span, key)
            if span is not None
            else log_keys(log or pipeline.request_log_path, key)
        )
        figures = report(keys, settings, top_k or TOP_K)
    except StrategyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(figures, indent=2) if as_json else text(figures))
    return 0
