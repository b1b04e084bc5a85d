"""Batched JSON over HTTP(S) to a SIEM intake: NDJSON, JSON array, Splunk HEC, Elasticsearch
``_bulk`` and Grafana Loki.

Retry decision (written down as STYLE.md §3 asks): this sink makes **one attempt per
``write_batch``** and says what happened; it never sleeps, loops or keeps a batch. The
delivery pipeline owns retries: it keeps a refused batch in the spool and tries again with
capped exponential backoff and full jitter, and it honours the result's ``retry_after_s``
when the destination asked for a pause. Audit data is retried on any transient error, as the
Kubernetes audit webhook argues, because an outage must lose nothing; only an answer that
can never change (a 4xx other than 408 and 429) ends the attempts, and then the batch is
dead-lettered, not dropped. The classification:

=================================================  ==========================================
answer                                             result
=================================================  ==========================================
2xx                                                ``SUCCESS`` (see ``_bulk`` below)
connection error, timeout, TLS error, 408, 429,    ``RETRY``, with ``retry_after_s`` from
5xx                                                ``Retry-After`` (seconds or HTTP-date)
any other status (400, 401, 403, 404, 413, 3xx)    ``FAILURE``: the pipeline dead-letters it
=================================================  ==========================================

Elasticsearch and OpenSearch answer ``_bulk`` with 200 even when documents were refused,
so the per-item statuses decide: an item that already exists (409, because ``_id`` is the
``event_id``, which makes a redelivered entry idempotent) counts as delivered, 429 and 5xx
items make the batch ``RETRY`` (the items already stored come back as 409 next time), and
any other item error makes it ``FAILURE``.

A batch is split into several requests so that no body exceeds ``max_body_bytes`` (measured
before gzip; an entry larger than that goes alone). The requests are sent in order and the
first one that does not succeed decides the batch result, so after a partial success the
whole batch is sent again: delivery is at-least-once, and receivers deduplicate by
``event_id`` (Elasticsearch does it by itself).

Every answer carries its ``reason`` (the status and a short text, e.g. the SIEM's own
error) in the ``SinkResult``. Credentials travel only in request headers. Their values
never appear in ``repr``, a ``reason`` or exceptions: every error text is scrubbed of
the configured header values and by the secret redactor, and only then cut short.

The client, TLS, the POST and the classification of a refusal are shared with the otlp
sink (``sinks/_http_transport.py``): one retry policy for both.

httpx is imported when the first sink is built, so ``import auditkeep`` never needs it
(install the ``http`` extra; without it, building the sink raises
``auditkeep.MissingDependencyError`` naming the extra).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import functools
import re
import ssl
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar, Final

import orjson

from auditkeep._env import env_bool, env_int
from auditkeep._retry_after import parse_retry_after
from auditkeep.exceptions import ConfigError, MissingDependencyError
from auditkeep.redact import register_secret
from auditkeep.sinks._http_bodies import _encoder_for
from auditkeep.sinks._http_transport import (
    CONTROL,
    HEADER_NAME,
    HttpTransport,
    PostingSink,
    Tls,
    check_endpoint,
    endpoint_from_env,
    read_secret_file,
    safe_url,
    timeouts_from_env,
    tls_from_env,
    tls_load_error,
)
from auditkeep.typing import SinkResult

if TYPE_CHECKING:
    import httpx

__all__ = ["FORMATS", "HttpSink", "http_sink_from_env"]

FORMATS: Final = ("ndjson", "json_array", "splunk_hec", "elasticsearch_bulk", "loki")
"""The body formats (``AUDIT_LOG_HTTP_FORMAT``)."""

DEFAULT_MAX_BODY_BYTES: Final = 1_048_576
MIN_MAX_BODY_BYTES: Final = 1024
MAX_MAX_BODY_BYTES: Final = 256 << 20
# Where an endpoint given without a path (``https://splunk:8088``) sends each preset.
PRESET_PATHS: Final = {
    "splunk_hec": "/services/collector/event",
    "elasticsearch_bulk": "/_bulk",
    "loki": "/loki/api/v1/push",
}
_ES_INDEX_FORBIDDEN: Final = re.compile(r'[\\/*?"<>| ,#:A-Z]')
_CREDENTIAL_HEADERS: Final = frozenset({"authorization", "proxy-authorization"})
_HINTS: Final = {
    401: "check AUDIT_LOG_HTTP_AUTHORIZATION",
    403: "check AUDIT_LOG_HTTP_AUTHORIZATION and the token's permissions",
    404: "check the path of AUDIT_LOG_HTTP_ENDPOINT",
    413: "lower AUDIT_LOG_HTTP_MAX_BODY_BYTES",
}


class HttpSink(PostingSink):
    """POSTs each batch to an HTTP(S) endpoint as one or more JSON bodies.

    Args:
        endpoint: ``http://`` or ``https://`` URL. For the presets an empty path means the
            intake's usual one (``/services/collector/event``, ``/_bulk``,
            ``/loki/api/v1/push``).
        format: ``ndjson`` (one entry per line), ``json_array``, ``splunk_hec`` (HEC event
            envelopes), ``elasticsearch_bulk`` (``create`` actions with ``_id`` =
            ``event_id``) or ``loki`` (push API, JSON).
        headers: extra request headers, e.g. ``{"Authorization": "Splunk <token>"}``.
            Values are never shown in ``repr`` or errors.
        gzip: compress each body (``Content-Encoding: gzip``).
        verify: verify the server's TLS certificate (default), or the path of a CA bundle
            file (or directory) to verify it with; ``False`` turns verification off.
        connect_timeout_s: limit for opening a connection.
        read_timeout_s: limit for sending the body and for each read of the answer.
        max_body_bytes: the largest body (before compression) of one request.
        index: the Elasticsearch index (``_index`` of each action) or the Splunk index.
        source: Splunk ``source`` of each event.
        sourcetype: Splunk ``sourcetype`` of each event.
        host: Splunk ``host`` of each event (default: left to HEC).
        loki_labels: static Loki stream labels; ``service`` is added from each entry.
        transport: an httpx transport (tests use ``httpx.MockTransport``).

    Raises:
        ValueError: an argument is out of range, or the combination is impossible.
        MissingDependencyError: httpx is not installed (names the ``http`` extra).
        OSError, ssl.SSLError: the CA bundle cannot be loaded.

    .. versionadded:: 0.1.0
    """

    name: ClassVar[str] = "http"

    def __init__(
        self,
        endpoint: str,
        *,
        format: str = "ndjson",
        headers: Mapping[str, str] | None = None,
        gzip: bool = False,
        verify: bool | str = True,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        index: str | None = None,
        source: str = "auditkeep",
        sourcetype: str = "_json",
        host: str | None = None,
        loki_labels: Mapping[str, str] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {format!r}")
        if isinstance(max_body_bytes, bool) or max_body_bytes < MIN_MAX_BODY_BYTES:
            raise ValueError(f"max_body_bytes must be at least {MIN_MAX_BODY_BYTES}")
        if index is not None and format not in ("elasticsearch_bulk", "splunk_hec"):
            raise ValueError("index is only used by the elasticsearch_bulk and splunk_hec formats")
        self.endpoint = check_endpoint(endpoint, default_path=PRESET_PATHS.get(format))
        self.format = format
        self.gzip = gzip
        self.max_body_bytes = max_body_bytes
        self.index = index
        self._encoder = _encoder_for(
            format,
            index=index,
            source=source,
            sourcetype=sourcetype,
            host=host,
            loki_labels=dict(loki_labels) if loki_labels else {"job": "auditkeep"},
        )
        PostingSink.__init__(self)
        self._http = HttpTransport(
            self.endpoint,
            headers=headers or {},
            tls=Tls(verify),
            connect_timeout_s=connect_timeout_s,
            read_timeout_s=read_timeout_s,
            extra="http",
            feature="the http destination (HttpSink)",
            hints=_HINTS,
            transport=transport,
        )
        self._client = self._http.client
        self._verify = verify

    def __repr__(self) -> str:
        verify = "ca-bundle" if isinstance(self._verify, str) else self._verify
        return (
            f"HttpSink(endpoint={safe_url(self.endpoint)!r}, format={self.format!r}, "
            f"gzip={self.gzip}, verify={verify}, max_body_bytes={self.max_body_bytes}, "
            f"headers={self._http.header_names!r})"
        )

    def _describe_parts(self) -> list[str]:
        parts = [f"format {self.format}", "gzip" if self.gzip else "uncompressed"]
        if self.index is not None:
            parts.append(f"index {self.index}")
        return parts

    def _sends(self, lines: Sequence[bytes]) -> Iterator[Callable[[], SinkResult]]:
        return (functools.partial(self._post, body) for body in self.bodies(lines))

    # -- encoding -------------------------------------------------------------------

    def bodies(self, lines: Sequence[bytes]) -> Iterator[bytes]:
        """The request bodies (uncompressed) for one batch, each within ``max_body_bytes``."""
        enc = self._encoder
        limit = self.max_body_bytes
        chunk: list[tuple[str, bytes]] = []
        groups: set[str] = set()
        size = enc.overhead
        for line in lines:
            key, piece = enc.encode(line)
            cost = len(piece) + 1 + (enc.group_overhead(key) if key not in groups else 0)
            if chunk and size + cost > limit:
                yield enc.body(chunk)
                chunk, groups, size = [], set(), enc.overhead
                cost = len(piece) + 1 + enc.group_overhead(key)
            chunk.append((key, piece))
            groups.add(key)
            size += cost
        if chunk:
            yield enc.body(chunk)

    # -- one request ----------------------------------------------------------------

    def _post(self, body: bytes) -> SinkResult:
        response = self._http.post(body, self._encoder.content_type, gzip=self.gzip)
        if isinstance(response, SinkResult):
            return response
        if not 200 <= response.status_code < 300:
            reason = self._http.body_text(response)
            return self._http.refusal(response, reason, variable="AUDIT_LOG_HTTP_ENDPOINT")
        if self.format == "elasticsearch_bulk":
            return self._bulk_result(response)
        return SinkResult.SUCCESS

    def _bulk_result(self, response: httpx.Response) -> SinkResult:
        try:
            answer = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            return SinkResult.SUCCESS  # a 2xx without the usual body: accepted
        if not isinstance(answer, dict) or not answer.get("errors"):
            return SinkResult.SUCCESS
        items = answer.get("items")
        if not isinstance(items, list):
            return SinkResult.retry("_bulk answered errors=true without items")
        retry: list[tuple[int, str]] = []
        refused: list[tuple[int, str]] = []
        for item in items:
            result = next(iter(item.values()), None) if isinstance(item, dict) else None
            if not isinstance(result, dict):
                continue
            status = result.get("status")
            if not isinstance(status, int) or 200 <= status < 300 or status == 409:
                continue  # 409: the entry is already there (a redelivery), which is success
            error = result.get("error")
            kind = str(error.get("type", "")) if isinstance(error, dict) else str(error or "")
            if isinstance(error, dict) and error.get("reason"):
                kind += f" ({error['reason']})"
            (retry if status == 429 or status >= 500 else refused).append((status, kind))
        if not retry and not refused:
            return SinkResult.SUCCESS
        worst = retry or refused
        status, kind = worst[0]
        text = self._http.scrub(
            f"_bulk refused {len(retry) + len(refused)} of {len(items)} items: HTTP {status} {kind}"
        )
        if retry:
            after = parse_retry_after(response.headers.get("Retry-After"))
            return SinkResult.retry(text, after_s=after)
        return SinkResult.failure(text)


def _parse_headers(raw: str) -> dict[str, str]:
    name = "AUDIT_LOG_HTTP_HEADERS"
    headers: dict[str, str] = {}
    for item in raw.split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not HEADER_NAME.match(key):
            raise ConfigError(
                name, f"expected comma-separated Name=Value pairs, got {item.strip()!r}"
            )
        if key.lower() in _CREDENTIAL_HEADERS:
            raise ConfigError(
                name,
                f"{key} holds a credential: set AUDIT_LOG_HTTP_AUTHORIZATION_FILE (or "
                "AUDIT_LOG_HTTP_AUTHORIZATION) instead, so it is never logged",
            )
        if CONTROL.search(value):
            raise ConfigError(name, f"the value of {key} holds control characters")
        headers[key] = value
    return headers


def _authorization(env: Mapping[str, str], format: str) -> str | None:
    direct = env.get("AUDIT_LOG_HTTP_AUTHORIZATION", "").strip()
    file = env.get("AUDIT_LOG_HTTP_AUTHORIZATION_FILE", "").strip()
    if direct and file:
        raise ConfigError(
            "AUDIT_LOG_HTTP_AUTHORIZATION",
            "set either AUDIT_LOG_HTTP_AUTHORIZATION or AUDIT_LOG_HTTP_AUTHORIZATION_FILE, "
            "not both",
        )
    name = "AUDIT_LOG_HTTP_AUTHORIZATION_FILE" if file else "AUDIT_LOG_HTTP_AUTHORIZATION"
    value = read_secret_file(name, file) if file else direct
    if not value:
        if format == "splunk_hec":
            raise ConfigError(
                "AUDIT_LOG_HTTP_AUTHORIZATION_FILE",
                "Splunk HEC needs a token: put 'Splunk <token>' in a file and name it here",
            )
        return None
    if CONTROL.search(value):
        raise ConfigError(name, "the value holds control characters (a stray newline?)")
    if format == "splunk_hec" and " " not in value:
        value = f"Splunk {value}"  # a bare HEC token
    secrets = [value, *(part for part in value.split()[1:])]
    try:
        register_secret(*secrets)
    except ValueError:
        raise ConfigError(
            name, "the credential is too short to be real (fewer than 6 characters)"
        ) from None
    return value


def http_sink_from_env(env: Mapping[str, str]) -> HttpSink:
    """Build an ``HttpSink`` from ``AUDIT_LOG_HTTP_*`` settings.

    The authorization value is registered with the process-wide secret redactor, so it
    can never appear in an entry.

    Raises:
        ConfigError: a missing or invalid setting (the message names the variable and the fix).

    .. versionadded:: 0.1.0
    """
    endpoint = endpoint_from_env(
        env, "AUDIT_LOG_HTTP_ENDPOINT", "https://splunk.example:8088/services/collector/event"
    )
    parts = urllib.parse.urlsplit(endpoint)
    if parts.password and len(parts.password) >= 6:
        register_secret(urllib.parse.unquote(parts.password))  # basic auth in the URL
    format = env.get("AUDIT_LOG_HTTP_FORMAT", "").strip().lower() or "ndjson"
    if format not in FORMATS:
        raise ConfigError(
            "AUDIT_LOG_HTTP_FORMAT", f"expected one of {', '.join(FORMATS)}, got {format!r}"
        )
    compress = env_bool(env, "AUDIT_LOG_HTTP_COMPRESS", False)
    headers = _parse_headers(env.get("AUDIT_LOG_HTTP_HEADERS", ""))
    authorization = _authorization(env, format)
    if authorization is not None:
        headers["Authorization"] = authorization
    tls = tls_from_env(
        env, verify_var="AUDIT_LOG_HTTP_VERIFY_TLS", ca_var="AUDIT_LOG_HTTP_CA_BUNDLE"
    )
    connect, read = timeouts_from_env(
        env,
        connect_var="AUDIT_LOG_HTTP_CONNECT_TIMEOUT_S",
        read_var="AUDIT_LOG_HTTP_READ_TIMEOUT_S",
    )
    max_body = env_int(
        env,
        "AUDIT_LOG_HTTP_MAX_BODY_BYTES",
        DEFAULT_MAX_BODY_BYTES,
        minimum=MIN_MAX_BODY_BYTES,
        maximum=MAX_MAX_BODY_BYTES,
    )
    index = env.get("AUDIT_LOG_HTTP_INDEX", "").strip() or None
    if index is not None:
        if format not in ("elasticsearch_bulk", "splunk_hec"):
            raise ConfigError(
                "AUDIT_LOG_HTTP_INDEX",
                "only used with AUDIT_LOG_HTTP_FORMAT=elasticsearch_bulk or splunk_hec; unset it",
            )
        if format == "elasticsearch_bulk" and (
            _ES_INDEX_FORBIDDEN.search(index) or index[0] in "-_+" or index in (".", "..")
        ):
            raise ConfigError(
                "AUDIT_LOG_HTTP_INDEX",
                f'{index!r} is not a valid index name (lowercase, no spaces or \\/*?"<>|,#:, '
                "not starting with -, _ or +)",
            )
    try:
        return HttpSink(
            endpoint,
            format=format,
            headers=headers,
            gzip=compress,
            verify=tls.verify,
            connect_timeout_s=connect,
            read_timeout_s=read,
            max_body_bytes=max_body,
            index=index,
        )
    except MissingDependencyError as exc:
        # A setting this environment cannot honour: a ConfigError naming it, in one line.
        raise ConfigError("AUDIT_LOG_DESTINATION", str(exc)) from None
    except (OSError, ssl.SSLError) as exc:
        raise tls_load_error(tls, exc, ca_var="AUDIT_LOG_HTTP_CA_BUNDLE", cert_var=None) from None
