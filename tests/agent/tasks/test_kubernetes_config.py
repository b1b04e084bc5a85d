"""Misconfiguring ``TASK_EXECUTOR=kubernetes`` stops ``serve``/``check-config`` (and a pod's
``run-task``) at start with one plain line naming the variable, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1]))
sys.path.insert(0, str(Path(__file__).parents[1] / "e2e"))
from agentproc import VALID, bound, run
from codingkit import SRC

PREFIX = "gitlab-copilot-agent: invalid configuration: "
KUBERNETES = {
    "TASK_EXECUTOR": "kubernetes",
    "K8S_IMAGE": "registry.example.com/agent:1",
    "K8S_SECRET_NAME": "agent-secrets",
    "REDIS_URL": "redis://127.0.0.1:9/0",
    "K8S_KUBECONFIG": "{kubeconfig}",
}
BAD: list[tuple[str, str, str | None, str]] = [
    ("no-secret", "K8S_SECRET_NAME", None, "K8S_SECRET_NAME"),
    ("no-redis", "REDIS_URL", None, "REDIS_URL"),
    ("no-image", "K8S_IMAGE", None, "K8S_IMAGE"),
    ("no-kubeconfig", "K8S_KUBECONFIG", None, "K8S_KUBECONFIG"),
    ("missing-kubeconfig", "K8S_KUBECONFIG", "/nonexistent/kubeconfig", "K8S_KUBECONFIG"),
    ("bad-secret-name", "K8S_SECRET_NAME", "Agent_Secrets", "K8S_SECRET_NAME"),
    ("bad-quantity", "K8S_CPU_LIMIT", "one core", "K8S_CPU_LIMIT"),
    ("unusable-kubeconfig", "K8S_KUBECONFIG", "{not_a_kubeconfig}", "K8S_KUBECONFIG"),
]


def test_in_a_cluster_without_a_service_account_token_k8s_kubeconfig_is_named(
    tmp_path: Path,
) -> None:
    """KUBERNETES_SERVICE_HOST set (as in a pod) but no service account files here: the
    in-cluster configuration cannot load, and the line says so."""
    values = _values(tmp_path)
    values.pop("_BROKEN")
    values.pop("K8S_KUBECONFIG")
    values["KUBERNETES_SERVICE_HOST"] = "10.96.0.1"
    values["KUBERNETES_SERVICE_PORT"] = "443"
    result = run(tmp_path, values, "check-config")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{PREFIX}K8S_KUBECONFIG: the in-cluster service account")
    assert result.stderr.count("\n") == 1


KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "u", "user": {"token": "kubeconfig-test-token-0000"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "c",
}


def _values(tmp: Path) -> dict[str, str]:
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(json.dumps(KUBECONFIG))
    broken = tmp / "broken-kubeconfig"
    broken.write_text("{}")
    replaced = {k: v.replace("{kubeconfig}", str(kubeconfig)) for k, v in KUBERNETES.items()}
    return {**VALID, **replaced, "_BROKEN": str(broken)}


@pytest.mark.parametrize("command", ["serve", "check-config"])
@pytest.mark.parametrize(
    ("variable", "value", "named"), [b[1:] for b in BAD], ids=[b[0] for b in BAD]
)
def test_a_kubernetes_misconfiguration_is_one_line_naming_the_variable(
    tmp_path: Path, command: str, variable: str, value: str | None, named: str
) -> None:
    values = _values(tmp_path)
    broken = values.pop("_BROKEN")
    if value is None:
        values.pop(variable)
    else:
        values[variable] = value.replace("{not_a_kubeconfig}", broken)
    result = run(tmp_path, values, command)
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines(keepends=True) == [result.stderr], result.stderr
    assert result.stderr.startswith(f"{PREFIX}{named}: "), result.stderr
    assert "Traceback" not in result.stderr
    # No port was bound. (Importing the kubernetes client, to check the kubeconfig, makes
    # urllib3 probe IPv6 support by binding ('::1', 0) once: no port, nothing listens.)
    assert [b for b in bound(tmp_path) if b != "('::1', 0)"] == []


def test_check_config_shows_the_kubernetes_executor(tmp_path: Path) -> None:
    values = _values(tmp_path)
    values.pop("_BROKEN")
    result = run(tmp_path, values, "check-config")
    assert result.returncode == 0, result.stderr
    assert "kubernetes executor" in result.stdout
    assert "secrets from Secret agent-secrets" in result.stdout


def test_every_kubernetes_problem_is_named_in_the_one_line(tmp_path: Path) -> None:
    values = _values(tmp_path)
    values.pop("_BROKEN")
    for name in ("K8S_SECRET_NAME", "REDIS_URL", "K8S_IMAGE"):
        values.pop(name)
    result = run(tmp_path, values, "check-config")
    assert (result.returncode, result.stderr.count("\n")) == (2, 1), result.stderr
    for name in ("K8S_SECRET_NAME", "REDIS_URL", "K8S_IMAGE"):
        assert f"{name}: required with TASK_EXECUTOR=kubernetes" in result.stderr


@pytest.mark.parametrize(
    ("drop", "named"), [("REDIS_URL", "REDIS_URL"), ("COPILOT_TASK_ID", "COPILOT_TASK_ID")]
)
def test_a_pod_without_its_channel_settings_stops_with_one_line(
    tmp_path: Path, drop: str, named: str
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{SRC}:{SRC.parent / 'packages/auditkeep/src'}",
        "HOME": str(tmp_path),
        "GITLAB_URL": "http://127.0.0.1:9",
        "GITLAB_TOKEN": "glpat-pod-config-test-0000",
        "AUDIT_LOG_ENABLED": "false",
        "COPILOT_TASK_CHANNEL": "redis",
        "COPILOT_TASK_ID": "0123456789abcdef",
        "REDIS_URL": "redis://127.0.0.1:9/0",
    }
    env.pop(drop)
    result = subprocess.run(
        [sys.executable, "-m", "gitlab_copilot_agent.cli", "run-task"],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"invalid configuration: {named}: " in result.stderr
    assert "Traceback" not in result.stderr


def test_without_the_kubernetes_extra_task_executor_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client not installed (simulated: ``find_spec`` sees no ``kubernetes``)."""
    import importlib.util

    from gitlab_copilot_agent.settings import Settings, SettingsError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "kubernetes" else real(name)
    )
    values = _values(tmp_path)
    values.pop("_BROKEN")
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(values)
    assert list(raised.value.problems) == ["TASK_EXECUTOR"]
    assert "pip install 'gitlab-copilot-agent[kubernetes]'" in str(raised.value)
