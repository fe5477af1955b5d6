"""custom_config of the Google Cloud Trainer and Pusher: Vertex AI training jobs and endpoints."""

from __future__ import annotations

from pipeline.settings import CloudSettings, TrainingSettings
from pipeline.tfx_api import tfx


def training_config(training: TrainingSettings, cloud: CloudSettings) -> dict:
    """custom_config of the Google Cloud Trainer: a Vertex AI custom job whose first worker
    pool is the chief (Vertex allows one replica there) and the second the other workers;
    every replica runs the pipeline image (TFX sets the command). parameter_server adds the
    third pool, the ps tasks (CPU machines: they hold variables and compute nothing), and
    sizes the worker pool with ps_workers; Vertex writes TF_CONFIG with the types chief,
    worker and ps accordingly."""
    vertex = tfx.extensions.google_cloud_ai_platform
    machine_spec = {"machine_type": cloud.vertex_machine_type}
    if cloud.vertex_accelerator_type:
        machine_spec.update(
            accelerator_type=cloud.vertex_accelerator_type,
            accelerator_count=cloud.vertex_accelerator_count,
        )
    pool = {"machine_spec": machine_spec, "container_spec": {"image_uri": cloud.container_image}}
    pools = [{**pool, "replica_count": 1}]
    if training.distribution_strategy == "parameter_server":
        pools.append({**pool, "replica_count": training.ps_workers})
        pools.append(
            {
                "machine_spec": {"machine_type": cloud.vertex_machine_type},
                "container_spec": {"image_uri": cloud.container_image},
                "replica_count": training.ps_tasks,
            }
        )
    elif cloud.vertex_training_replicas > 1:
        pools.append({**pool, "replica_count": cloud.vertex_training_replicas - 1})
    return {
        vertex.ENABLE_VERTEX_KEY: True,
        vertex.VERTEX_REGION_KEY: cloud.gcp_region,
        vertex.TRAINING_ARGS_KEY: {
            "project": cloud.gcp_project,
            "job_spec": {"worker_pool_specs": pools},
        },
    }


def serving_config(cloud: CloudSettings) -> dict:
    """custom_config of the Google Cloud Pusher: upload each blessed model to Vertex AI and
    deploy it to the endpoint (created if missing) with all traffic."""
    vertex = tfx.extensions.google_cloud_ai_platform
    return {
        vertex.ENABLE_VERTEX_KEY: True,
        vertex.VERTEX_REGION_KEY: cloud.gcp_region,
        vertex.VERTEX_CONTAINER_IMAGE_URI_KEY: cloud.vertex_serving_image,
        vertex.SERVING_ARGS_KEY: {
            "project_id": cloud.gcp_project,
            "endpoint_name": cloud.vertex_endpoint,
            "machine_type": cloud.vertex_serving_machine_type,
        },
    }
