"""`rtvi consume`: frames in, v2 inference with several calls in flight, predictions out.

- ``config``: the one typed configuration (flags and ``RTVI_*`` variables).
- ``offsets``: publish and commit order (at-least-once). Pure.
- ``scheduler``: what is sent next (fair across streams, fresh in real time). Pure.
- ``dispatch``: when a batch goes, how large, how many calls at once, what is held. Pure.
- ``outcomes``: the one record of what happened, in Prometheus (``metrics`` names them).
- ``report``: the log block rendered from those metrics.
- ``inference``: one batch through the v2 client (retry, bisect).
- ``health``: /metrics, /livez and /readyz.
- ``loop``: all of it on one event loop thread, from injected parts.
- ``run``: builds the real parts for `rtvi consume`.

The package itself imports nothing, and only ``run`` imports the gRPC stubs (through the
v2 client), so the in-process unit tests, with fakes for Kafka and the client, can share a
process with tritonclient, which registers the same protobuf package.
"""
