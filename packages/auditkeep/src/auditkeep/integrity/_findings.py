"""What ``auditkeep verify`` reports: findings, per-chain and whole reports, options.

The exit codes live here too (``VerifyReport.exit_code``); docs/integrity-verify.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

# Exit codes (docs/integrity-verify.md).
EXIT_VERIFIED: Final = 0
EXIT_PROBLEM: Final = 1
EXIT_USAGE: Final = 2
EXIT_INCOMPLETE: Final = 3

MAX_LISTED: Final = 100
"""Problems (and notices) listed per chain and kind; the rest are counted."""


# Problem kinds that make the exit 1. Notices and "incomplete" findings do not.
PROBLEM_KINDS: Final = (
    "modified",
    "deleted",
    "inserted",
    "conflicting_duplicate",
    "forged",
    "bad_signature",
    "missing_signature",
    "unknown_key",
    "bad_seal",
    "seal_epoch_mismatch",
    "malformed",
    "unchained",
    "unreadable",
    "reordered",  # only with --strict-order
)


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding, at the line that shows it (1-based), when there is one."""

    kind: str
    message: str
    file: str | None = None
    line: int | None = None
    chain_id: str | None = None
    seq: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "message": self.message,
            "file": self.file,
            "line": self.line,
            "chain_id": self.chain_id,
            "seq": self.seq,
        }


@dataclass(slots=True)
class ChainReport:
    """What was found about one chain."""

    chain_id: str
    first_seq: int
    last_seq: int
    entries: int
    duplicates: int
    checkpoints: int
    verified_checkpoint_seq: int | None
    """``chain.seq`` of the last checkpoint up to which everything verified, if any."""
    verified_through_seq: int | None
    """The last entry ``seq`` that checkpoint covers."""
    unsealed_tail: int
    """Entries (not counting checkpoints) after the last verified checkpoint."""
    closed: bool
    started: bool
    """Seq 0 (``auditkeep.chain.started``) is in the inputs."""
    key_id: str | None
    seal: str | None
    pid: int | None
    status: str
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)
    omitted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "status": self.status,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "entries": self.entries,
            "duplicates": self.duplicates,
            "checkpoints": self.checkpoints,
            "verified_checkpoint_seq": self.verified_checkpoint_seq,
            "verified_through_seq": self.verified_through_seq,
            "unsealed_tail": self.unsealed_tail,
            "closed": self.closed,
            "started": self.started,
            "key_id": self.key_id,
            "seal": self.seal,
            "pid": self.pid,
            "problems": [problem.as_dict() for problem in self.problems],
            "notices": [notice.as_dict() for notice in self.notices],
            "omitted": self.omitted,
        }


@dataclass(slots=True)
class VerifyReport:
    """The whole verification: per chain, and what belongs to no chain."""

    files: list[str]
    lines: int = 0
    chains: list[ChainReport] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    notices: list[Problem] = field(default_factory=list)
    omitted: int = 0
    signatures_checked: bool = False
    seal_checked: bool = False
    incomplete: bool = False
    """Something outside every chain is not vouched for (an entry that raced close())."""
    seconds: float = 0.0

    @property
    def all_problems(self) -> list[Problem]:
        found = list(self.problems)
        for chain in self.chains:
            found.extend(chain.problems)
        return found

    @property
    def exit_code(self) -> int:
        if self.problems or self.omitted or any(c.problems or c.omitted for c in self.chains):
            return EXIT_PROBLEM
        if not self.chains:
            return EXIT_PROBLEM
        if self.incomplete or any(chain.status != "verified" for chain in self.chains):
            return EXIT_INCOMPLETE
        return EXIT_VERIFIED

    def as_dict(self) -> dict[str, Any]:
        return {
            "result": {EXIT_VERIFIED: "verified", EXIT_PROBLEM: "problems"}.get(
                self.exit_code, "incomplete"
            ),
            "exit_code": self.exit_code,
            "files": self.files,
            "lines": self.lines,
            "signatures_checked": self.signatures_checked,
            "seal_checked": self.seal_checked,
            "seconds": round(self.seconds, 3),
            "chains": [chain.as_dict() for chain in self.chains],
            "problems": [problem.as_dict() for problem in self.problems],
            "notices": [notice.as_dict() for notice in self.notices],
            "omitted": self.omitted,
        }


@dataclass(frozen=True, slots=True)
class SealSeed:
    """The off-host seal seed (``keygen --seal OUT`` writes it to ``OUT.verify``)."""

    seed: bytes = field(repr=False)
    t0: int
    epoch_s: int

    def epoch_window(self, epoch: int) -> tuple[float, float]:
        start = self.t0 + epoch * self.epoch_s
        return float(start), float(start + self.epoch_s)


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    public_keys: dict[str, Any] = field(default_factory=dict)
    """key id -> ``Ed25519PublicKey``."""
    seal: SealSeed | None = None
    strict_order: bool = False
    allow_unchained: bool = False
    now: float | None = None
    """The verifier's clock (tests pin it); seal epochs beyond it are refused."""


# One entry as read: (seq, digest, prev digest or None, file index, line, parsed or None).
