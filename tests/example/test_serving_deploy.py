"""The Kubernetes manifests for TF Serving: they parse, and the probes, ports and version
policy are the ones the README describes."""

from pathlib import Path

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"


def test_manifests_wire_tf_serving_to_the_model_status_endpoint():
    docs = {
        doc["kind"]: doc
        for name in ("deployment.yaml", "service.yaml", "hpa.yaml", "serviceaccount.yaml")
        for doc in yaml.safe_load_all((DEPLOY / name).read_text())
    }
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    assert set(kustomization["resources"]) == {
        "deployment.yaml",
        "service.yaml",
        "hpa.yaml",
        "serviceaccount.yaml",
    }
    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("tensorflow/serving:")
    assert "--model_config_file=/config/models.config" in container["args"]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/v1/models/taxi-tips", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {
        "grpc": 8500,
        "http": 8501,
    }
    labels = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert docs["Service"]["spec"]["selector"] == labels
    assert (
        docs["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"]
        == docs["Deployment"]["metadata"]["name"]
    )
    config = (DEPLOY / "models.config").read_text()
    assert "model_version_policy { latest { num_versions: 2 } }" in config
    assert 'name: "taxi-tips"' in config
