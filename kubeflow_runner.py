"""Compiles the pipeline into a Kubeflow Pipelines v2 spec with TFX's KubeflowV2DagRunner:
for Vertex AI Pipelines (a PipelineJob JSON), or with PIPELINE_ORCHESTRATOR=kubeflow for a
self-hosted Kubeflow Pipelines v2 backend (a PipelineSpec YAML, schema 2.1.0: the only kind
its API server and the kfp client take).

    python kubeflow_runner.py      # writes PIPELINE_KUBEFLOW_SPEC_PATH, by default
                                   # outputs/kubeflow/<pipeline name>.json (.yaml for kubeflow)
    python kubeflow_runner.py --help                                          # this text
    tfx pipeline compile --engine vertex --pipeline_path kubeflow_runner.py   # the same
    tfx pipeline create --engine vertex --pipeline_path kubeflow_runner.py    # into ~/tfx/vertex/
    tfx run create --engine vertex --pipeline_name taxi-tips --project P --region R

Vertex runs only TFX's stock resolvers and the self-hosted backend none, which changes
`create_pipeline` (see PipelineSettings.resolvers). Only orchestration lives here, and
compiling touches no cloud service. Settings come from `PIPELINE_*` variables; required here:
PIPELINE_CONTAINER_IMAGE and PIPELINE_KUBEFLOW_OUTPUT_DIR (gs://).
"""

import sys

if __name__ == "__main__" and {"-h", "--help"} & set(sys.argv[1:]):
    print(__doc__.strip())  # before the imports below take their 10 s
    sys.exit(0)

from pipeline import runtime  # noqa: F401 (first: Keras 2 before TensorFlow loads)

import os
from typing import Optional

from absl import logging
from tfx import v1 as tfx

from pipeline import tfx_cli
from pipeline.pipeline import create_pipeline
from pipeline.settings import KUBEFLOW_ORCHESTRATORS, PipelineSettings


def kubeflow_settings(environ: Optional[dict[str, str]] = None) -> PipelineSettings:
    """Settings from the environment, for Vertex unless PIPELINE_ORCHESTRATOR says kubeflow."""
    environ = os.environ if environ is None else environ
    orchestrator = environ.get("PIPELINE_ORCHESTRATOR") or "vertex"
    if orchestrator not in KUBEFLOW_ORCHESTRATORS:
        raise ValueError(
            f"PIPELINE_ORCHESTRATOR={orchestrator!r}: kubeflow_runner.py compiles for vertex "
            "(Vertex AI Pipelines, the default) or kubeflow (self-hosted Kubeflow Pipelines v2)"
        )
    return PipelineSettings.load(environ, orchestrator=orchestrator)


def self_hosted(settings: PipelineSettings) -> bool:
    return settings.orchestrator == "kubeflow"


def spec_path(settings: PipelineSettings) -> str:
    """TFX writes a PipelineJob JSON, or for a .yaml path the bare PipelineSpec."""
    extension = "yaml" if self_hosted(settings) else "json"
    return settings.cloud.kubeflow_spec_path or os.path.join(
        settings.data.output_dir, "kubeflow", f"{settings.name}.{extension}"
    )


def compile_pipeline(settings: PipelineSettings) -> str:
    """Writes the spec and returns its path. Under `tfx pipeline create`, the CLI redirects
    it into its own pipeline folder."""
    path = spec_path(settings)
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(
            default_image=settings.cloud.container_image,
            # Vertex takes both schemas; the self-hosted API server only 2.1.0.
            use_pipeline_spec_2_1=self_hosted(settings),
        ),
        output_dir=os.path.dirname(path),
        output_filename=os.path.basename(path),
    )
    # KFP provides the metadata store: no connection config.
    runner.run(create_pipeline(settings))
    return path


def main() -> None:
    logging.set_verbosity(logging.INFO)
    try:
        settings = kubeflow_settings()
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    path = compile_pipeline(settings)
    # Under the TFX CLI (run() patched), `pipeline create` writes the spec into the CLI's own
    # folder instead, and the CLI reports the outcome.
    if not tfx_cli.run_is_patched(tfx.orchestration.experimental.KubeflowV2DagRunner):
        print(f"Kubeflow Pipelines v2 spec for {settings.orchestrator}: {path}")
    if self_hosted(settings):
        # A PipelineSpec carries no pipeline root, and the cluster's default (minio://) is no
        # file system TFX can write.
        print(f"Submit it with pipeline_root={settings.pipeline_root!r}")


if __name__ == "__main__":
    main()
