"""Settings of the run report (analysis/report.py), read from PIPELINE_REPORT_* variables."""

from __future__ import annotations

from pydantic import Field

from pipeline.settings_model import SettingsModel, env_config


class ReportSettings(SettingsModel):
    """The run report (`make report`)."""

    model_config = env_config("REPORT_")

    path: str = Field(
        "",
        description="Where `make report` writes its HTML file; empty = "
        "<output_dir>/report/<pipeline name>.html.",
    )


class ServingStrategySettings(SettingsModel):
    """The serving-strategy advice (`tfx-template serving-strategy`, analysis/serving_strategy.py).

    The seed's rule: very low cardinality (whatever the peakedness) -> static serving
    (precompute every key); high cardinality, not peaked -> dynamic (the model answers);
    high cardinality and peaked -> hybrid (precompute the head, the model answers the tail)."""

    model_config = env_config("SERVING_STRATEGY_", title="Serving strategy")

    # "Very low" cardinality is what a static table holds without thought: 100,000 keys are
    # about 7 MB of SQLite and a batch job of seconds, and the hybrid server holds its table
    # in memory.
    static_max_keys: int = Field(
        100_000,
        ge=1,
        description="Static serving: at most this many distinct keys (a table that is cheap "
        "to precompute, store and hold in memory).",
    )
    # A static table answers only the keys it holds, so the workload must repeat itself: the
    # share of rows whose key occurs once estimates the chance that the next request's key was
    # never seen (Good-Turing), i.e. the static table's miss rate.
    static_max_unseen_rate: float = Field(
        0.01,
        ge=0,
        le=1,
        description="Static serving: at most this share of rows may have a key seen only "
        "once (Good-Turing estimate of the share of new keys, which a static table misses).",
    )
    # Peakedness as the Pareto rule: a workload is peaked when a small head of the keys (20%)
    # answers most requests (80%); that head is what hybrid serving precomputes.
    head_coverage: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Hybrid serving: the head precomputed is the fewest keys covering this "
        "share of rows (the expected hit rate).",
    )
    peaked_max_head_share: float = Field(
        0.2,
        gt=0,
        le=1,
        description="Peaked: the head covering PIPELINE_SERVING_STRATEGY_HEAD_COVERAGE of "
        "rows is at most this share of the distinct keys (the 80/20 rule by default).",
    )
