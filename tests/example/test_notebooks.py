"""The notebooks run top to bottom, headless, against a finished run's outputs, and show the
expected tables and plots; the committed notebooks carry no outputs."""

import base64

import nbformat
import pytest
from nbclient import NotebookClient

from tests.pipeline_run import ROOT

# Runs a pipeline, a server, a Beam job or a subprocess: `make test-fast` leaves it out.
pytestmark = pytest.mark.integration

NOTEBOOKS = ["data_validation.ipynb", "model_analysis.ipynb"]


def _execute(name: str, finished_run, monkeypatch) -> nbformat.NotebookNode:
    # The kernel inherits this environment: the run's settings point it at the run's outputs.
    for key in ("PIPELINE_OUTPUT_DIR", "PIPELINE_DATA_DIR"):
        monkeypatch.setenv(key, finished_run.env[key])
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()
    return notebook


def _outputs(notebook) -> list:
    return [
        output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
    ]


def _text(notebook) -> str:
    """Printed text and plain-text results."""
    return "\n".join(
        o.text if o.output_type == "stream" else o.get("data", {}).get("text/plain", "")
        for o in _outputs(notebook)
    )


def _data(notebook, mime: str) -> list[str]:
    return [o.data[mime] for o in _outputs(notebook) if mime in o.get("data", {})]


def _pngs(notebook) -> list[bytes]:
    return [base64.b64decode(data) for data in _data(notebook, "image/png")]


def _run_id(finished_run) -> str:
    from analysis import artifacts

    return artifacts.latest_run(finished_run.settings).run_id


def test_data_validation_notebook(finished_run, monkeypatch):
    notebook = _execute("data_validation.ipynb", finished_run, monkeypatch)
    text = _text(notebook)
    tables = "\n".join(_data(notebook, "text/html"))
    assert f"Run {_run_id(finished_run)}" in text and "span 2" in text
    assert "No anomalies: every split matches the schema." in text
    assert "span 2 against span 1" in text and "No leakage found." in text
    assert "No serving logs yet" in text
    # The schema table (with its environments), train vs eval statistics, the drift table.
    assert "SERVING, TRAINING" in tables and ">TRAINING<" in tables  # tips: TRAINING only
    assert ">train<" in tables and ">eval<" in tables and "missing" in tables
    assert "JENSEN_SHANNON_DIVERGENCE" in tables and "L_INFTY" in tables
    # Distributions, missing rates, top values, and the two spans' distributions.
    pngs = _pngs(notebook)
    assert len(pngs) == 4 and all(png.startswith(b"\x89PNG") for png in pngs)


def test_model_analysis_notebook(finished_run, monkeypatch):
    notebook = _execute("model_analysis.ipynb", finished_run, monkeypatch)
    text = _text(notebook)
    tables = "\n".join(_data(notebook, "text/html"))
    assert "BLESSED: the candidate cleared every threshold." in text
    assert "No baseline: no model had been blessed before." in text
    # Thresholds from the run's settings (tests lower them to 0.75), overall and sliced metrics.
    assert "&gt;= 0.75" in tables and "binary_accuracy" in tables
    assert ">Overall<" in tables and ">Cash<" in tables and "trip_start_hour" in tables
    assert f"trained in run:  {_run_id(finished_run)}" in text
    assert "spans:           1, 2" in text and "pushed:          " in text
    # AUC per payment type and per hour, ROC/PR, calibration.
    pngs = _pngs(notebook)
    assert len(pngs) == 4 and all(png.startswith(b"\x89PNG") for png in pngs)


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_committed_notebooks_have_no_outputs(name):
    notebook = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"notebooks/{name} cell {index} has outputs: clear them before committing "
                "(jupyter nbconvert --clear-output --inplace notebooks/*.ipynb)"
            )
