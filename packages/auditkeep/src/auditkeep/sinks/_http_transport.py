"""The one HTTP(S) transport of the sinks that POST batches (``http``, ``otlp``).

What both sinks share, so that there is one retry policy and one place that handles
credentials: the httpx client (timeouts, TLS with a CA bundle and an optional client
certificate, TCP_NODELAY, no redirects), one POST that turns every transport error into
``RETRY``, the classification of a non-2xx answer, and the scrubbing of every text that
leaves the sink. What a 2xx answer means is the sink's own business (Elasticsearch's
``_bulk`` item errors, OTLP's partial success).

The classification (the http sink's module docstring explains why audit data is
retried on every transient error):

- connection error, timeout, TLS error, 408, 429, 5xx: ``RETRY``, with ``retry_after_s``
  from ``Retry-After`` (``auditkeep.parse_retry_after``: seconds or HTTP-date);
- any other status (400, 401, 403, 404, 413, 3xx): ``FAILURE``, so the pipeline
  dead-letters the batch.
"""

from __future__ import annotations

import gzip as gzip_module
import os
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from auditkeep._env import env_bool, env_seconds
from auditkeep._optional import missing_dependency
from auditkeep._retry_after import parse_retry_after
from auditkeep.exceptions import ConfigError
from auditkeep.redact import REDACTED, default_redactor
from auditkeep.typing import SinkResult

if TYPE_CHECKING:
    import httpx

MAX_TIMEOUT_S: Final = 300.0
"""Upper bound of the ``*_TIMEOUT_S`` settings (a typo must not mean hours)."""
RETRY_STATUSES: Final = frozenset({408, 429})
"""Besides every 5xx: the statuses that are retried."""
REASON_CHARS: Final = 200
CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
HEADER_NAME: Final = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


@dataclass(frozen=True, slots=True)
class Tls:
    """How the server is verified and how the client proves itself.

    ``verify``: True (the system's CAs), False (not verified) or a CA bundle path (file
    or directory). ``client_cert``: (certificate PEM, key PEM) for mutual TLS, or None.
    """

    verify: bool | str = True
    client_cert: tuple[str, str] | None = None

    def describe(self) -> str:
        if isinstance(self.verify, str):
            text = f"verified with {self.verify}"
        else:
            text = "verified with the system's CAs" if self.verify else "NOT verified"
        if self.client_cert is not None:
            text += f", client certificate {self.client_cert[0]}"
        return text

    def context(self) -> ssl.SSLContext | bool:
        if self.client_cert is None and isinstance(self.verify, bool):
            return self.verify  # True: httpx's default trust store; False: no verification
        if isinstance(self.verify, str):
            if os.path.isdir(self.verify):
                context = ssl.create_default_context(capath=self.verify)
            else:
                context = ssl.create_default_context(cafile=self.verify)
        else:
            context = ssl.create_default_context()
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            context.load_cert_chain(*self.client_cert)
        return context


class HttpTransport:
    """One httpx client and the rules for what its answers mean; see the module docstring.

    Args:
        endpoint: the URL every batch is POSTed to (checked by ``check_endpoint``).
        headers: request headers; names are checked, values are never shown anywhere
            and are scrubbed from every error text.
        extra, feature: what ``MissingDependencyError`` names when httpx is missing.
        hints: advice added to a refusal by status (e.g. which variable to check).
        transport: an httpx transport (tests use ``httpx.MockTransport``).

    Raises:
        ValueError: a header name is invalid or a value holds control characters, or a
            timeout is not positive.
        MissingDependencyError: httpx is not installed.
        OSError, ssl.SSLError: the CA bundle or the client certificate cannot be loaded.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        headers: Mapping[str, str],
        tls: Tls,
        connect_timeout_s: float,
        read_timeout_s: float,
        extra: str,
        feature: str,
        hints: Mapping[int, str],
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not (connect_timeout_s > 0 and read_timeout_s > 0):
            raise ValueError("connect_timeout_s and read_timeout_s must be positive")
        self.endpoint = endpoint
        self.tls = tls
        self._hints = dict(hints)
        header_map = dict(headers)
        for key, value in header_map.items():
            if not HEADER_NAME.match(key):
                raise ValueError(f"invalid header name {key!r}")
            if CONTROL.search(value):
                raise ValueError(f"the value of header {key!r} holds control characters")
        self.header_names = sorted(header_map)
        # Every configured header value is scrubbed from error texts, secret or not.
        self._scrub_values = sorted(
            (v for v in header_map.values() if len(v) >= 4), key=len, reverse=True
        )
        self._scrub_values += [
            part
            for v in header_map.values()
            for part in v.split()[1:]
            if len(part) >= 4 and part not in self._scrub_values
        ]
        try:
            import httpx
        except ImportError as exc:
            raise missing_dependency(exc, module="httpx", extra=extra, feature=feature) from None

        timeout = httpx.Timeout(
            connect=connect_timeout_s,
            read=read_timeout_s,
            write=read_timeout_s,
            pool=connect_timeout_s,
        )
        header_map.setdefault("User-Agent", f"auditkeep/0.1.0 httpx/{httpx.__version__}")
        context = tls.context()
        if transport is None:
            # Headers and body leave in separate writes: without TCP_NODELAY, Nagle's
            # algorithm and the receiver's delayed ACK can add ~40 ms to every request.
            transport = httpx.HTTPTransport(
                verify=context,
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            )
        self.client = httpx.Client(
            headers=header_map,
            timeout=timeout,
            verify=context,  # for the proxy transports httpx mounts from HTTPS_PROXY & co
            follow_redirects=False,
            transport=transport,
        )

    def post(self, body: bytes, content_type: str, *, gzip: bool) -> httpx.Response | SinkResult:
        """POST one body: the response, or a ``RETRY`` when no answer came."""
        import httpx

        headers = {"Content-Type": content_type}
        if gzip:
            body = gzip_module.compress(body, compresslevel=5, mtime=0)
            headers["Content-Encoding"] = "gzip"
        try:
            return self.client.post(self.endpoint, content=body, headers=headers)
        except httpx.TimeoutException as exc:
            return SinkResult.retry(f"timeout ({type(exc).__name__}) talking to {self.where()}")
        except httpx.HTTPError as exc:
            where = self.where()
            return SinkResult.retry(self.scrub(f"{type(exc).__name__} talking to {where}: {exc}"))
        except RuntimeError as exc:  # the client was closed under a hanging request
            return SinkResult.retry(self.scrub(f"{type(exc).__name__}: {exc}"))

    def refusal(self, response: httpx.Response, reason: str, *, variable: str) -> SinkResult:
        """The result of a non-2xx answer; ``reason`` is the destination's own text.

        ``variable`` names the endpoint setting in the advice about redirects.
        """
        status = response.status_code
        text = f"HTTP {status} {response.reason_phrase}".rstrip()
        if reason:
            text += f": {reason}"
        if status in RETRY_STATUSES or status >= 500:
            after = parse_retry_after(response.headers.get("Retry-After"))
            return SinkResult.retry(text, after_s=after)
        if 300 <= status < 400:
            text += f"; redirects are not followed: set {variable} to the final URL"
        elif status in self._hints:
            text += f"; {self._hints[status]}"
        return SinkResult.failure(text)

    def body_text(self, response: httpx.Response) -> str:
        """The start of the answer's body as scrubbed text (a reason is a courtesy)."""
        try:
            # Cut beyond the scrubber's window: the scrubber, not this cut,
            # decides what is kept, so no secret is split before it is scrubbed.
            size = 4 * default_redactor.window(REASON_CHARS) + 4
            text = response.content[:size].decode("utf-8", "replace")
        except Exception:  # noqa: BLE001 - a reason is a courtesy; never fail over it
            return ""
        return self.scrub(text)

    def scrub(self, text: str) -> str:
        """Scrubbed (configured header values too), then cut to ``REASON_CHARS``."""
        text = CONTROL.sub(" ", text).strip()
        return default_redactor.scrub_then_cut(text, REASON_CHARS, *self._scrub_values)

    def where(self) -> str:
        return safe_url(self.endpoint)

    def close(self) -> None:
        self.client.close()


def check_endpoint(endpoint: str, *, default_path: str | None = None) -> str:
    """An ``http(s)://`` URL with a host and no fragment; an empty path gets ``default_path``.

    Raises:
        ValueError: the URL is not one.
    """
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("endpoint must be an http:// or https:// URL with a host")
    if parts.fragment:
        raise ValueError("endpoint must not have a #fragment")
    if parts.path in ("", "/") and default_path is not None:
        return urllib.parse.urlunsplit(parts._replace(path=default_path))
    return endpoint


def safe_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = REDACTED + "@" + netloc.rsplit("@", 1)[1]
    return default_redactor.redact(urllib.parse.urlunsplit(parts._replace(netloc=netloc)))


def read_secret_file(name: str, path: str, what: str = "the header value") -> str:
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        raise ConfigError(name, f"file {path!r} does not exist; mount the secret there") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            name, f"cannot read {path!r} ({type(exc).__name__}); make it readable UTF-8 text"
        ) from None
    if not value:
        raise ConfigError(name, f"file {path!r} is empty; it must hold {what}")
    return value


def endpoint_from_env(env: Mapping[str, str], name: str, example: str) -> str:
    """The URL in ``name``: required, http(s) with a host, no fragment.

    Raises:
        ConfigError: naming ``name``.
    """
    endpoint = env.get(name, "").strip()
    if not endpoint:
        raise ConfigError(name, f"required by this destination: set the URL, e.g. {example}")
    parts = urllib.parse.urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            name, f"expected an http:// or https:// URL with a host, got {safe_url(endpoint)!r}"
        )
    if parts.fragment:
        raise ConfigError(name, "remove the #fragment from the URL")
    return endpoint


def tls_from_env(
    env: Mapping[str, str],
    *,
    verify_var: str,
    ca_var: str,
    cert_var: str | None = None,
    key_var: str | None = None,
) -> Tls:
    """TLS settings from the named variables (the files must exist; they are loaded later).

    Raises:
        ConfigError: naming the variable to fix.
    """
    verify_tls = env_bool(env, verify_var, True)
    ca_bundle = env.get(ca_var, "").strip()
    verify: bool | str = verify_tls
    if ca_bundle:
        if not verify_tls:
            raise ConfigError(
                ca_var, f"a CA bundle is set but {verify_var}=false; remove one of them"
            )
        if not os.path.exists(ca_bundle):
            raise ConfigError(ca_var, f"{ca_bundle!r} does not exist; give a PEM file")
        verify = ca_bundle
    cert = env.get(cert_var, "").strip() if cert_var else ""
    key = env.get(key_var, "").strip() if key_var else ""
    if bool(cert) != bool(key):
        assert cert_var is not None
        assert key_var is not None
        missing = key_var if cert else cert_var
        raise ConfigError(missing, f"set both {cert_var} and {key_var} for a client certificate")
    for var, path in ((cert_var, cert), (key_var, key)):
        if path and not os.path.isfile(path):
            assert var is not None
            raise ConfigError(var, f"{path!r} does not exist; give a PEM file")
    return Tls(verify, (cert, key) if cert else None)


def timeouts_from_env(
    env: Mapping[str, str], *, connect_var: str, read_var: str
) -> tuple[float, float]:
    """(connect, read) timeouts in seconds from the named variables (defaults 5 s and 10 s)."""
    return (
        env_seconds(env, connect_var, 5.0, maximum=MAX_TIMEOUT_S),
        env_seconds(env, read_var, 10.0, maximum=MAX_TIMEOUT_S),
    )


def tls_load_error(tls: Tls, exc: Exception, *, ca_var: str, cert_var: str | None) -> ConfigError:
    """The ``ConfigError`` for a CA bundle or client certificate that does not load."""
    kind = type(exc).__name__
    if tls.client_cert is not None and cert_var is not None:
        # The CA bundle loads first; a bundle that loads alone points at the certificate.
        try:
            Tls(tls.verify).context()
        except (OSError, ssl.SSLError):
            pass
        else:
            return ConfigError(
                cert_var,
                f"cannot load the client certificate and key ({kind}); give PEM files that match",
            )
    bundle = tls.verify if isinstance(tls.verify, str) else ""
    return ConfigError(
        ca_var, f"cannot load {bundle!r} ({kind}); give a PEM file of CA certificates"
    )


class PostingSink:
    """The Sink protocol part both HTTP sinks share: batches POSTed one request after
    another, the first refusal returned, nothing kept between calls, closed once.

    A subclass sets ``endpoint``, ``gzip``, ``_http`` (an ``HttpTransport``) and calls
    ``PostingSink.__init__``; it yields one sending step per request (``_sends``) and
    names its format (``_describe_parts``).
    """

    endpoint: str
    gzip: bool
    _http: HttpTransport

    def __init__(self) -> None:
        self._closed = False
        self._lock = threading.Lock()

    def _sends(self, lines: Sequence[bytes]) -> Iterator[Callable[[], SinkResult]]:
        raise NotImplementedError

    def _describe_parts(self) -> list[str]:
        raise NotImplementedError

    def describe(self) -> str:
        """Where and how batches go, for ``auditkeep check-config``: never a header's value.

        .. versionadded:: 0.1.0
        """
        parts = self._describe_parts()
        if self.endpoint.startswith("https:"):
            parts.append(f"TLS {self._http.tls.describe()}")
        headers = ", ".join(self._http.header_names) or "none"
        parts.append(f"headers: {headers} (values not shown)")
        return f"POST {safe_url(self.endpoint)} ({'; '.join(parts)})"

    def write_batch(self, lines: Sequence[bytes]) -> SinkResult:
        if self._closed:
            return SinkResult.retry("sink closed")
        if not lines:
            return SinkResult.SUCCESS
        try:
            for send in self._sends(lines):
                result = send()
                if not result.ok:
                    return result
        except Exception as exc:  # noqa: BLE001 - a sink never raises into the worker
            return SinkResult.retry(self._http.scrub(f"{type(exc).__name__}: {exc}"))
        return SinkResult.SUCCESS

    def flush(self, timeout_s: float) -> bool:
        # Nothing is kept between calls: each write_batch finished its requests.
        return True

    def close(self, timeout_s: float) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._http.close()
