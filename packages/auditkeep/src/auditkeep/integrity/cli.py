"""``auditkeep keygen``: a checkpoint signing key pair, or a forward-secure seal.

Exit codes: 0 written, 2 usage error (a file exists already, a folder is missing).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from auditkeep._help import examples
from auditkeep.integrity import _format
from auditkeep.integrity.seal import MAX_EPOCH_S, generate_seal


def _cmd_keygen(args: argparse.Namespace) -> int:
    out = Path(args.out)
    try:
        if args.seal:
            verify = generate_seal(out, epoch_s=args.epoch_s)
            print(f"wrote {out} (the host's seal state, 0600: AUDIT_LOG_SEAL_KEY_FILE)")
            print(
                f"wrote {verify} (the seed: move it OFF this host, keep it for "
                "'auditkeep verify --seal-key'; whoever holds it can re-seal any epoch)"
            )
            return 0
        try:
            from auditkeep.integrity.keys import generate
        except ImportError:
            print(
                "auditkeep keygen: needs cryptography: pip install 'auditkeep[integrity]'",
                file=sys.stderr,
            )
            return 2
        pub, key_id = generate(out)
    except FileExistsError as exc:
        name = exc.filename if exc.filename is not None else str(exc)
        print(f"auditkeep keygen: {name} exists; refusing to replace a key", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"auditkeep keygen: cannot write {str(out)!r}: {exc.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {out} (private key, 0600: AUDIT_LOG_SIGNING_KEY_FILE)")
    print(f"wrote {pub} (public key, key id {key_id}: keep a copy off this host for verify)")
    return 0


def _cmd_signer(args: argparse.Namespace) -> int:
    import signal

    from auditkeep.exceptions import ConfigError

    try:
        from auditkeep.integrity.keys import load_signing_key
        from auditkeep.integrity.signer import SignerServer
    except ImportError:
        print("auditkeep signer: needs cryptography: pip install 'auditkeep[integrity]'",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        key = load_signing_key(Path(args.key), "--key")
        state = Path(args.state) if args.state else None
        server = SignerServer(key, Path(args.socket), mode=args.mode, state=state)
    except ConfigError as exc:
        print(f"auditkeep signer: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"auditkeep signer: cannot listen on {args.socket!r}: {exc.strerror}",
              file=sys.stderr)  # fmt: skip
        return 2

    def stop(signum: int, frame: object) -> None:
        import threading

        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"auditkeep signer: key id {key.key_id}, listening on {args.socket}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        Path(args.socket).unlink(missing_ok=True)
    return 0


def _mode(text: str) -> int:
    if len(text) > 4 or any(c not in "01234567" for c in text) or int(text, 8) & 0o7:
        raise argparse.ArgumentTypeError("octal, without bits for others, e.g. 660 or 600")
    return int(text, 8)


def _epoch_s(text: str) -> int:
    if len(text) > 12 or not text.isdigit() or not 1 <= int(text) <= MAX_EPOCH_S:
        raise argparse.ArgumentTypeError(f"expected whole seconds, 1 to {MAX_EPOCH_S}")
    return int(text)


def register(sub: Any) -> None:
    """Add ``keygen`` and ``signer`` to the ``auditkeep`` command's subparsers."""
    p = sub.add_parser(
        "keygen",
        help="make a checkpoint signing key (OUT, OUT.pub) or a forward seal (--seal)",
        description=(
            "Write a new Ed25519 private key (PEM PKCS#8, mode 0600) to OUT and its public key "
            "to OUT.pub; with --seal, a forward-secure seal: OUT (host state) and OUT.verify "
            "(the seed, for the verifier only). Never replaces an existing file."
        ),
        **examples(
            "auditkeep keygen /etc/agent/audit-signing.pem",
            "auditkeep keygen --seal /var/lib/agent/seal   # then move seal.verify off the host",
            notes=(
                "openssl genpkey -algorithm ed25519 -out KEY writes a key that works too "
                "(chmod 600 KEY; openssl pkey -in KEY -pubout -out KEY.pub). "
                "Exit codes: 0 written, 2 usage error."
            ),
        ),
    )
    p.add_argument("out", metavar="OUT", help="the file to write (OUT.pub or OUT.verify beside it)")
    p.add_argument("--seal", action="store_true", help="a forward-secure seal instead of a key")
    p.add_argument(
        "--epoch-s",
        type=_epoch_s,
        default=_format.DEFAULT_SEAL_EPOCH_S,
        help=f"seal epoch length in seconds (default {_format.DEFAULT_SEAL_EPOCH_S})",
    )
    p.set_defaults(func=_cmd_keygen)

    p = sub.add_parser(
        "signer",
        help="hold the checkpoint signing key in its own process (AUDIT_LOG_SIGNER_SOCKET)",
        description=(
            "Sign checkpoints for loggers that connect to SOCKET, holding the key in this "
            "process: run it as another user than the service, which then sets "
            "AUDIT_LOG_SIGNER_SOCKET=SOCKET and holds no key. Each chain's checkpoints are "
            "signed only in order, each linked to the last one signed. Runs until SIGTERM."
        ),
        **examples(
            "auditkeep signer --key /etc/signer/key.pem --socket /run/signer/sock "
            "--state /var/lib/signer/ledger",
            notes=(
                "The socket is created with --mode (default 660): give the service's user "
                "the socket's group. Exit codes: 0 stopped, 2 usage error (key, socket)."
            ),
        ),
    )
    p.add_argument("--key", required=True, help="the Ed25519 private key (PEM PKCS#8, 0600)")
    p.add_argument("--socket", required=True, help="the unix socket to listen on")
    p.add_argument("--mode", type=_mode, default=0o660, help="the socket's mode (default 660)")
    p.add_argument(
        "--state",
        help="a file (0600) where it records what it signed, so a restart forgets nothing",
    )
    p.set_defaults(func=_cmd_signer)
