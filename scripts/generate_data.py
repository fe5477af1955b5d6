"""Generates a larger taxi-like dataset from the shipped spans, for growth benchmarks.

    make data-large ROWS=1500000 DIR=OUT_DIR    # tfx-template generate-data OUT_DIR --rows 1500000

Rows are resampled (with replacement) from the shipped `data/span-N/data.csv` and jittered,
so the result has the shipped columns, schema and distributions but is not a plain copy:

- amounts (`fare`, `tips`, `trip_miles`, `trip_seconds`) are multiplied by one log-normal
  factor per row (sigma 5%); `tips` and `fare` share the factor, so the label (tip above 20%
  of the fare) of a resampled trip is the label of its source trip;
- coordinates move by up to about 100 m (normal, sigma 0.001 degrees), clipped to the schema's
  domains;
- everything else (time fields, areas, tracts, payment type, company) and every empty value
  is copied as is, so the schema's domains and presence hold.

Chronology is kept: the output's spans are spread over the shipped ones in order (with
`--spans 12`, output spans 1-2 come from shipped span 1, sorted by time and cut in two), so
span numbers still mean "later". The same arguments give the same files (seeded).
Each span is written to a temporary file and renamed, then marked complete (the
`_COMPLETE` marker the runners wait for, PIPELINE_SPAN_COMPLETE_MARKER); `spans.json`
lists them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import progress
from pipeline.settings import PipelineSettings
from pipeline.spans import mark_complete

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIR = ROOT / "data"
TIMESTAMP_COLUMN = "trip_start_timestamp"
# One factor per row for the amounts; tips and fare share it, so the label stays.
AMOUNT_COLUMNS = ("fare", "tips", "trip_miles")
DURATION_COLUMN = "trip_seconds"
AMOUNT_SIGMA = 0.05
# Coordinates: normal jitter in degrees (0.001 deg is about 100 m), clipped to the schema.
COORDINATE_SIGMA = 0.001
COORDINATE_DOMAINS = {
    "pickup_latitude": (41.5, 42.2),
    "dropoff_latitude": (41.5, 42.2),
    "pickup_longitude": (-88.0, -87.4),
    "dropoff_longitude": (-88.0, -87.4),
}


def source_spans(source_dir: Path) -> list[int]:
    spans = sorted(
        int(p.name.removeprefix("span-"))
        for p in source_dir.glob("span-*")
        if p.name.removeprefix("span-").isdigit() and (p / "data.csv").is_file()
    )
    if not spans:
        raise FileNotFoundError(f"no span-N/data.csv under {source_dir}")
    return spans


def read_span(path: Path) -> pd.DataFrame:
    """Every value as the string in the file ("" when empty), so untouched columns are
    written back byte for byte."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [
        c
        for c in (*AMOUNT_COLUMNS, DURATION_COLUMN, TIMESTAMP_COLUMN, *COORDINATE_DOMAINS)
        if c not in frame.columns
    ]
    if missing:
        raise ValueError(
            f"{path}: missing column(s) {', '.join(missing)}; expected the shipped taxi columns"
        )
    return frame


def _jitter_numbers(values: pd.Series, factor: np.ndarray, decimals: int) -> pd.Series:
    """`values` (strings) times `factor`, formatted with `decimals`; empty stays empty."""
    present = values != ""
    out = values.copy()
    numbers = values[present].astype(float).to_numpy() * factor[present.to_numpy()]
    out[present] = (
        [str(int(round(x))) for x in numbers]
        if decimals == 0
        else [f"{x:.{decimals}f}" for x in numbers]
    )
    return out


def jitter(rows: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    """A jittered copy of resampled rows (see the module docstring)."""
    rows = rows.reset_index(drop=True).copy()
    factor = rng.lognormal(0.0, AMOUNT_SIGMA, len(rows))
    for column in AMOUNT_COLUMNS:
        rows[column] = _jitter_numbers(rows[column], factor, 2 if column != "trip_miles" else 3)
    rows[DURATION_COLUMN] = _jitter_numbers(rows[DURATION_COLUMN], factor, 0)
    for column, (low, high) in COORDINATE_DOMAINS.items():
        noise = np.clip(
            rng.normal(0.0, COORDINATE_SIGMA, len(rows)),
            -3 * COORDINATE_SIGMA,
            3 * COORDINATE_SIGMA,
        )
        present = (rows[column] != "").to_numpy()
        moved = np.clip(
            rows.loc[present, column].astype(float).to_numpy() + noise[present], low, high
        )
        rows.loc[present, column] = [f"{x:.6f}" for x in moved]
    return rows


def plan(num_sources: int, num_spans: int) -> list[list[int]]:
    """Output spans (1-based) per shipped span, in order: output span k comes from shipped
    span 1 + (k-1) * num_sources // num_spans."""
    groups: list[list[int]] = [[] for _ in range(num_sources)]
    for span in range(1, num_spans + 1):
        groups[(span - 1) * num_sources // num_spans].append(span)
    return groups


def span_file_names(files: int) -> list[str]:
    """`data.csv`, or `part-00000-of-0000N.csv` ... when a span is cut into several files
    (CsvExampleGen reads each file in one piece, so several files spread a span's reading
    over Beam's worker processes)."""
    return (
        ["data.csv"] if files == 1 else [f"part-{i:05d}-of-{files:05d}.csv" for i in range(files)]
    )


def write_span(frame: pd.DataFrame, folder: Path, marker: str, files: int = 1) -> None:
    """The span's file(s), consecutive rows in each (temporary file, then rename), then its
    completion marker."""
    folder.mkdir(parents=True, exist_ok=True)
    bounds = np.linspace(0, len(frame), files + 1).astype(int)
    for name, start, stop in zip(span_file_names(files), bounds, bounds[1:]):
        tmp = folder / f".{name}.tmp"
        frame.iloc[start:stop].to_csv(tmp, index=False, lineterminator="\n")
        os.replace(tmp, folder / name)
    if marker:
        mark_complete(str(folder), marker)


def generate(
    out_dir: Path,
    rows: int,
    num_spans: int,
    seed: int,
    source_dir: Path = SOURCE_DIR,
    files_per_span: int = 1,
) -> list[dict]:
    """Writes `rows` rows over `num_spans` spans to out_dir/span-N/ (data.csv, or
    `files_per_span` part files); returns the manifest (also written to out_dir/spans.json)."""
    sources = source_spans(source_dir)
    if num_spans < len(sources):
        raise ValueError(f"--spans {num_spans}: at least {len(sources)} (one per shipped span)")
    if rows < num_spans:
        raise ValueError(f"--rows {rows}: at least one row per span ({num_spans})")
    if files_per_span < 1:
        raise ValueError(f"--files-per-span {files_per_span}: at least 1")
    if out_dir.resolve() == source_dir.resolve():
        raise ValueError(f"{out_dir} is the shipped data directory; choose another")
    marker = PipelineSettings.load().data.span_complete_marker
    rng = np.random.default_rng(seed)
    rows_per_span = rows // num_spans
    extra = rows - rows_per_span * num_spans  # the first spans get one more row
    manifest = []
    bar = progress.bar(total=rows, desc="generating", unit="row", unit_scale=True)
    for source, targets in zip(sources, plan(len(sources), num_spans)):
        if not targets:
            continue
        shipped = read_span(source_dir / f"span-{source}" / "data.csv")
        sizes = [rows_per_span + (1 if span <= extra else 0) for span in targets]
        picked = shipped.iloc[rng.integers(0, len(shipped), sum(sizes))]
        picked = jitter(picked, rng)
        # Sorted by time (stable), so consecutive output spans of one source follow each other.
        order = np.argsort(picked[TIMESTAMP_COLUMN].astype(np.int64).to_numpy(), kind="stable")
        picked = picked.iloc[order].reset_index(drop=True)
        start = 0
        for span, size in zip(targets, sizes):
            part = picked.iloc[start : start + size]
            start += size
            write_span(part, out_dir / f"span-{span}", marker, files_per_span)
            manifest.append({"span": span, "rows": size, "source_span": source})
            bar.update(size)
    bar.close()
    (out_dir / "spans.json").write_text(
        json.dumps(
            {
                "rows": rows,
                "spans": num_spans,
                "seed": seed,
                "source": str(source_dir),
                "files_per_span": files_per_span,
                "files": manifest,
            },
            indent=2,
        )
        + "\n"
    )
    return manifest


def generate_data(
    out_dir: Path,
    rows: int = 150_000,
    spans: int = 6,
    seed: int = 7,
    files_per_span: int = 1,
    source: Path = SOURCE_DIR,
) -> int:
    """`tfx-template generate-data`: writes the dataset and prints one line (0), or one
    `error: ...` line (2)."""
    try:
        manifest = generate(Path(out_dir), rows, spans, seed, Path(source), files_per_span)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"{out_dir}: {sum(m['rows'] for m in manifest)} rows in {len(manifest)} spans (seed {seed})"
    )
    return 0
