# The pipeline image: every step on Vertex AI / Kubeflow Pipelines runs it, and so do Dataflow,
# Flink and Spark workers (--sdk_container_image) and Vertex training replicas.
#   docker build -t REGION-docker.pkg.dev/PROJECT/REPO/taxi-tips:TAG .
# Pipeline steps run the command the spec names
# (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor), Vertex training
# the one TFX sets (python -m tfx.scripts.run_executor); the entrypoint is Beam's worker boot.
FROM python:3.10-slim

# Beam's worker boot program, of the same version as apache-beam in requirements.lock.
COPY --from=apache/beam_python3.10_sdk:2.61.0 /opt/apache/beam /opt/apache/beam
COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

# Keras 2 (tf_keras): see "Why Keras 2" in the README.
ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONUNBUFFERED=1

# IMAGE_PROJECT_ROOT in pipeline/settings.py: paths of the checkout are read from here.
WORKDIR /pipeline

# The locked stack first, so code changes reuse this layer. g++ only builds pyfarmhash (no
# wheel) and is removed in the same layer. `install`, not `sync`: sync would remove pip, which
# Beam's boot uses on workers.
COPY requirements.lock .
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && uv pip install --system --no-cache --compile-bytecode -r requirements.lock \
 && apt-get purge -y --auto-remove g++ \
 && rm -rf /var/lib/apt/lists/*

# The project (pipeline/, models/, schema/, the sample data/), editable so that
# PROJECT_ROOT (pipeline/settings.py) is /pipeline, as on a checkout.
COPY . .
RUN uv pip install --system --no-cache --no-deps --no-build-isolation -e .

ENTRYPOINT ["/opt/apache/beam/boot"]
