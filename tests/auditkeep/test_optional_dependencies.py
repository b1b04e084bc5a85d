"""Without the ``http`` extra: one error naming the extra, never a bare ModuleNotFoundError.

Each case runs in a fresh interpreter where ``httpx`` cannot be imported
(``sys.modules["httpx"] = None``, which makes every ``import httpx`` fail the
way a missing package does).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import auditkeep

HINT = "pip install 'auditkeep[http]'"
NO_HTTPX = "import sys\nsys.modules['httpx'] = None\n"


def run(code: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(auditkeep.__file__).parents[1]),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    return subprocess.run(
        [sys.executable, "-c", NO_HTTPX + textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


CAUGHT = """
    import auditkeep
    try:
        {action}
    except auditkeep.MissingDependencyError as exc:
        assert isinstance(exc, ImportError) and isinstance(exc, auditkeep.AuditError)
        assert (exc.name, exc.extra) == ("httpx", "http"), (exc.name, exc.extra)
        print(exc)
    else:
        raise AssertionError("no error")
"""


@pytest.mark.parametrize(
    ("action", "feature"),
    [
        ("import auditkeep.integrations.httpx", "auditkeep.integrations.httpx"),
        ("auditkeep.HttpSink('https://siem.example/in')", "the http destination (HttpSink)"),
    ],
    ids=["integration", "sink"],
)
def test_one_error_names_the_extra(action: str, feature: str, tmp_path: Path) -> None:
    """Importing the integration, building the sink, configuring the destination: one line."""
    proc = run(CAUGHT.format(action=action), tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"{feature} needs httpx, which is not installed: {HINT}\n"


def test_configuring_the_http_destination_fails_at_start_naming_the_variable(
    tmp_path: Path,
) -> None:
    """From AUDIT_LOG_*, the same words as a ConfigError naming AUDIT_LOG_DESTINATION."""
    proc = run(
        """
        import auditkeep
        env = {"AUDIT_LOG_DESTINATION": "http", "AUDIT_LOG_HTTP_ENDPOINT": "https://siem.example/in"}
        try:
            auditkeep.configure(env, handle_sigterm=False)
        except auditkeep.ConfigError as exc:
            print(exc)
        """,
        tmp_path,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == (
        "AUDIT_LOG_DESTINATION: the http destination (HttpSink) needs httpx, "
        f"which is not installed: {HINT}\n"
    )


def test_uncaught_it_is_one_error_without_a_chained_traceback(tmp_path: Path) -> None:
    """The traceback a user sees ends in the hint and holds no ModuleNotFoundError."""
    proc = run("import auditkeep.integrations.httpx\n", tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1] == (
        "auditkeep.exceptions.MissingDependencyError: auditkeep.integrations.httpx needs "
        f"httpx, which is not installed: {HINT}"
    )
    assert "ModuleNotFoundError" not in proc.stderr
    assert "During handling" not in proc.stderr


def test_the_core_library_needs_no_httpx(tmp_path: Path) -> None:
    """``import auditkeep`` and every sink but http work without the extra."""
    proc = run(
        """
        import auditkeep
        from auditkeep.testing import capture_events
        with capture_events() as (logger, sink):
            logger.emit("test.optional.emitted")
            assert logger.flush(5.0)
        assert len(sink.lines) == 1
        print("ok")
        """,
        tmp_path,
    )
    assert (proc.returncode, proc.stderr, proc.stdout) == (0, "", "ok\n")


@pytest.mark.parametrize(
    ("hidden", "package"),
    [("opentelemetry.proto", "opentelemetry-proto"), ("google.protobuf", "protobuf")],
)
def test_the_otlp_destination_names_the_otlp_extra(
    hidden: str, package: str, tmp_path: Path
) -> None:
    """Without opentelemetry-proto or protobuf: one line naming the otlp extra, at start."""
    code = f"""
        import sys
        sys.modules[{hidden!r}] = None
        import auditkeep
        try:
            auditkeep.OtlpSink("http://127.0.0.1:4318")
        except auditkeep.MissingDependencyError as exc:
            assert exc.extra == "otlp", exc.extra
            print(exc)
        env = {{"AUDIT_LOG_DESTINATION": "otlp", "AUDIT_LOG_OTLP_ENDPOINT": "http://c:4318"}}
        try:
            auditkeep.configure(env, handle_sigterm=False)
        except auditkeep.ConfigError as exc:
            print(exc)
        """
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(Path(auditkeep.__file__).parents[1]),
        "AUDIT_LOG_SPOOL_DIR": str(tmp_path / "spool"),
    }
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (proc.returncode, proc.stderr) == (0, "")
    message = (
        f"the otlp destination (OtlpSink) needs {package}, which is not installed: "
        "pip install 'auditkeep[otlp]'"
    )
    assert proc.stdout == f"{message}\nAUDIT_LOG_DESTINATION: {message}\n"
