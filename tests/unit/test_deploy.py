"""The deployment files: the compose stack and the image workflow validate against
their public JSON schemas (vendored by check-jsonschema, so no network), the
Kubernetes manifests parse and name what they need, and every locked dependency has a
binary wheel for both architectures the image is built for."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def check_jsonschema(schema: str, path: Path) -> subprocess.CompletedProcess[str]:
    tool = Path(sys.executable).with_name("check-jsonschema")
    return subprocess.run(
        [str(tool), "--builtin-schema", schema, str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


def test_the_compose_file_follows_the_compose_spec() -> None:
    done = check_jsonschema("vendor.compose-spec", DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_image_workflow_follows_the_workflow_schema() -> None:
    done = check_jsonschema("vendor.github-workflows", ROOT / ".github/workflows/image.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_runs_every_role_on_a_safe_redis() -> None:
    stack = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = stack["services"]
    assert {"postgres", "redis", "migrate", "api", "worker", "beat", "flower"} <= set(services)
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis
    assert "--maxmemory-policy noeviction" in redis
    assert services["worker"]["healthcheck"]["test"][:4] == ["CMD", "eraser", "health", "worker"]


def test_compose_exposes_flower_only_through_the_proxy() -> None:
    services = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]
    flower, proxy = services["flower"], services["flower-proxy"]
    # Flower listens on the loopback of the proxy's network namespace, and nowhere else.
    assert "ports" not in flower
    assert flower["network_mode"] == "service:flower-proxy"
    assert "--address=127.0.0.1" in flower["entrypoint"]
    assert proxy["command"][0] == "flower-proxy"
    assert proxy["ports"] == ["127.0.0.1:5555:5555"]
    assert proxy["environment"]["ERASER_FLOWER_USERS"]
    port = next(p for p in flower["entrypoint"] if p.startswith("--port="))
    assert proxy["environment"]["ERASER_FLOWER_UPSTREAM"].endswith(":" + port.split("=")[1])


def manifests() -> dict[tuple[str, str], dict[str, Any]]:
    docs = yaml.safe_load_all((DEPLOY / "k8s" / "eraser.yaml").read_text())
    return {(d["kind"], d["metadata"]["name"]): d for d in docs if d}


def test_the_kubernetes_manifests_name_what_they_need() -> None:
    found = manifests()
    for doc in found.values():
        assert doc["apiVersion"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "eraser"
    worker = found[("Deployment", "eraser-worker")]["spec"]["template"]["spec"]
    assert worker["terminationGracePeriodSeconds"] >= 30
    container = worker["containers"][0]
    assert container["livenessProbe"]["exec"]["command"][:3] == ["eraser", "health", "worker"]
    assert container["resources"]["requests"]["cpu"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["ERASER_LIVENESS_FILE"]
    assert found[("Deployment", "eraser-beat")]["spec"]["replicas"] == 1
    api = found[("Deployment", "eraser-api")]["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    scaler = found[("ScaledObject", "eraser-worker")]["spec"]
    assert scaler["scaleTargetRef"]["name"] == "eraser-worker"
    assert scaler["triggers"][0]["type"] == "redis"
    assert scaler["triggers"][0]["metadata"]["listName"] == "eraser"
    policy = found[("NetworkPolicy", "eraser-internal")]["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    for key in (
        "ERASER_DATABASE_URL",
        "ERASER_BROKER_URL",
        "ERASER_CERTIFICATE_SIGNING_KEY",
        "ERASER_SUBJECT_HASH_PEPPER",
        "ERASER_JOB_STORE_ENCRYPTION_KEY",
    ):
        assert key in found[("Secret", "eraser")]["stringData"]
    # Flower would read FLOWER_* variables from the Secret and ask for its own password.
    assert not any(k.startswith("FLOWER_") for k in found[("Secret", "eraser")]["stringData"])
    for kind, name in found:
        if kind == "Deployment":
            spec = found[(kind, name)]["spec"]["template"]["spec"]
            assert spec["securityContext"]["runAsNonRoot"] is True


def test_kubernetes_exposes_flower_only_through_the_proxy() -> None:
    found = manifests()
    pod = found[("Deployment", "eraser-flower")]["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    flower, proxy = containers["flower"], containers["flower-proxy"]
    assert "ports" not in flower
    assert "--address=127.0.0.1" in flower["command"]
    assert proxy["args"][0] == "flower-proxy"
    env = {e["name"]: e for e in proxy["env"]}
    assert env["ERASER_FLOWER_USERS"]["valueFrom"]["secretKeyRef"]["name"] == "eraser"
    # The Service's target port is the proxy's.
    service = found[("Service", "eraser-flower")]["spec"]
    assert [p["name"] for p in proxy["ports"]] == [p["targetPort"] for p in service["ports"]]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
def test_every_locked_dependency_has_a_wheel(arch: str, tmp_path: Path) -> None:
    """Asks the package index for binary-only downloads of the lock file for one
    architecture (so the image needs no compiler on either)."""
    if shutil.which("pip") is None and not Path(sys.executable).with_name("pip").exists():
        pytest.skip("no pip")
    lock = [
        line
        for line in (DEPLOY / "requirements.lock").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    (tmp_path / "lock.txt").write_text("\n".join(lock) + "\n")
    platforms = [f"manylinux2014_{arch}", f"manylinux_2_28_{arch}", f"linux_{arch}"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--only-binary=:all:",
            "--python-version",
            "3.11",
            "--implementation",
            "cp",
            *(a for p in platforms for a in ("--platform", p)),
            "-r",
            str(tmp_path / "lock.txt"),
            "-d",
            str(tmp_path / "wheels"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((tmp_path / "wheels").glob("*.whl"))) == len(lock)


def test_the_image_check_names_what_to_install_before_anything_runs(tmp_path: Path) -> None:
    """Without podman, runc, debootstrap, psql, qemu and root: one message naming the
    packages (exit 2), not a dozen "command not found" and a misleading verdict."""
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("dirname", "uname", "sort", "paste"):
        found = shutil.which(tool)
        assert found is not None
        (tools / tool).symlink_to(found)
    (tools / "id").write_text("#!/bin/sh\necho 1000\n")  # not root
    (tools / "id").chmod(0o755)
    done = subprocess.run(
        ["/bin/bash", str(DEPLOY / "check-image.sh"), "amd64", "arm64"],
        env={"PATH": str(tools)},
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr == ""
    lines = done.stdout.splitlines()
    assert lines[0] == "check-image: cannot run; nothing was built or started:"
    emulated = platform.machine() not in ("aarch64", "arm64")
    packages = ["debootstrap", "podman", "postgresql-client"]
    packages += ["qemu-user-static"] if emulated else []
    assert f"check-image:   install: apt-get install {' '.join([*packages, 'runc'])}" in lines
    assert "check-image:   must run as root" in done.stdout
    assert "command not found" not in done.stdout
    assert "job" not in done.stdout  # nothing ran, so no verdict
