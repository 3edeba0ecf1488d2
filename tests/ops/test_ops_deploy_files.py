"""The production deployment files, checked without a Docker engine or a cluster: they parse,
their references resolve, every variable is documented and every setting is real."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.common.settings import ENV_PREFIX, Settings
from tests.ops.opstools import (
    DASHBOARDS,
    DEPLOY,
    OPERATIONS_DOC,
    ROOT,
    github_anchor,
    rule_exprs,
)

COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")
SETTINGS_VARS = {ENV_PREFIX + name.upper() for name in Settings.model_fields}


def strings(node: Any) -> list[str]:
    """Every string (keys and values) in a parsed YAML/JSON document."""
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in strings(k) + strings(v)]
    if isinstance(node, list):
        return [s for v in node for s in strings(v)]
    return [node] if isinstance(node, str) else []


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and "services" in data
    return data


def k8s_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_every_yaml_and_json_file_under_deploy_parses() -> None:
    files = sorted(DEPLOY.rglob("*.y*ml")) + sorted(DEPLOY.rglob("*.json"))
    assert len(files) >= 15
    for path in files:
        if path.suffix == ".json":
            json.loads(path.read_text())
        else:
            docs = list(yaml.safe_load_all(path.read_text()))
            assert any(d is not None for d in docs), f"{path} is empty"


def test_compose_references_are_consistent(compose: dict[str, Any]) -> None:
    services = compose["services"]
    volumes = set(compose.get("volumes") or {})
    networks = set(compose.get("networks") or {})
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, f"{name}: no image"
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions (health-gated)"
        for dep, cond in deps.items():
            assert dep in services, f"{name} depends on unknown service {dep}"
            assert cond["condition"] in ("service_healthy", "service_completed_successfully"), \
                f"{name} -> {dep}: start order must be gated on health, not on start"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health, it has none"
        for net in svc.get("networks") or []:
            assert net in networks, f"{name}: unknown network {net}"
        for mount in svc.get("volumes") or []:
            source = mount.split(":", 1)[0]
            if source.startswith((".", "/")):
                assert (COMPOSE.parent / source).exists(), f"{name}: bind mount {source} missing"
            else:
                assert source in volumes, f"{name}: named volume {source} not declared"
        build = svc.get("build")
        if build:
            context = (COMPOSE.parent / build["context"]).resolve()
            assert (context / build["dockerfile"]).is_file()


def test_compose_runs_production_shape(compose: dict[str, Any]) -> None:
    services = compose["services"]
    brokers = [n for n, s in services.items() if str(s.get("image", "")).startswith("apache/kafka")
               and "KAFKA_NODE_ID" in (s.get("environment") or {})]
    assert len(brokers) == 3
    for b in brokers:
        env = services[b]["environment"]
        assert "broker" in env["KAFKA_PROCESS_ROLES"] and "controller" in env["KAFKA_PROCESS_ROLES"]
        assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
        assert "healthcheck" in services[b]
    assert "--appendonly yes" in " ".join(services["redis"]["command"])
    for name in ("api", "scorer", "notifier", "prometheus", "grafana"):
        assert name in services
        if name in ("api", "scorer", "notifier"):
            assert "healthcheck" in services[name]
    scorer_replicas = services["scorer"]["deploy"]["replicas"]
    partitions = services["scorer"]["environment"]["CHURNWATCH_TOPIC_PARTITIONS"]
    default = lambda v: int(_VAR.sub(lambda m: m.group(0).split(":-")[1].rstrip("}"), str(v)))  # noqa: E731
    assert default(scorer_replicas) <= default(partitions), "more scorer workers than partitions"
    grafana_mounts = " ".join(services["grafana"]["volumes"])
    assert "grafana/dashboards" in grafana_mounts and "provisioning/datasources" in grafana_mounts
    prom_mounts = " ".join(services["prometheus"]["volumes"])
    assert "prometheus/rules.yml" in prom_mounts and "prometheus/prometheus.yml" in prom_mounts


def test_required_secrets_use_the_error_form(compose: dict[str, Any]) -> None:
    text = " ".join(strings(compose))
    for secret in ("KAFKA_CLIENT_PASSWORD", "REDIS_PASSWORD", "CHURNWATCH_API_KEYS",
                   "CHURNWATCH_ACK_LINK_SECRET",
                   "GRAFANA_ADMIN_PASSWORD", "KAFKA_CLUSTER_ID"):
        assert re.search(r"\$\{" + secret + r":\?[^}]+\}", text), f"{secret} must be ${{{secret}:?...}}"


def test_every_compose_variable_is_documented(compose: dict[str, Any]) -> None:
    doc = OPERATIONS_DOC.read_text()
    used = {m.group(1) for s in strings(compose) for m in _VAR.finditer(s)}
    provisioning = DEPLOY / "grafana" / "provisioning"
    for path in provisioning.rglob("*.yaml"):
        used |= {m.group(1) for s in strings(yaml.safe_load(path.read_text()))
                 for m in _VAR.finditer(s)}
    assert "REDIS_PASSWORD" in used and "GRAFANA_PROMETHEUS_URL" in used
    undocumented = sorted(v for v in used if f"`{v}`" not in doc)
    assert not undocumented, f"document these in docs/operations.md: {undocumented}"
    example = (DEPLOY / "example.env").read_text()
    compose_only = used - {"GRAFANA_PROMETHEUS_URL"}
    missing = sorted(v for v in compose_only if not re.search(rf"^#? ?{v}=", example, re.M))
    assert not missing, f"add to deploy/example.env: {missing}"


def _churnwatch_vars_in(node: Any) -> set[str]:
    found: set[str] = set()
    for s in strings(node):
        found |= set(re.findall(r"\bCHURNWATCH_[A-Z0-9_]+\b", s))
    return found


def test_every_churnwatch_variable_in_deploy_files_is_a_setting(compose: dict[str, Any]) -> None:
    used = _churnwatch_vars_in(compose)
    for path in K8S.rglob("*.yaml"):
        for doc in k8s_docs(path):
            used |= _churnwatch_vars_in(doc)
    used |= set(re.findall(r"\bCHURNWATCH_[A-Z0-9_]+\b", (DEPLOY / "Dockerfile").read_text()))
    used |= set(re.findall(r"\bCHURNWATCH_[A-Z0-9_]+\b", (DEPLOY / "example.env").read_text()))
    assert {"CHURNWATCH_KAFKA_SASL_PASSWORD", "CHURNWATCH_REDIS_URL", "CHURNWATCH_API_KEYS"} <= used
    unknown = sorted(used - SETTINGS_VARS)
    assert not unknown, f"not fields of services/common/settings.py: {unknown}"


def test_dockerfile_is_multi_stage_slim_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.M | re.I)
    assert len(stages) >= 2, "multi-stage build expected"
    assert all("slim" in image for image, _ in stages)
    assert re.search(r"COPY --from=build", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users, "the image must switch to a non-root USER"
    assert users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["churnwatch"\]', text, re.M)
    runtime = text.split("AS runtime", 1)[1]
    assert "build-essential" not in runtime, "no compiler in the runtime image"


def _kustomization(directory: Path) -> dict[str, Any]:
    data = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert data["kind"] == "Kustomization"
    return data


def _resources(directory: Path) -> list[dict[str, Any]]:
    """Every object a kustomization directory lists (recursively, without patches)."""
    out: list[dict[str, Any]] = []
    for ref in _kustomization(directory).get("resources", []):
        target = (directory / ref).resolve()
        assert target.exists(), f"{directory}/kustomization.yaml lists missing {ref}"
        out.extend(_resources(target) if target.is_dir() else k8s_docs(target))
    return out


def test_kustomize_references_exist_and_patches_match() -> None:
    for directory in (K8S / "base", K8S / "overlays" / "example"):
        kust = _kustomization(directory)
        objects = _resources(directory)
        names = {(o["kind"], o["metadata"]["name"]) for o in objects}
        for patch in kust.get("patches", []):
            path = directory / patch["path"]
            assert path.is_file(), f"patch {path} missing"
            doc = yaml.safe_load(path.read_text())
            if isinstance(doc, dict) and "kind" in doc:
                assert (doc["kind"], doc["metadata"]["name"]) in names, f"{path} patches nothing"
        for rep in kust.get("replicas", []):
            assert ("Deployment", rep["name"]) in names


def _overlay_objects() -> dict[tuple[str, str], dict[str, Any]]:
    """The example overlay's objects with its ConfigMap/HPA patches and replicas applied."""
    overlay = K8S / "overlays" / "example"
    objects = {(o["kind"], o["metadata"]["name"]): o for o in _resources(overlay)}
    kust = _kustomization(overlay)
    for patch in kust.get("patches", []):
        doc = yaml.safe_load((overlay / patch["path"]).read_text())
        if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
            objects[("ConfigMap", doc["metadata"]["name"])]["data"].update(doc["data"])
        elif isinstance(doc, dict) and doc.get("kind") == "HorizontalPodAutoscaler":
            objects[("HorizontalPodAutoscaler", doc["metadata"]["name"])]["spec"].update(doc["spec"])
    for rep in kust.get("replicas", []):
        objects[("Deployment", rep["name"])]["spec"]["replicas"] = rep["count"]
    return objects


@pytest.mark.parametrize("variant", ["base", "overlay"])
def test_kubernetes_workloads_are_production_ready(variant: str) -> None:
    if variant == "base":
        objects = {(o["kind"], o["metadata"]["name"]): o for o in _resources(K8S / "base")}
    else:
        objects = _overlay_objects()
    deployments = {n: o for (k, n), o in objects.items() if k == "Deployment"}
    assert set(deployments) == {"churnwatch-api", "churnwatch-scorer", "churnwatch-notifier"}
    pdbs = [o for (k, _), o in objects.items() if k == "PodDisruptionBudget"]
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]
        labels = pod["metadata"]["labels"]
        assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
        for c in pod["spec"]["containers"]:
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready", name
            assert c["livenessProbe"]["httpGet"]["path"] in ("/health", "/live"), name
            assert c["resources"]["requests"]["cpu"] and c["resources"]["requests"]["memory"]
            assert c["resources"]["limits"]["memory"]
            refs = {next(iter(e)): e[next(iter(e))]["name"] for e in c["envFrom"]}
            assert ("ConfigMap", refs["configMapRef"]) in objects
            assert refs["secretRef"] == "churnwatch-secrets"
        assert any(p["spec"]["selector"]["matchLabels"].items() <= labels.items() for p in pdbs), \
            f"no PodDisruptionBudget selects {name}"
    services = [o for (k, _), o in objects.items() if k == "Service"]
    for svc in services:
        assert any(svc["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()
                   for d in deployments.values()), f"Service {svc['metadata']['name']} selects nothing"
    # Scorer scaling is bounded by the partition count.
    config = objects[("ConfigMap", "churnwatch-config")]["data"]
    partitions = int(config["CHURNWATCH_TOPIC_PARTITIONS"])
    hpa = objects[("HorizontalPodAutoscaler", "churnwatch-scorer")]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "churnwatch-scorer"
    assert hpa["minReplicas"] <= deployments["churnwatch-scorer"]["spec"]["replicas"] <= partitions
    assert hpa["maxReplicas"] <= partitions, "more scorer workers than partitions would sit idle"
    unknown = sorted(set(config) - SETTINGS_VARS)
    assert not unknown, f"ConfigMap keys that are not settings: {unknown}"


def test_example_secret_keys_are_settings() -> None:
    secret = yaml.safe_load((K8S / "overlays" / "example" / "secret.example.yaml").read_text())
    assert secret["metadata"]["name"] == "churnwatch-secrets"
    assert set(secret["stringData"]) <= SETTINGS_VARS


def test_grafana_provisioning_and_dashboards_agree() -> None:
    ds = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/churnwatch.yaml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    prov = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/churnwatch.yaml").read_text())
    assert prov["providers"][0]["type"] == "file"
    dashboards = {p.stem: json.loads(p.read_text()) for p in DASHBOARDS.glob("*.json")}
    assert {"overview", "scorer", "notifier", "business"} <= set(dashboards)
    seen_uids: set[str] = set()
    for name, dash in dashboards.items():
        assert dash["uid"] not in seen_uids
        seen_uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                assert target["datasource"]["uid"] in uids, f"{name}: unknown datasource"
                assert target["expr"].strip()


def test_every_alert_has_a_runbook_section() -> None:
    doc = OPERATIONS_DOC.read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#{2,4} (.+)$", doc, re.M)}
    rules = yaml.safe_load((DEPLOY / "prometheus/rules.yml").read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == len(rule_exprs()) >= 6
    for rule in alerts:
        url = rule["annotations"]["runbook_url"]
        assert url.split("#")[0].endswith("docs/operations.md")
        anchor = url.split("#", 1)[1]
        assert anchor == rule["alert"].lower()
        assert anchor in anchors, f"docs/operations.md has no section for {rule['alert']}"
        assert rule["labels"]["severity"] in ("warning", "critical")


def test_readme_links_the_operations_guide() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
