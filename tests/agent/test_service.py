"""The service around the webhook: /healthz, /metrics, and `serve` refusing a bad configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from agent_standins.servers import run_in_thread
from auditkeep.logger import AuditLogger
from auditkeep.metrics import AuditMetrics
from auditkeep.sinks.memory import InMemorySink
from gitlab_copilot_agent.main import create_app
from gitlab_copilot_agent.settings import Settings


class TestEndpoints:
    def test_healthz_and_metrics_expose_the_audit_pipeline(self, tmp_path: Path) -> None:
        """/healthz reports each destination's backlog; /metrics serves the audit counters."""
        registry = CollectorRegistry()
        audit = AuditLogger(
            InMemorySink(), service="svc", spool_dir=tmp_path, metrics=AuditMetrics(registry)
        )
        settings = Settings.from_env(
            {
                "GITLAB_URL": "http://127.0.0.1:9",
                "GITLAB_TOKEN": "glpat-unused-token-000000",
                "GITLAB_WEBHOOK_SECRET": "service-test-secret",
            }
        )
        app = create_app(settings, audit=audit, registry=registry, plugins=[])
        with run_in_thread(app) as server, httpx.Client(base_url=server.url) as client:
            client.post("/webhook", content=b"{}", headers={"x-gitlab-token": "wrong-token"})
            assert audit.flush(10)
            health = client.get("/healthz")
            metrics = client.get("/metrics")
        audit.close()
        assert health.status_code == 200
        assert health.json() == {"status": "ok", "audit": {"memory": {"buffered": 0, "spooled": 0}}}
        assert metrics.status_code == 200
        assert (
            'audit_log_entries_total{action="webhook.auth.rejected",outcome="failure"} 1.0'
            in metrics.text
        )
        assert 'audit_log_sink_errors_total{destination="memory"} 0.0' in metrics.text


class TestServeConfiguration:
    def test_missing_settings_stop_serve_with_the_variable_named(self, tmp_path: Path) -> None:
        """`serve` without GITLAB_TOKEN and webhook auth exits 2 before binding, naming them."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITLAB_", "AUDIT_"))}
        env["GITLAB_URL"] = "https://gitlab.example.com"
        result = subprocess.run(
            [sys.executable, "-m", "gitlab_copilot_agent.cli", "serve", "--port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "GITLAB_TOKEN" in result.stderr
        assert result.stderr.count("\n") == 1

    def test_invalid_audit_settings_stop_serve(self, tmp_path: Path) -> None:
        """A bad AUDIT_LOG_* setting stops `serve` too, with the audit variable named."""
        env = {
            **os.environ,
            "GITLAB_URL": "https://gitlab.example.com",
            "GITLAB_TOKEN": "glpat-unused-token-000000",
            "GITLAB_WEBHOOK_SECRET": "serve-test-secret",
            "AUDIT_LOG_DESTINATION": "file",
            "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
        }
        env.pop("AUDIT_LOG_FILE_PATH", None)
        result = subprocess.run(
            [sys.executable, "-m", "gitlab_copilot_agent.cli", "serve", "--port", "0"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert (result.returncode, result.stderr.count("\n")) == (2, 1)
        assert "AUDIT_LOG_FILE_PATH" in result.stderr
        assert "glpat-unused-token-000000" not in result.stderr + result.stdout
