"""The Kubernetes manifests in deploy/kubernetes: valid YAML, wired to what the daemon really serves."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import structlog
import yaml

from jobrunner.settings import Settings
from tests.support import REPO_ROOT

DEPLOY = REPO_ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# the routes daemon/ops.py (start_ops_endpoint) registers
SERVER_ROUTES = {"/metrics", "/healthz", "/readyz"}
IMAGE_UID = 10001  # Dockerfile: useradd --uid 10001


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _manifests() -> dict[tuple[str, str], dict[str, Any]]:
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in _documents(path):
            assert {"apiVersion", "kind"} <= doc.keys(), path
            if doc["kind"] == "Kustomization":
                continue
            key = (doc["kind"], doc["metadata"]["name"])
            assert key not in found, f"{key} defined twice"
            found[key] = doc
    return found


def _pod_containers(doc: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = doc["spec"]["template"]["spec"]
    return spec, spec["containers"]


def test_yamllint_is_clean() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(DEPLOY / ".yamllint.yaml"), str(DEPLOY)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_manifest_parses_and_the_kustomization_lists_existing_files() -> None:
    manifests = _manifests()
    for needed in [
        ("Deployment", "jobrunner"),
        ("Service", "jobrunner"),
        ("PodDisruptionBudget", "jobrunner"),
        ("Job", "jobrunner-migrate"),
        ("ScaledObject", "jobrunner"),
        ("TriggerAuthentication", "jobrunner-keda-postgres"),
    ]:
        assert needed in manifests, needed
    kustomization = _documents(KUBERNETES / "kustomization.yaml")[0]
    for resource in kustomization["resources"]:
        assert (KUBERNETES / resource).is_file(), resource


def test_the_deployment_probes_the_daemons_routes_on_its_port() -> None:
    deployment = _manifests()[("Deployment", "jobrunner")]
    _spec, (container,) = _pod_containers(deployment)
    env = {item["name"]: item.get("value") for item in container["env"]}
    # the endpoint binds 127.0.0.1 by default, which the kubelet cannot reach
    assert env["JOBRUNNER_HTTP_HOST"] == "0.0.0.0"
    port = int(env.get("JOBRUNNER_HTTP_PORT") or Settings.model_fields["http_port"].default)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["metrics"] == port
    probes = {kind: container[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/healthz"
    assert probes["readinessProbe"]["path"] == "/readyz"
    for probe in probes.values():
        assert probe["path"] in SERVER_ROUTES
        assert probe["port"] in ("metrics", port)
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/path"] in SERVER_ROUTES
    assert int(annotations["prometheus.io/port"]) == port
    service = _manifests()[("Service", "jobrunner")]
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


async def test_the_routes_listed_here_are_the_servers() -> None:
    # the real endpoint, asked over HTTP: every route the manifests probe answers (not 404)
    from jobrunner.daemon.ops import start_ops_endpoint
    from jobrunner.metrics import DaemonMetrics
    from jobrunner.settings import Settings

    async def ready() -> str | None:
        return None

    log = structlog.get_logger("test")
    server = await start_ops_endpoint(Settings(http_port=0), DaemonMetrics(), lambda: True, ready, log)
    assert server is not None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as http:
            for route in SERVER_ROUTES:
                assert (await http.get(route)).status_code == 200, route
            assert (await http.get("/not-served")).status_code == 404
    finally:
        await server.close()


@pytest.mark.parametrize("name", [("Deployment", "jobrunner"), ("Job", "jobrunner-migrate")])
def test_pods_run_as_the_images_non_root_user_locked_down(name: tuple[str, str]) -> None:
    spec, containers = _pod_containers(_manifests()[name])
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == IMAGE_UID
    assert spec["automountServiceAccountToken"] is False
    for container in containers:
        context = container["securityContext"]
        assert context["runAsNonRoot"] is True
        assert context["allowPrivilegeEscalation"] is False
        assert context["readOnlyRootFilesystem"] is True
        assert context["capabilities"]["drop"] == ["ALL"]
        assert "memory" in container["resources"]["limits"]
        assert container["envFrom"][0]["secretRef"]["name"]


def test_the_grace_period_covers_the_drain() -> None:
    deployment = _manifests()[("Deployment", "jobrunner")]
    spec, (container,) = _pod_containers(deployment)
    env = {item["name"]: item.get("value") for item in container["env"]}
    grace = float(env.get("JOBRUNNER_SHUTDOWN_GRACE") or Settings.model_fields["shutdown_grace"].default)
    # running jobs get the grace, then outcomes are written for up to max(5, grace), then 5 s to close
    assert spec["terminationGracePeriodSeconds"] >= grace + max(5.0, grace) + 5


def test_the_migration_job_runs_migrate_once() -> None:
    job = _manifests()[("Job", "jobrunner-migrate")]
    spec, (container,) = _pod_containers(job)
    assert container["args"] == ["migrate"]
    assert spec["restartPolicy"] == "Never"
    deployment = _manifests()[("Deployment", "jobrunner")]
    assert container["image"] == _pod_containers(deployment)[1][0]["image"]


def test_keda_scales_the_deployment_on_runnable_jobs() -> None:
    manifests = _manifests()
    scaled = manifests[("ScaledObject", "jobrunner")]
    assert scaled["spec"]["scaleTargetRef"]["name"] == "jobrunner"
    assert 1 <= scaled["spec"]["minReplicaCount"] <= scaled["spec"]["maxReplicaCount"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "postgresql"
    query = trigger["metadata"]["query"]
    assert "status = 'pending'" in query and "scheduled_at <= now()" in query
    assert float(trigger["metadata"]["targetQueryValue"]) > 0
    assert (
        "TriggerAuthentication",
        trigger["authenticationRef"]["name"],
    ) in manifests


async def test_kedas_query_counts_runnable_jobs(conn: asyncpg.Connection) -> None:
    scaled = _manifests()[("ScaledObject", "jobrunner")]
    query = scaled["spec"]["triggers"][0]["metadata"]["query"]
    await conn.execute(
        "INSERT INTO background_jobs (job_type) SELECT 'x' FROM generate_series(1, 3);"
        "INSERT INTO background_jobs (job_type, scheduled_at) VALUES ('x', now() + interval '1 hour');"
        "INSERT INTO background_jobs (job_type, status, finished_at) VALUES ('x', 'completed', now())"
    )
    assert await conn.fetchval(query) == 3


def test_only_prometheus_may_connect_to_the_pods_and_only_to_the_metrics_port() -> None:
    manifests = _manifests()
    policy = manifests[("NetworkPolicy", "jobrunner")]
    deployment = manifests[("Deployment", "jobrunner")]
    kustomization = _documents(KUBERNETES / "kustomization.yaml")[0]
    assert "networkpolicy.yaml" in kustomization["resources"]
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    # ingress only: the daemon's own connections (database, upstreams) stay open
    assert spec["policyTypes"] == ["Ingress"]
    (rule,) = spec["ingress"]
    assert [(p["port"], p["protocol"]) for p in rule["ports"]] == [("metrics", "TCP")]
    # a peer with both selectors: pods so labelled in that namespace (not any pod, not any namespace)
    (peer,) = rule["from"]
    assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
