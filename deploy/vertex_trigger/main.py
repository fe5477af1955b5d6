"""Cloud Run function (2nd gen Cloud Function): a span's completion marker landing in Cloud
Storage submits one Vertex AI pipeline run.

Deployed with an Eventarc trigger on `google.cloud.storage.object.v1.finalized` for the data
bucket (see README, "Continuous training"). Every object written to the bucket calls it; it
acts only on `<DATA_PREFIX>span-<N>/<MARKER>`, so the run starts once the span is complete.

Settings (environment variables of the function):
  PROJECT, REGION          where the pipeline runs
  PIPELINE_SPEC            gs:// path of the compiled PipelineJob JSON (kubeflow_runner.py)
  PIPELINE_ROOT            gs:// pipeline root, as printed by kubeflow_runner.py
  DATA_PREFIX              object prefix of the spans in the bucket, e.g. "taxi/data/"
  MARKER                   the completion marker's file name (default _COMPLETE)
  SERVICE_ACCOUNT          optional: the service account the pipeline runs as
"""

import os
import re

import functions_framework
from google.api_core import exceptions
from google.cloud import aiplatform


def span_of(object_name: str, data_prefix: str, marker: str):
    """The span number if `object_name` is a span's completion marker, else None."""
    match = re.fullmatch(re.escape(data_prefix) + r"span-(\d+)/" + re.escape(marker), object_name)
    return int(match.group(1)) if match else None


@functions_framework.cloud_event
def on_object_finalized(cloud_event) -> None:
    data = cloud_event.data
    span = span_of(data["name"], os.environ["DATA_PREFIX"], os.environ.get("MARKER", "_COMPLETE"))
    if span is None:
        return  # another object: a span's data file, a model, pipeline output
    spec = os.environ["PIPELINE_SPEC"]
    pipeline = os.path.splitext(os.path.basename(spec))[0]
    aiplatform.init(project=os.environ["PROJECT"], location=os.environ["REGION"])
    job = aiplatform.PipelineJob(
        display_name=f"{pipeline}-span-{span}",
        template_path=spec,
        pipeline_root=os.environ["PIPELINE_ROOT"],
        # The object's generation makes the id unique per marker write, and the same for a
        # redelivered event (Eventarc delivers at least once): a retry cannot start a second run.
        job_id=f"{pipeline}-span-{span}-{data['generation']}",
        enable_caching=True,
    )
    try:
        job.submit(service_account=os.environ.get("SERVICE_ACCOUNT") or None)
    except exceptions.AlreadyExists:
        print(f"span {span}: run {job.job_id} was already submitted")
        return
    print(f"span {span}: submitted {job.resource_name}")
