"""``auditkeep verify`` as a user meets it: the README's demo block, usage errors, the exit codes.

Each runs the real command in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from auditkeep.integrity.keys import generate
from auditkeep.integrity.verify import EXIT_INCOMPLETE, EXIT_PROBLEM, EXIT_USAGE, EXIT_VERIFIED

sys.path.insert(0, str(Path(__file__).parent))
from verifykit import FormatWriter, cli, write_lines, write_public_key


def auditkeep(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    return subprocess.run(
        [sys.executable, "-m", "auditkeep", *args],
        env={**inherited, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_the_readme_block_verifies_the_demo_trail(tmp_path: Path) -> None:
    """The demo signs its trail with a key it writes beside it; verify: exit 0, closed."""
    demo = auditkeep("demo", "--dir", str(tmp_path / "demo"), "--entries", "4000")
    assert demo.returncode == 0, demo.stderr
    public = tmp_path / "demo" / "audit-signing.pem.pub"
    trail = tmp_path / "demo" / "audit.jsonl"
    result = cli("--public-key", str(public), str(trail))
    assert result.returncode == EXIT_VERIFIED, result.stdout
    last = result.stdout.splitlines()[-1]
    assert last.startswith("VERIFIED: 1 chains, ")
    assert "checked signatures" in last
    report = orjson.loads(cli("--json", "--public-key", str(public), str(trail)).stdout)
    (chain,) = report["chains"]
    assert chain["closed"]
    assert chain["entries"] > 4000


def test_the_exit_codes(tmp_path: Path) -> None:
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "k.pub")
    writer = FormatWriter(key=key, every=10)
    writer.entry(35)
    closed = writer.close()
    trail = write_lines(tmp_path / "audit.jsonl", closed)
    assert cli("--public-key", str(public), str(trail)).returncode == EXIT_VERIFIED
    # No key: links checked, nothing authenticated.
    result = cli(str(trail))
    assert result.returncode == EXIT_INCOMPLETE
    assert "links only (no key given)" in result.stdout
    # An unsealed tail (the process still running, or crashed).
    write_lines(trail, closed[:-3])
    assert cli("--public-key", str(public), str(trail)).returncode == EXIT_INCOMPLETE
    # A problem.
    write_lines(trail, [closed[0], *closed[2:]])
    assert cli("--public-key", str(public), str(trail)).returncode == EXIT_PROBLEM
    # Nothing chained at all: nothing vouches for it.
    write_lines(trail, [b'{"event_id":"x","action":"a"}'])
    result = cli("--public-key", str(public), str(trail))
    assert result.returncode == EXIT_PROBLEM
    assert "no chained entry" in result.stdout


@pytest.mark.parametrize(
    "problem",
    ["missing path", "private key", "not a key", "ec key", "missing key file", "bad flag"],
)
def test_usage_errors_exit_2_with_one_line(tmp_path: Path, problem: str) -> None:
    trail = write_lines(tmp_path / "audit.jsonl", FormatWriter().close())
    generate(tmp_path / "k.pem")
    args: list[str] = [str(trail)]
    if problem == "missing path":
        args = [str(tmp_path / "nowhere.jsonl")]
    elif problem == "private key":
        args = ["--public-key", str(tmp_path / "k.pem"), str(trail)]
    elif problem == "not a key":
        (tmp_path / "junk.pub").write_text("hello")
        args = ["--public-key", str(tmp_path / "junk.pub"), str(trail)]
    elif problem == "ec key":
        from cryptography.hazmat.primitives.asymmetric import ec

        other = ec.generate_private_key(ec.SECP256R1())
        (tmp_path / "ec.pub").write_bytes(
            other.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        args = ["--public-key", str(tmp_path / "ec.pub"), str(trail)]
    elif problem == "missing key file":
        args = ["--public-key", str(tmp_path / "nope.pub"), str(trail)]
    elif problem == "bad flag":
        args = ["--frobnicate", str(trail)]
    result = cli(*args)
    assert result.returncode == EXIT_USAGE
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith(("auditkeep verify: ", "auditkeep verify: error:", "usage:")) or (
        "error:" in lines[-1]
    )
    assert "Traceback" not in result.stderr
    # The private key's bytes never appear in what verify says.
    assert "PRIVATE" not in result.stderr


def test_a_whitespace_reencoded_copy_verifies_and_a_key_reordered_one_does_not(
    tmp_path: Path,
) -> None:
    """A SIEM that re-indents JSON keeps the evidence; one that reorders keys does not."""
    key = Ed25519PrivateKey.generate()
    public = write_public_key(key, tmp_path / "k.pub")
    writer = FormatWriter(key=key, every=10)
    writer.entry(25)
    lines = writer.close()
    spaced = [
        orjson.dumps(orjson.loads(line), option=orjson.OPT_INDENT_2).replace(b"\n", b" ")
        for line in lines
    ]
    siem = write_lines(tmp_path / "siem-export.jsonl", spaced)
    assert cli("--public-key", str(public), str(siem)).returncode == EXIT_VERIFIED
    # Host file and SIEM copy together: every line twice, still one chain, verified.
    both = cli(
        "--json",
        "--public-key",
        str(public),
        str(siem),
        str(write_lines(tmp_path / "host.jsonl", lines)),
    )
    report = orjson.loads(both.stdout)
    assert both.returncode == EXIT_VERIFIED
    assert report["chains"][0]["duplicates"] == len(lines)
    sorted_keys = [orjson.dumps(orjson.loads(line), option=orjson.OPT_SORT_KEYS) for line in lines]
    write_lines(siem, sorted_keys)
    assert cli("--public-key", str(public), str(siem)).returncode == EXIT_PROBLEM


def test_findings_in_the_tail_and_on_bad_lines(tmp_path: Path) -> None:
    """conflicting_duplicate in the unsealed tail; malformed lines; a torn last line."""
    from verifykit import run_verify, where

    key = Ed25519PrivateKey.generate()
    writer = FormatWriter(key=key, every=10)
    writer.entry(25)  # seq 0 started, checkpoints at 11 and 22, tail 23..27
    lines = list(writer.lines)
    other = lines[-1].replace(b'"text":"x', b'"text":"y', 1)
    trail = write_lines(tmp_path / "audit.jsonl", [*lines, other])
    report = run_verify([trail], keys=[key])
    # The one read second is named (nothing shows which of the two is real).
    assert where(report) == [("conflicting_duplicate", "audit.jsonl", len(lines) + 1)]
    assert report.exit_code == EXIT_PROBLEM
    trail.write_bytes(b"".join(line + b"\n" for line in lines[:5]) + b"not json\n" + lines[5][:40])
    report = run_verify([trail], keys=[key])
    assert where(report) == [("malformed", "audit.jsonl", 6)]
    # A last line without its newline is what a live file shows mid-write: a notice.
    assert [(n.kind, n.line) for n in report.notices] == [("torn", 7)]
    trail.write_bytes(b"".join(line + b"\n" for line in lines[:5]) + lines[5][:40])
    report = run_verify([trail], keys=[key])
    assert report.all_problems == []
    assert report.exit_code == EXIT_INCOMPLETE


def test_a_checkpoint_signed_by_another_key_than_the_chains_start(tmp_path: Path) -> None:
    """Both keys are trusted, but the chain's started entry named the first one."""
    from verifykit import run_verify

    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    writer = FormatWriter(key=first, every=10)
    replacement = FormatWriter(key=second)
    writer.key, writer.key_id = second, replacement.key_id
    writer.entry(15)
    report = run_verify(
        [write_lines(tmp_path / "audit.jsonl", writer.close())], keys=[first, second]
    )
    assert report.exit_code == EXIT_PROBLEM
    assert {p.kind for p in report.all_problems} == {"unknown_key"}
    assert "the chain started with" in report.all_problems[0].message


def test_an_entry_that_raced_close_is_a_notice_and_any_other_unchained_a_problem(
    tmp_path: Path,
) -> None:
    """The writer delivers an entry that reached it after the final checkpoint without a chain."""
    from verifykit import iso, run_verify

    key = Ed25519PrivateKey.generate()
    writer = FormatWriter(key=key, every=10)
    writer.entry(15)
    lines = writer.close()
    final = orjson.loads(lines[-1])
    late = orjson.loads(lines[-2])
    del late["chain"]
    late["event_id"] = "01a22057-2735-729e-bb1e-512c3d4713a0"
    late["timestamp"] = final["timestamp"]
    trail = write_lines(tmp_path / "audit.jsonl", [*lines, orjson.dumps(late)])
    report = run_verify([trail], keys=[key])
    assert report.exit_code == EXIT_INCOMPLETE
    assert report.all_problems == []
    assert [(n.kind, n.line) for n in report.notices] == [("unchained", len(lines) + 1)]
    late["timestamp"] = iso(writer.t - 3600)  # an hour earlier: no close explains it
    write_lines(trail, [*lines, orjson.dumps(late)])
    report = run_verify([trail], keys=[key])
    assert report.exit_code == EXIT_PROBLEM
    assert [(p.kind, p.line) for p in report.all_problems] == [("unchained", len(lines) + 1)]


def test_a_reader_that_goes_away_is_no_error(tmp_path: Path) -> None:
    """``verify ... | head``: no traceback, and the exit code still gives the verdict."""
    other = write_public_key(Ed25519PrivateKey.generate(), tmp_path / "other.pub")
    lines: list[bytes] = []
    for _ in range(30):  # 30 chains x 100 unknown-key findings: far more than a pipe holds
        writer = FormatWriter(key=Ed25519PrivateKey.generate(), every=1)
        writer.entry(100)
        lines.extend(writer.close())
    trail = write_lines(tmp_path / "audit.jsonl", lines)
    inherited = {k: os.environ[k] for k in ("PATH", "PYTHONPATH") if k in os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "auditkeep", "verify", "--public-key", str(other), str(trail)],
        env=inherited,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    assert proc.stdout.read(10)
    proc.stdout.close()
    stderr = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(timeout=60) == EXIT_PROBLEM
    assert stderr == b""
