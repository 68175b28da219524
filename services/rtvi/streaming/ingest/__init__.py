"""`rtvi ingest`: a fleet of network cameras into Kafka, supervised.

``config`` (the typed settings), ``cameras`` (the cameras file: parse, ${VAR}, reload
plans), ``reader`` (one camera on its own thread, its latest-frame slot), ``policy``
(backoff, pacing, freeze detection: pure), ``publisher`` (Kafka, one frame in flight per camera), ``health``
(/livez, /readyz), ``metrics`` and ``supervisor`` (the fleet and its loop).
"""
