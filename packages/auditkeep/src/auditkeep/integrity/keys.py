"""Ed25519 signing keys for checkpoints: generate, load (owner-only files), describe.

The private key is PEM PKCS#8, exactly what ``openssl genpkey -algorithm
ed25519`` writes; the public key is PEM SubjectPublicKeyInfo
(``openssl pkey -pubout``), the file ``auditkeep verify --public-key`` reads.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from auditkeep.exceptions import ConfigError
from auditkeep.integrity import _format
from auditkeep.integrity._private import SIGNING_KEY_VARIABLE, read_private, write_new


@dataclass(frozen=True, slots=True)
class SigningKey:
    """A loaded private key; its ``repr`` shows the key id only."""

    private: Ed25519PrivateKey = field(repr=False)
    key_id: str
    fingerprint: str
    secret_texts: tuple[str, ...] = field(repr=False, default=())
    """Spellings of the private key to register with the redactor (never logged)."""

    def sign(
        self, message: bytes, previous: bytes | None = None, timeout_s: float | None = None
    ) -> str:
        """The signature of ``message``, base64 (standard alphabet, padded).

        ``previous`` (the chain's last checkpoint line) and ``timeout_s`` matter
        to a separate signer only (``RemoteSigner``).
        """
        return base64.b64encode(self.private.sign(message)).decode("ascii")


def public_raw(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _secret_texts(pem: bytes, private: Ed25519PrivateKey) -> tuple[str, ...]:
    raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    body = [
        line.strip()
        for line in pem.decode("ascii", "replace").splitlines()
        if line.strip() and not line.startswith("-----")
    ]
    texts = {"".join(body), *body, raw.hex(), base64.b64encode(raw).decode("ascii").rstrip("=")}
    return tuple(t for t in texts if len(t) >= 16)


def load_signing_key(path: Path, variable: str = SIGNING_KEY_VARIABLE) -> SigningKey:
    """The private key in ``path``; ``ConfigError`` (naming ``variable``) if it is unusable."""
    pem = read_private(path, variable)
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # Not the library's message: it can quote part of the input.
        raise ConfigError(
            variable,
            f"{str(path)!r} is not an unencrypted PEM PKCS#8 private key "
            "(make one with 'auditkeep keygen FILE' or 'openssl genpkey -algorithm ed25519')",
        ) from None
    except Exception:  # noqa: BLE001 - any parse failure, without its text
        raise ConfigError(variable, f"{str(path)!r} cannot be read as a private key") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise ConfigError(
            variable, f"{str(path)!r} holds a {type(private).__name__}; an Ed25519 key is needed"
        )
    raw = public_raw(private.public_key())
    return SigningKey(
        private, _format.key_id(raw), _format.fingerprint(raw), _secret_texts(pem, private)
    )


def generate(out: Path) -> tuple[Path, str]:
    """Write a new private key to ``out`` (0600) and its public key to ``out.pub``.

    Returns the public key's path and key id. Refuses to replace either file
    (``FileExistsError``).
    """
    pub = out.with_name(out.name + ".pub")
    if pub.exists():
        raise FileExistsError(str(pub))
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = private.public_key()
    write_new(out, pem, 0o600)
    write_new(
        pub,
        public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        0o644,
    )
    return pub, _format.key_id(public_raw(public))
