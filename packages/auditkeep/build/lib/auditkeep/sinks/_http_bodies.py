"""Request bodies of the http sink, one encoder per SIEM intake format.

Each encoder turns an entry line into a piece (with a group key, for formats
that group entries, such as Loki streams) and a run of pieces into one body.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson


class _Encoder:
    """Turns entries into body pieces: ``(group key, piece)``, then pieces into a body."""

    content_type = "application/json"
    overhead = 0

    def encode(self, line: bytes) -> tuple[str, bytes]:
        return "", line

    def group_overhead(self, key: str) -> int:
        return 0

    def body(self, chunk: Sequence[tuple[str, bytes]]) -> bytes:
        raise NotImplementedError


class _Ndjson(_Encoder):
    content_type = "application/x-ndjson"

    def body(self, chunk: Sequence[tuple[str, bytes]]) -> bytes:
        return b"\n".join(piece for _, piece in chunk) + b"\n"


class _JsonArray(_Encoder):
    overhead = 2

    def body(self, chunk: Sequence[tuple[str, bytes]]) -> bytes:
        return b"[" + b",".join(piece for _, piece in chunk) + b"]"


class _SplunkHec(_Encoder):
    # HEC takes several event envelopes in one body, one after the other.
    def __init__(self, *, index: str | None, source: str, sourcetype: str, host: str | None):
        meta: dict[str, str] = {}
        if host is not None:
            meta["host"] = host
        meta["source"] = source
        meta["sourcetype"] = sourcetype
        if index is not None:
            meta["index"] = index
        # {"time":<t>,<meta>,"event":<entry>}
        self._middle = b"," + orjson.dumps(meta)[1:-1] + b',"event":'

    def encode(self, line: bytes) -> tuple[str, bytes]:
        entry = _load(line)
        seconds, micros = _entry_time(entry)
        event = line if entry is not None else orjson.dumps(line.decode("utf-8", "replace"))
        stamp = f"{seconds}.{micros:06d}".encode()
        return "", b'{"time":' + stamp + self._middle + event + b"}"

    def body(self, chunk: Sequence[tuple[str, bytes]]) -> bytes:
        return b"\n".join(piece for _, piece in chunk)


class _ElasticsearchBulk(_Encoder):
    content_type = "application/x-ndjson"

    def __init__(self, *, index: str | None) -> None:
        self._index = index

    def encode(self, line: bytes) -> tuple[str, bytes]:
        entry = _load(line)
        action: dict[str, str] = {}
        if self._index is not None:
            action["_index"] = self._index
        event_id = entry.get("event_id") if entry is not None else None
        if isinstance(event_id, str):
            action["_id"] = event_id
        doc = line if entry is not None else orjson.dumps({"raw": line.decode("utf-8", "replace")})
        return "", orjson.dumps({"create": action}) + b"\n" + doc

    def body(self, chunk: Sequence[tuple[str, bytes]]) -> bytes:
        # The bulk API wants a newline after the last line too.
        return b"\n".join(piece for _, piece in chunk) + b"\n"


class _Loki(_Encoder):
    overhead = len(b'{"streams":[]}')

    def __init__(self, labels: Mapping[str, str]) -> None:
        self._labels = dict(labels)
        self._stream_json: dict[str, bytes] = {}

    def _stream(self, service: str) -> bytes:
        found = self._stream_json.get(service)
        if found is None:
            labels = dict(self._labels)
            if service:
                labels["service"] = service
            found = orjson.dumps(labels, option=orjson.OPT_SORT_KEYS)
            self._stream_json[service] = found
        return found

    def encode(self, line: bytes) -> tuple[str, bytes]:
        entry = _load(line)
        seconds, micros = _entry_time(entry)
        service = entry.get("service") if entry is not None else None
        key = service if isinstance(service, str) else ""
        nanos = str(seconds * 1_000_000_000 + micros * 1000)
        return key, orjson.dumps([nanos, line.decode("utf-8", "replace")])

    def group_overhead(self, key: str) -> int:
        return len(b'{"stream":,"values":[]},') + len(self._stream(key))

    def body(self, chunk: Sequence[tuple[str, bytes]]) -> bytes:
        streams: dict[str, list[bytes]] = {}
        for key, piece in chunk:
            streams.setdefault(key, []).append(piece)
        parts = [
            b'{"stream":' + self._stream(key) + b',"values":[' + b",".join(pieces) + b"]}"
            for key, pieces in streams.items()
        ]
        return b'{"streams":[' + b",".join(parts) + b"]}"


def _encoder_for(
    format: str,
    *,
    index: str | None,
    source: str,
    sourcetype: str,
    host: str | None,
    loki_labels: Mapping[str, str],
) -> _Encoder:
    if format == "ndjson":
        return _Ndjson()
    if format == "json_array":
        return _JsonArray()
    if format == "splunk_hec":
        return _SplunkHec(index=index, source=source, sourcetype=sourcetype, host=host)
    if format == "elasticsearch_bulk":
        return _ElasticsearchBulk(index=index)
    return _Loki(loki_labels)


def _load(line: bytes) -> dict[str, Any] | None:
    try:
        entry = orjson.loads(line)
    except orjson.JSONDecodeError:
        return None
    return entry if isinstance(entry, dict) else None


_second_cache: tuple[str, int] = ("", 0)


def _entry_time(entry: Mapping[str, Any] | None) -> tuple[int, int]:
    """(unix seconds, microseconds) of an entry's ``timestamp``; now if it has none."""
    global _second_cache
    stamp = entry.get("timestamp") if entry is not None else None
    if isinstance(stamp, str) and len(stamp) >= 20 and stamp.endswith("Z"):
        # The logger writes YYYY-MM-DDTHH:MM:SS.ffffffZ; the second changes rarely.
        prefix = stamp[:19]
        cached_prefix, seconds = _second_cache
        try:
            if prefix != cached_prefix:
                seconds = calendar.timegm(time.strptime(prefix, "%Y-%m-%dT%H:%M:%S"))
                _second_cache = (prefix, seconds)
            fraction = stamp[20:-1] if stamp[19] == "." else ""
            micros = int((fraction + "000000")[:6]) if fraction else 0
        except ValueError:
            pass
        else:
            return seconds, micros
    now_us = time.time_ns() // 1000
    return now_us // 1_000_000, now_us % 1_000_000


# -- configuration -----------------------------------------------------------------
