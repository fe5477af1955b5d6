"""From a raw CSV to a ready project: `make new-dataset ARGS="--csv PATH --label EXPR
--time-column COL --span-by month"` (`tfx-template new-dataset ...`).

    tfx-template new-dataset --csv flights.csv --label 'arr_delay > 15' \\
        --time-column time_hour --span-by month --na-values NA --known-after arr_time,air_time

It checks the CSV first and refuses (one message naming the file, the column and what was
expected; exit status 2; nothing written) when the label or time column is missing, the label
expression is not valid or is constant over the data, times do not parse, or a span would be
too small. Then it:

1. cuts the rows into chronological spans by the time column (calendar months, weeks or days,
   or `rows:N` consecutive rows after sorting by time) and writes data/span-1..K/data.csv (NA
   tokens as empty cells, the header kept, dropped columns left out), each span's `_COMPLETE`
   marker last, and data/spans.json. The new spans are written to a temporary folder inside
   data/ and replace the old span-* folders only once all of them are written;
2. writes models/features.py from the data (how each column is used, the label, the slices,
   the blessing thresholds; comments say why), in the shipped file's format;
3. infers schema/schema.pbtxt from TFDV statistics over all spans, with the label's columns
   and the columns known only after the label out of the SERVING environment;
4. prints a summary and the next command, `make run`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import pandas as pd

from pipeline import label_expression

PROJECT_ROOT = Path(__file__).resolve().parents[1]
COMPLETE_MARKER = "_COMPLETE"  # PIPELINE_SPAN_COMPLETE_MARKER's default
PIPELINE_NAME_PATTERN = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")  # = pipeline/settings.py's
SPAN_BY_PERIODS = {"month": "M", "week": "W", "day": "D"}
DEFAULT_MIN_SPAN_ROWS = 200

# Inference rules (the generated features.py explains each choice with these numbers).
IDENTITY_MAX_VALUES = 32  # integer columns with at most this many distinct values...
IDENTITY_MAX_ID = 100  # ...all in 0..IDENTITY_MAX_ID-1 are ids used directly
CODE_MAX_VALUES = 32  # other integer columns this small are codes: a vocabulary
LOG_MIN_SKEW = 2.0  # non-negative numbers this right-skewed get log1p
NEAR_UNIQUE_RATIO = 0.5  # strings with more distinct values per row are ids: unused
INT_ID_RATIO = 0.95  # integers this unique are ids too
VOCAB_MAX_TOP_K = 1000  # vocabulary size cap
SMALL_VOCAB = 20  # vocabularies this small keep every value (threshold 1)
VOCAB_FREQUENCY_THRESHOLD = 5  # larger ones keep values seen at least this often
SLICE_MAX_VALUES = 30  # evaluation slices: categorical features with 2..30 values
MIN_AUC = 0.6
MAX_AUC_DROP = 0.01
NUMERIC_BUCKETS = 20
NUM_BUCKETS = 10
NUM_OOV_BUCKETS = 2

# Where the helper functions at the bottom of models/features.py begin.
HELPERS_START = "\n\ndef transformed_name("


class NewDatasetError(ValueError):
    """The CSV or the arguments cannot make a project; the message names the file, the
    column and what was expected. Raised before anything is written."""


@dataclasses.dataclass
class Options:
    csv: Path
    label: str
    time_column: str
    span_by: str = "month"
    drop: list[str] = dataclasses.field(default_factory=list)
    known_after: list[str] = dataclasses.field(default_factory=list)
    na_values: list[str] = dataclasses.field(default_factory=list)
    name: Optional[str] = None
    min_span_rows: int = DEFAULT_MIN_SPAN_ROWS
    # Calendar periods of times written with an offset (`Z`, `+01:00`) follow this zone
    # (e.g. America/New_York); times without one are taken as written. Default: UTC.
    time_zone: Optional[str] = None
    project_dir: Path = PROJECT_ROOT


@dataclasses.dataclass
class ColumnProfile:
    """What the data says about one column (non-missing values only)."""

    name: str
    kind: str  # "int", "float", "string" or "empty"
    rows: int
    present: int
    distinct: int
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    skew: Optional[float] = None
    counts: Optional[pd.Series] = None  # value -> count, most frequent first (strings, codes)


@dataclasses.dataclass
class FeaturePlan:
    """How every column is used, with a short reason per column."""

    numeric: dict[str, str]
    identity: dict[str, int]
    vocab: dict[str, tuple[int, int]]
    strings: list[str]
    unused: list[str]
    reasons: dict[str, str]
    eval_slices: list[str]


@dataclasses.dataclass
class Span:
    number: int
    period: str
    rows: pd.DataFrame
    first: str
    last: str


@dataclasses.dataclass
class Thresholds:
    label_rate: float
    majority_rate: float
    min_binary_accuracy: float
    min_auc: float = MIN_AUC
    max_auc_drop: float = MAX_AUC_DROP


# ---------------------------------------------------------------------------------- reading


def split_list(values: Iterable[str]) -> list[str]:
    """`--drop a --drop b,c` -> [a, b, c]."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return out


def read_csv(path: Path, na_values: Sequence[str] = ()) -> pd.DataFrame:
    """Every cell as text, exactly as written; empty cells and the NA tokens -> None."""
    path = Path(path)
    if not path.is_file():
        raise NewDatasetError(f"{path}: no such file (expected a CSV with a header row)")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as error:
        raise NewDatasetError(f"{path}: not a readable CSV with a header row ({error})") from None
    missing = set(na_values) | {""}
    return frame.apply(lambda column: column.where(~column.isin(missing), None))


def _kind(values: pd.Series) -> str:
    """The type CsvExampleGen infers for these (non-missing) texts: int, float or string."""
    if values.empty:
        return "empty"
    text = values.str.strip()
    if text.str.fullmatch(r"[-+]?\d+").all():
        return "int"
    if text.str.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?").all():
        return "float"
    return "string"


def profile(frame: pd.DataFrame, column: str) -> ColumnProfile:
    values = frame[column].dropna()
    kind = _kind(values)
    result = ColumnProfile(column, kind, len(frame), len(values), int(values.nunique()))
    if kind in ("int", "float"):
        numbers = pd.to_numeric(values)
        result.minimum, result.maximum = float(numbers.min()), float(numbers.max())
        skew = numbers.astype(float).skew() if len(numbers) > 2 else 0.0
        result.skew = 0.0 if skew is None or not math.isfinite(skew) else float(skew)
        if kind == "int" and result.distinct <= CODE_MAX_VALUES:
            result.counts = numbers.value_counts()
    elif kind == "string":
        result.counts = values.value_counts()
    return result


# ----------------------------------------------------------------------------------- checks


def check_label(frame: pd.DataFrame, options: Options) -> np.ndarray:
    """The label (0/1 per row) as Transform will compute it; refusals for a bad expression,
    missing or dropped columns and a constant label."""
    source = options.csv
    try:
        columns = label_expression.columns(options.label)
    except label_expression.LabelExpressionError as error:
        raise NewDatasetError(f"{source}: --label: {error}") from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise NewDatasetError(
            f"{source}: --label {options.label!r} reads column(s) {', '.join(missing)}, which "
            f"the CSV does not have (expected one of its header's columns: "
            f"{', '.join(frame.columns)})"
        )
    dropped = [c for c in columns if c in options.drop]
    if dropped:
        raise NewDatasetError(
            f"{source}: --label reads column(s) {', '.join(dropped)}, "
            "which --drop removes (expected the label's columns kept)"
        )
    values = {c: frame[c].to_numpy(dtype=object) for c in columns}
    try:
        labels = label_expression.evaluate_columns(options.label, values)
    except label_expression.LabelExpressionError as error:
        raise NewDatasetError(f"{source}: --label: {error}") from None
    rate = float(labels.mean()) if len(labels) else 0.0
    if rate in (0.0, 1.0):
        raise NewDatasetError(
            f"{source}: --label {options.label!r} is {int(rate)} on all {len(labels)} rows "
            f"(columns {', '.join(columns)}; missing numbers count as 0): expected both classes "
            "to occur"
        )
    return labels


def parse_times(frame: pd.DataFrame, options: Options) -> pd.Series:
    """Naive datetimes of the time column (numbers are Unix seconds, or milliseconds when too
    large for seconds); a refusal naming bad rows."""
    column, source = options.time_column, options.csv
    if column not in frame.columns:
        raise NewDatasetError(
            f"{source}: --time-column {column!r} is not a column (expected one "
            f"of: {', '.join(frame.columns)})"
        )
    if column in options.drop:
        raise NewDatasetError(
            f"{source}: --time-column {column!r} is also in --drop (expected the time column kept)"
        )
    raw = frame[column]
    kind = _kind(raw.dropna())
    if kind in ("int", "float"):
        numbers = pd.to_numeric(raw)
        unit = "ms" if numbers.abs().max() > 1e11 else "s"
        times = pd.to_datetime(numbers, unit=unit, errors="coerce")
    else:
        text = raw.fillna("").str.strip()
        parsed = pd.to_datetime(text.where(text != "", None), errors="coerce", utc=True)
        aware = text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
        if options.time_zone:
            try:
                local = parsed.dt.tz_convert(options.time_zone)
            except Exception as error:  # noqa: BLE001 (pytz's UnknownTimeZoneError and friends)
                raise NewDatasetError(
                    f"--time-zone {options.time_zone!r}: not a time zone ({error})"
                ) from None
            converted = local.dt.tz_localize(None)
            times = converted.where(aware, parsed.dt.tz_localize(None))
        else:
            times = parsed.dt.tz_localize(None)
    bad = times.isna()
    if bad.any():
        examples = ", ".join(
            f"line {i + 2}: {raw.iloc[i]!r}" if raw.iloc[i] is not None else f"line {i + 2}: empty"
            for i in np.flatnonzero(bad)[:5]
        )
        raise NewDatasetError(
            f"{source}: --time-column {column!r}: {int(bad.sum())} of {len(raw)} rows have no "
            f"parsable time (expected dates/times such as 2013-01-01 05:00 or Unix seconds), "
            f"e.g. {examples}"
        )
    return times


def pipeline_name_from(csv: Path) -> str:
    """A valid pipeline name (Kubeflow's pattern) from a file name: flights_2013.csv ->
    flights-2013."""
    stem = Path(csv).name.split(".")[0].lower()
    name = re.sub(r"[^a-z0-9]+", "-", stem)
    name = re.sub(r"^[^a-z]+", "", name)[:63].strip("-")
    return name or "dataset"


def check_name(name: str) -> str:
    if not PIPELINE_NAME_PATTERN.fullmatch(name):
        raise NewDatasetError(
            f"--name {name!r}: expected a pipeline name of lowercase letters, digits and '-', "
            "starting with a letter, not ending with '-', at most 63 characters"
        )
    return name


# ------------------------------------------------------------------------------------ spans


def split_spans(
    frame: pd.DataFrame,
    times: pd.Series,
    span_by: str,
    min_span_rows: int,
    source: Path | str = "the CSV",
) -> list[Span]:
    """Chronological spans: calendar periods with rows (month, week Monday-Sunday, day) or
    `rows:N` consecutive rows after a stable sort by time. Refuses a span below
    min_span_rows."""
    order = np.argsort(times.to_numpy(), kind="stable")
    frame = frame.iloc[order].reset_index(drop=True)
    times = times.iloc[order].reset_index(drop=True)
    if span_by in SPAN_BY_PERIODS:
        periods = times.dt.to_period(SPAN_BY_PERIODS[span_by])
        # Sorted by time, so the codes number the periods chronologically.
        codes, uniques = pd.factorize(periods)
        starts = np.searchsorted(codes, np.arange(len(uniques) + 1))
        groups = [np.arange(starts[k], starts[k + 1]) for k in range(len(uniques))]
        labels = [str(period) for period in uniques]
    elif (match := re.fullmatch(r"rows:(\d+)", span_by)) and int(match.group(1)) > 0:
        size = int(match.group(1))
        groups = [
            np.arange(start, min(start + size, len(frame))) for start in range(0, len(frame), size)
        ]
        labels = [f"rows {g[0] + 1}-{g[-1] + 1}" for g in groups]
    else:
        raise NewDatasetError(f"--span-by {span_by!r}: expected month, week, day or rows:N")
    spans = []
    for number, (group, label) in enumerate(zip(groups, labels), start=1):
        if len(group) < min_span_rows:
            raise NewDatasetError(
                f"{source}: span {number} ({label}, by --span-by {span_by} of "
                f"{times.name!r}) has {len(group)} rows, fewer than --min-span-rows "
                f"{min_span_rows} (expected every span to have at least that many; choose "
                "a longer period, fewer rows:N, --time-zone for times written in UTC, or a "
                "lower --min-span-rows)"
            )
        spans.append(
            Span(
                number,
                label,
                frame.iloc[group],
                _stamp(times.iloc[group[0]]),
                _stamp(times.iloc[group[-1]]),
            )
        )
    return spans


def _stamp(value: pd.Timestamp) -> str:
    return (
        value.isoformat(sep=" ")
        if (value.hour or value.minute or value.second)
        else value.date().isoformat()
    )


def writable(frame: pd.DataFrame, profiles: dict[str, ColumnProfile]) -> pd.DataFrame:
    """Cells as they will be written: missing -> empty; float columns' whole numbers get
    '.0' so every span's file parses the column as FLOAT (CsvExampleGen infers types per
    file)."""
    out = frame.copy()
    for column in out.columns:
        if profiles[column].kind == "float":
            text = out[column]
            whole = text.notna() & ~text.fillna("").str.contains(r"[.eE]", regex=True)
            out[column] = text.where(~whole, text + ".0")
    return out.fillna("")


def write_spans(spans: list[Span], data_dir: Path) -> Path:
    """Every span into a new temporary folder inside data_dir (span-N/data.csv, then
    `_COMPLETE`) plus spans.json; returns the folder."""
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".new-spans-", dir=data_dir))
    manifest = []
    for span in spans:
        folder = staging / f"span-{span.number}"
        folder.mkdir()
        span.rows.to_csv(folder / "data.csv", index=False, lineterminator="\n")
        (folder / COMPLETE_MARKER).write_text("")  # last: the span is complete
        manifest.append(
            {
                "span": span.number,
                "rows": len(span.rows),
                "period": span.period,
                "first_time": span.first,
                "last_time": span.last,
            }
        )
    (staging / "spans.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return staging


def swap_in(staging: Path, data_dir: Path) -> None:
    """Moves the old span-* folders and spans.json aside, the new ones in, then deletes the
    old ones. Each span folder arrives whole, with its marker."""
    retired = Path(tempfile.mkdtemp(prefix=".old-spans-", dir=data_dir))
    for old in sorted(data_dir.glob("span-*")) + [data_dir / "spans.json"]:
        if old.exists():
            os.replace(old, retired / old.name)
    for new in sorted(staging.iterdir(), key=lambda p: (p.name == "spans.json", p.name)):
        os.replace(new, data_dir / new.name)
    shutil.rmtree(retired)
    staging.rmdir()


# ---------------------------------------------------------------------------- the features


def plan_features(
    profiles: dict[str, ColumnProfile],
    label_columns: list[str],
    known_after: list[str],
    time_column: str,
) -> FeaturePlan:
    """Each column's use, by the rules at the top of this module."""
    numeric: dict[str, str] = {}
    identity: dict[str, int] = {}
    vocab: dict[str, tuple[int, int]] = {}
    strings: list[str] = []
    unused: list[str] = []
    reasons: dict[str, str] = {}
    for name, p in profiles.items():
        if name in label_columns or name in known_after:
            continue  # listed in LABEL / KNOWN_AFTER_LABEL
        if name == time_column:
            unused.append(name)
            reasons[name] = "the time column: orders rows into spans"
            continue
        if p.kind == "empty":
            unused.append(name)
            reasons[name] = "always empty"
            continue
        if p.distinct == 1:
            unused.append(name)
            reasons[name] = "a single value"
            continue
        if p.kind == "int":
            small = p.distinct <= IDENTITY_MAX_VALUES
            if small and p.minimum >= 0 and p.maximum < IDENTITY_MAX_ID:
                identity[name] = int(p.maximum) + 1
                reasons[name] = f"{p.distinct} values in {int(p.minimum)}..{int(p.maximum)}"
                continue
            if small:
                vocab[name] = _vocab(p)
                reasons[name] = f"{p.distinct} integer codes in {int(p.minimum)}..{int(p.maximum)}"
                continue
            if p.distinct >= INT_ID_RATIO * p.present:
                unused.append(name)
                reasons[name] = f"an id: {p.distinct} distinct integers in {p.present} rows"
                continue
        if p.kind in ("int", "float"):
            heavy = p.minimum >= 0 and p.skew >= LOG_MIN_SKEW
            numeric[name] = "log" if heavy else "linear"
            reasons[name] = f"{p.minimum:g}..{p.maximum:g}, skew {p.skew:.1f}" + (
                ", missing in " + _share(p) if p.present < p.rows else ""
            )
            continue
        if p.distinct > NEAR_UNIQUE_RATIO * p.present:
            unused.append(name)
            reasons[name] = f"an id: {p.distinct} distinct values in {p.present} rows"
            continue
        vocab[name] = _vocab(p)
        strings.append(name)
        reasons[name] = f"{p.distinct} distinct values" + (
            ", missing in " + _share(p) if p.present < p.rows else ""
        )
    slices = choose_slices(profiles, vocab, identity)
    return FeaturePlan(numeric, identity, vocab, strings, unused, reasons, slices)


def _share(p: ColumnProfile) -> str:
    return f"{100 * (p.rows - p.present) / p.rows:.2g}% of rows"


def _vocab(p: ColumnProfile) -> tuple[int, int]:
    """(top_k, frequency_threshold): small vocabularies keep every value; larger ones keep
    values seen at least VOCAB_FREQUENCY_THRESHOLD times, at most VOCAB_MAX_TOP_K."""
    threshold = 1 if p.distinct <= SMALL_VOCAB else VOCAB_FREQUENCY_THRESHOLD
    frequent = int((p.counts >= threshold).sum()) if p.counts is not None else p.distinct
    return max(1, min(frequent, VOCAB_MAX_TOP_K)), threshold


def choose_slices(
    profiles: dict[str, ColumnProfile], vocab: dict[str, tuple[int, int]], identity: dict[str, int]
) -> list[str]:
    """At most two categorical features with 2..SLICE_MAX_VALUES values: string
    vocabularies first, then ids, fewest values first."""

    def candidates(names):
        return sorted(
            (profiles[n].distinct, n)
            for n in names
            if 2 <= profiles[n].distinct <= SLICE_MAX_VALUES
        )

    ordered = candidates(vocab) + candidates(identity)
    return [name for _, name in ordered[:2]]


def label_key_for(expression: str, columns: Iterable[str]) -> str:
    """The transformed label's name: `<first column>_label` (arr_delay > 15 ->
    arr_delay_label), never a raw column's name."""
    first = label_expression.columns(expression)[0]
    key = f"{first}_label"
    taken = set(columns)
    while key in taken:
        key += "_xf"
    return key


def choose_thresholds(labels: np.ndarray, newest_labels: np.ndarray) -> Thresholds:
    """MIN_BINARY_ACCURACY: the majority-class rate on the newest span (the Evaluator's
    hold-out is a quarter of it), rounded down to two decimals, so the model must match the
    constant guess; MIN_AUC 0.6 so a constant or random model is never blessed."""
    rate = float(labels.mean())
    newest_rate = float(newest_labels.mean())
    majority = max(newest_rate, 1 - newest_rate)
    return Thresholds(rate, majority, math.floor(majority * 100) / 100)


def _py(value) -> str:
    return json.dumps(value)


def features_source(
    options: Options,
    name: str,
    plan: FeaturePlan,
    label_key: str,
    thresholds: Thresholds,
    profiles: dict[str, ColumnProfile],
    spans: list[Span],
) -> str:
    """models/features.py for this dataset, in the shipped file's format."""
    rows = sum(len(s.rows) for s in spans)

    def dict_block(variable: str, items: dict, comment_header: str = "") -> list[str]:
        if not items:
            annotation = {
                "NUMERIC_FEATURES": "dict[str, str]",
                "IDENTITY_FEATURES": "dict[str, int]",
                "VOCAB_FEATURES": "dict[str, tuple[int, int]]",
            }
            return [f"{variable}: {annotation[variable]} = {{}}"]
        lines = [f"{variable} = {{"] + ([f"    {comment_header}"] if comment_header else [])
        for key, value in items.items():
            shown = f"({value[0]}, {value[1]})" if isinstance(value, tuple) else _py(value)
            lines.append(f"    {_py(key)}: {shown},  # {plan.reasons[key]}")
        return lines + ["}"]

    def list_line(variable: str, items: list[str]) -> str:
        return (
            f"{variable}: list[str] = {_py(items)}" if not items else f"{variable} = {_py(items)}"
        )

    label_cols = label_expression.columns(options.label)
    unused_notes = "; ".join(f"{n}: {plan.reasons[n]}" for n in plan.unused) or "none"
    known = options.known_after
    out = [
        '"""The dataset: the one place that names raw columns, how each is treated, the label, the',
        "evaluation slices and the blessing thresholds. `make new-dataset` writes this file for a new",
        "CSV; edit it (with `schema/schema.pbtxt`) to curate. Nothing outside models/, schema/ and data/",
        "names a column.",
        "",
        f"Written by `make new-dataset` from {Path(options.csv).name} ({rows} rows, {len(spans)} spans by "
        f"{options.span_by}).",
        '"""',
        "from __future__ import annotations",
        "",
        "from pipeline import label_expression",
        "",
        "# The pipeline's name: MLMD store, pipeline root and pushed models are kept under it.",
        f"PIPELINE_NAME = {_py(name)}",
        "",
        '# Numbers: z-scored, plus quantile buckets (their effect need not be monotonic). "log": log1p',
        f'# first, for non-negative amounts with a long right tail (skew >= {LOG_MIN_SKEW:g}); "linear": as',
        "# they are (negative values, or no long tail). Missing values count as 0. Comments: range, skew.",
        *dict_block("NUMERIC_FEATURES", plan.numeric),
        f"NUMERIC_BUCKETS = {NUMERIC_BUCKETS}",
        "",
        "# Coordinates and other numbers whose neighbourhood matters more than their size: quantile",
        "# buckets only (missing values get a bucket of their own). Not inferred: move a numeric",
        "# feature here by hand.",
        "BUCKET_FEATURES: list[str] = []",
        f"NUM_BUCKETS = {NUM_BUCKETS}",
        "",
        f"# Small known integer ranges (at most {IDENTITY_MAX_VALUES} distinct values, all in "
        f"0..{IDENTITY_MAX_ID - 1}): used as ids",
        "# directly; the value count is max id + 1 (larger or negative ids share id 0).",
        *dict_block("IDENTITY_FEATURES", plan.identity),
        "",
        "# Open-ended categories (strings or integer codes): a vocabulary learned by Transform, plus",
        "# out-of-vocabulary buckets. top_k: the values seen at least frequency_threshold times (1 for",
        f"# at most {SMALL_VOCAB} distinct values, else {VOCAB_FREQUENCY_THRESHOLD}), at most "
        f"{VOCAB_MAX_TOP_K}.",
        *dict_block("VOCAB_FEATURES", plan.vocab, "# feature: (top_k, frequency_threshold)"),
        f"NUM_OOV_BUCKETS = {NUM_OOV_BUCKETS}",
        "",
        "# The model-parallel variant (PIPELINE_CROSSED_EMBEDDING_BUCKETS > 0) crosses two",
        "# categorical features into one hashed id with a large embedding table; empty: the two",
        "# categorical inputs with the most ids.",
        "CROSSED_FEATURES: list[str] = []",
        "",
        "# Columns that are strings; all other columns are numbers.",
        list_line("STRING_FEATURES", plan.strings),
        "",
        *textwrap.wrap(
            "In the data but not model inputs: " + unused_notes + ".",
            94,
            initial_indent="# ",
            subsequent_indent="# ",
        ),
        list_line("UNUSED_FEATURES", plan.unused),
        "",
        "# The label: an expression over raw columns (pipeline/label_expression.py: numbers, strings,",
        "# + - * /, comparisons, and/or/not; missing numbers count as 0). Columns it reads that are not",
        f"# features above (here {', '.join('`' + c + '`' for c in label_cols)}) exist only at "
        "training time: the schema keeps",
        "# them out of the SERVING environment and no serving signature reads them. Over all spans it",
        f"# is 1 on {100 * thresholds.label_rate:.1f}% of rows.",
        f"LABEL = {_py(options.label)}",
        f"LABEL_KEY = {_py(label_key)}",
        "",
        "# Columns known only after the label is (an arrival time for a delay label): never model",
        "# inputs; the leakage check fails a run whose features include one."
        + (" Given with --known-after." if known else " None were given (--known-after)."),
        (f"KNOWN_AFTER_LABEL = {_py(known)}" if known else "KNOWN_AFTER_LABEL: list[str] = []"),
        "",
        "# The event time of a row (orders rows into spans; the streaming job's event-time field).",
        f"TIME_COLUMN = {_py(options.time_column)}",
        "",
        "# Evaluation: each listed feature is a slice of its own in TFMA, the report and notebooks",
        f"# (categorical features with 2..{SLICE_MAX_VALUES} values, strings first, fewest values first).",
        list_line("EVAL_SLICES", plan.eval_slices),
        "# Blessing: the candidate must clear these on the newest span's hold-out (overall slice)...",
        f"# MIN_AUC: {MIN_AUC} rejects a constant or random model (0.5) and asks for some ranking skill.",
        f"MIN_AUC = {thresholds.min_auc}",
        f"# The majority class is {thresholds.majority_rate:.3f} of the newest span: the model must match",
        "# always guessing it (rounded down to 2 decimals: the hold-out is a sample of the span).",
        f"MIN_BINARY_ACCURACY = {thresholds.min_binary_accuracy}",
        "# ...and may lose at most this much AUC against the latest blessed model.",
        f"MAX_AUC_DROP = {thresholds.max_auc_drop}",
    ]
    return "\n".join(out) + "\n" + features_helpers(Path(options.project_dir))


def features_helpers(project_dir: Path) -> str:
    """The helper functions at the bottom of the project's models/features.py, carried into
    the new file as they are: the machinery calls them, and a user's edits survive."""
    path = project_dir / "models" / "features.py"
    text = path.read_text()
    start = text.find(HELPERS_START)
    if start < 0:
        raise NewDatasetError(
            f"{path}: no 'def transformed_name(' found; the helper functions "
            "at the bottom of the shipped file are carried into the new one"
        )
    return text[start:]


# ------------------------------------------------------------------------------ the schema


def infer_schema(data_dir: Path, training_only: list[str]):
    """TFDV statistics over every span's CSV, tfdv.infer_schema (no shapes: every feature stays
    VarLen so an empty cell parses), TRAINING/SERVING environments."""
    import tensorflow_data_validation as tfdv
    from apache_beam.options.pipeline_options import PipelineOptions

    from scripts.export_schema import with_environments

    statistics = tfdv.generate_statistics_from_csv(
        data_location=str(data_dir / "span-*" / "data.csv"),
        pipeline_options=PipelineOptions(["--direct_num_workers=1"]),
    )
    schema = tfdv.infer_schema(statistics, infer_feature_shape=False)
    for feature in schema.feature:
        # Integer ids: no closed domain, so a new id in a future span is not an anomaly (the
        # model maps ids out of range to 0).
        if feature.HasField("int_domain"):
            feature.ClearField("int_domain")
        # TFDV's CSV reader counts an empty cell as a missing feature; CsvExampleGen writes it
        # as a feature with an empty value list (presence stays 1.0), so a column that can be
        # empty needs value_count.min 0 (the shipped schema's rule).
        if feature.presence.min_fraction < 1.0:
            feature.value_count.min = 0
            feature.value_count.max = 1
    return with_environments(schema, training_only)


def formatted(source: str) -> str:
    """The generated features.py in the project's code style (`ruff format`, as `make lint`
    checks it); unchanged where ruff is not installed (it is a development dependency)."""
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not os.path.exists(ruff):
        return source
    result = subprocess.run(
        [ruff, "format", "--stdin-filename", "models/features.py", "-"],
        input=source,
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
    )
    return result.stdout if result.returncode == 0 else source


def write_text_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------- the run


@dataclasses.dataclass
class Result:
    name: str
    spans: list[Span]
    plan: FeaturePlan
    thresholds: Thresholds
    label_key: str
    features_path: Path
    schema_path: Path
    data_dir: Path


def prepare(options: Options):
    """Everything that can refuse, before anything is written."""
    options.drop = split_list(options.drop)
    options.known_after = split_list(options.known_after)
    options.na_values = split_list(options.na_values)
    frame = read_csv(options.csv, options.na_values)
    unknown = [c for c in options.drop + options.known_after if c not in frame.columns]
    if unknown:
        raise NewDatasetError(
            f"{options.csv}: --drop/--known-after name column(s) "
            f"{', '.join(unknown)}, which the CSV does not have (columns: "
            f"{', '.join(frame.columns)})"
        )
    name = check_name(options.name) if options.name else pipeline_name_from(options.csv)
    times = parse_times(frame, options)
    labels = check_label(frame, options)
    label_cols = label_expression.columns(options.label)
    after = [c for c in options.known_after if c in label_cols or c == options.time_column]
    if after:
        raise NewDatasetError(
            f"{options.csv}: --known-after {', '.join(after)}: the label's "
            "and the time column are never features already (expected other "
            "columns)"
        )
    kept = frame.drop(columns=options.drop)
    profiles = {c: profile(kept, c) for c in kept.columns}
    written = writable(kept, profiles).assign(__label__=labels)
    spans = split_spans(
        written,
        times.rename(options.time_column),
        options.span_by,
        options.min_span_rows,
        options.csv,
    )
    newest = spans[-1].rows.pop("__label__").to_numpy()
    for span in spans[:-1]:
        span.rows = span.rows.drop(columns="__label__")
    plan = plan_features(profiles, label_cols, options.known_after, options.time_column)
    thresholds = choose_thresholds(labels, newest)
    return name, kept, profiles, spans, plan, thresholds


def create(options: Options) -> Result:
    name, kept, profiles, spans, plan, thresholds = prepare(options)
    project = Path(options.project_dir)
    data_dir = project / "data"
    label_key = label_key_for(options.label, kept.columns)
    source = formatted(features_source(options, name, plan, label_key, thresholds, profiles, spans))
    compile(source, "features.py", "exec")  # a generator bug fails here, before writing
    label_cols = label_expression.columns(options.label)  # never features (plan_features)
    staging = write_spans(spans, data_dir)
    try:
        schema = infer_schema(staging, label_cols + options.known_after)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    swap_in(staging, data_dir)
    import tensorflow_data_validation as tfdv

    schema_path = project / "schema" / "schema.pbtxt"
    schema_path.parent.mkdir(parents=True, exist_ok=True)
    tfdv.write_schema_text(schema, str(schema_path) + ".tmp")
    os.replace(str(schema_path) + ".tmp", schema_path)
    features_path = project / "models" / "features.py"
    write_text_atomically(features_path, source)
    return Result(name, spans, plan, thresholds, label_key, features_path, schema_path, data_dir)


def summary(result: Result) -> str:
    rows = [len(s.rows) for s in result.spans]
    plan, t = result.plan, result.thresholds
    lines = [
        f"Pipeline {result.name!r}: {len(result.spans)} spans, {sum(rows)} rows "
        f"({min(rows)}..{max(rows)} per span) in {result.data_dir}/span-*/",
        f"  span-1 {result.spans[0].first} .. span-{len(result.spans)} {result.spans[-1].last}",
        f"Features: {len(plan.numeric)} numeric {sorted(plan.numeric)}, "
        f"{len(plan.identity)} identity {sorted(plan.identity)}, "
        f"{len(plan.vocab)} vocabulary {sorted(plan.vocab)}; unused {plan.unused}",
        f"Label {result.label_key}: 1 on {100 * t.label_rate:.1f}% of rows; newest span's "
        f"majority class {t.majority_rate:.3f}",
        f"Blessing: AUC >= {t.min_auc}, accuracy >= {t.min_binary_accuracy}, AUC drop <= "
        f"{t.max_auc_drop}; eval slices {plan.eval_slices}",
        f"Wrote {result.features_path} and {result.schema_path}; next: make run",
    ]
    return "\n".join(lines)


def _quiet_libraries() -> None:
    """Importing TFDV and running Beam print pages of warnings about Python versions and
    deprecations that say nothing about the user's data: the summary should stand alone."""
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    for name in ("apache_beam", "tensorflow", "absl"):
        logging.getLogger(name).setLevel(logging.ERROR)


def new_dataset(options: Options) -> int:
    """`tfx-template new-dataset`: the project from the CSV and its summary (0), or one
    `error: ...` line naming the problem and nothing written (2)."""
    _quiet_libraries()
    try:
        result = create(options)
    except NewDatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(summary(result))
    return 0
