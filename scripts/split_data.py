"""Re-creates data/span-*/ from the Chicago taxi sample shipped inside the tfx wheel.

The 15,002 trips (2013-2016) are cut by `trip_start_timestamp` into NUM_SPANS
chronological periods with about the same number of trips each (the trips are
sparse in 2016, so calendar periods would leave a tiny newest span). Each
boundary falls on a UTC midnight, so every period is a whole range of days.
The rows inside a span keep the original file's order; the result is the same
on every run.

    make data    # tfx-template data [--spans 6] [--source path/to/data.csv] [--out data]
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
from pathlib import Path
from typing import Optional

NUM_SPANS = 6
COMPLETE_MARKER = "_COMPLETE"  # PIPELINE_SPAN_COMPLETE_MARKER's default
TIMESTAMP_COLUMN = "trip_start_timestamp"
SECONDS_PER_DAY = 86400
DATA_DIR = Path(__file__).resolve().parents[1] / "data"


def official_sample_path() -> Path:
    import tfx  # the sample ships inside the wheel

    return (
        Path(tfx.__file__).parent
        / "examples"
        / "chicago_taxi_pipeline"
        / "data"
        / "simple"
        / "data.csv"
    )


def span_boundaries(timestamps: list[int], num_spans: int) -> list[int]:
    """Midnight timestamps that cut the sorted timestamps into equal-count periods."""
    ordered = sorted(timestamps)
    cuts = []
    for k in range(1, num_spans):
        quantile = ordered[len(ordered) * k // num_spans]
        cuts.append(quantile - quantile % SECONDS_PER_DAY)
    return cuts


def span_of(timestamp: int, cuts: list[int]) -> int:
    return 1 + sum(timestamp >= cut for cut in cuts)


def _day(timestamp: int) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.timezone.utc).date().isoformat()


def split(source: Path, out_dir: Path, num_spans: int = NUM_SPANS) -> list[dict]:
    with open(source, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    ts_index = header.index(TIMESTAMP_COLUMN)
    cuts = span_boundaries([int(r[ts_index]) for r in rows], num_spans)
    by_span: dict[int, list[list[str]]] = {k: [] for k in range(1, num_spans + 1)}
    for row in rows:
        by_span[span_of(int(row[ts_index]), cuts)].append(row)

    manifest = []
    for span, span_rows in by_span.items():
        span_dir = out_dir / f"span-{span}"
        span_dir.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a reader never sees a half-written span file.
        tmp = span_dir / ".data.csv.tmp"
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(span_rows)
        os.replace(tmp, span_dir / "data.csv")
        # Last: the marker that makes the span complete (ingestible), see pipeline/spans.py.
        (span_dir / COMPLETE_MARKER).touch()
        stamps = [int(r[ts_index]) for r in span_rows]
        manifest.append(
            {
                "span": span,
                "rows": len(span_rows),
                "first_trip": _day(min(stamps)),
                "last_trip": _day(max(stamps)),
            }
        )
    (out_dir / "spans.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def recreate_data(
    source: Optional[Path] = None, out: Path = DATA_DIR, spans: int = NUM_SPANS
) -> list[dict]:
    """`tfx-template data`: the spans of `source` (default: the tfx wheel's sample) under
    `out`, one line per span printed; returns data/spans.json's entries."""
    manifest = split(Path(source) if source else official_sample_path(), Path(out), spans)
    for entry in manifest:
        print(
            f"span-{entry['span']}: {entry['rows']:5d} trips, "
            f"{entry['first_trip']} .. {entry['last_trip']}"
        )
    return manifest
