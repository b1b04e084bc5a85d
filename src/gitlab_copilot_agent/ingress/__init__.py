"""The webhook ingress's defences, each bounded and documented in docs/ingress.md.

* ``fields``: header values parsed with their size bounded first; short audit text.
* ``forwarded``: the client address from ``X-Forwarded-For`` behind trusted proxies.
* ``replay``: the replay guard, bounded in keys and bytes.
* ``ratelimit``: a per-source token bucket for rejected requests, bounded in sources.
* ``body``: the request body read under a size limit and a total deadline.
* ``operational``: ``/metrics`` and ``/healthz`` behind a token or on their own port; docs off.
* ``server_options``: uvicorn's limits (header size and time, connections, keep-alive).
"""
