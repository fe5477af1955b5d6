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
