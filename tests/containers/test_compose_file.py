"""docker-compose.yml without Docker: what the smoke test cannot bring up (Grafana's image
cannot be pulled here) is checked statically -- Grafana's provisioning points at the dashboard
the file mounts and at the stack's Prometheus -- and every service keeps the conventions the
stack relies on (host network, a healthcheck, no published ports, images built locally).
Compose itself validates the file when it is installed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml

from bridge_dev import images, stack

REPO = Path(__file__).resolve().parents[2]
SPEC: dict[str, Any] = yaml.safe_load(stack.COMPOSE_FILE.read_text("utf-8"))
PROVISIONING = REPO / "ops" / "grafana" / "provisioning"


def binds(service: str) -> dict[str, str]:
    """Mount target -> source of a service's bind mounts."""
    volumes = SPEC["services"][service]["volumes"]
    return {v["target"]: v["source"] for v in volumes if v["type"] == "bind"}


def test_services_share_the_host_network_and_have_healthchecks() -> None:
    assert tuple(SPEC["services"]) == stack.SERVICES
    for name, service in SPEC["services"].items():
        assert service["network_mode"] == "host", name
        assert "ports" not in service, name  # nothing to publish on the host network
        assert service["healthcheck"]["test"][0] == "CMD", name
    built = {SPEC["services"][s]["image"] for s in stack.BUILT_HERE}
    assert built == {images.NATS, images.ENGINE, images.PROMETHEUS}


def test_repo_files_it_mounts_exist() -> None:
    for service in SPEC["services"]:
        for source in binds(service).values():
            if source.startswith("./") and "${" not in source:
                assert (REPO / source).exists(), f"{service}: {source}"


def test_grafana_is_provisioned_with_the_dashboard_and_prometheus() -> None:
    mounts = binds("grafana")
    assert mounts["/etc/grafana/provisioning"] == "./ops/grafana/provisioning"
    dashboard_target = next(t for t, s in mounts.items() if s == "./ops/grafana/bridge.json")
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "bridge.yml").read_text("utf-8"))
    paths = [p["options"]["path"] for p in providers["providers"]]
    assert str(PurePosixPath(dashboard_target).parent) in paths
    sources = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text("utf-8"))
    (datasource,) = sources["datasources"]
    assert datasource["type"] == "prometheus"
    assert datasource["isDefault"]
    # the URL comes from the compose environment: this stack's Prometheus port
    variable = datasource["url"].lstrip("$")
    assert "BRIDGE_PROMETHEUS_PORT" in SPEC["services"]["grafana"]["environment"][variable]
    # the dashboard selects its datasource through a variable of that type
    model = json.loads((REPO / "ops" / "grafana" / "bridge.json").read_text("utf-8"))
    kinds = {v["name"]: (v["type"], v.get("query")) for v in model["templating"]["list"]}
    assert kinds["datasource"] == ("datasource", "prometheus")


def test_compose_accepts_the_file() -> None:
    try:
        command = stack.compose_command()
    except stack.StackError as exc:
        pytest.skip(str(exc))
    got = subprocess.run(
        [*command, "-f", str(stack.COMPOSE_FILE), "config", "-q"],
        cwd=REPO,
        env=stack.Stack().env(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert got.returncode == 0, got.stderr
