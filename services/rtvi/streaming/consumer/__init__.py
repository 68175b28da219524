"""`rtvi consume`: frames in, v2 inference with several calls in flight, predictions out.

``offsets`` keeps publish and commit order (at-least-once), ``scheduler`` picks what is
sent next (fair across streams, fresh in real-time mode), ``inference`` sends batches
(retry, bisect), ``health`` serves /metrics, /livez and /readyz, and ``loop`` runs it all
on one event loop thread.

The package itself imports nothing: the pure modules (``offsets``, ``scheduler``) load
without the gRPC stubs, so in-process unit tests can share a process with tritonclient,
which registers the same protobuf package. ``rtvi consume`` imports ``loop``.
"""
