"""`rtvi ingest`: a fleet of network cameras into Kafka, supervised.

``config`` (the typed settings), ``cameras`` (the cameras file: parse, ${VAR}, reload
plans), ``reader`` (one camera on its own thread: pacing, latest-frame slot, backoff,
freeze detection), ``publisher`` (Kafka, one frame in flight per camera), ``health``
(/livez, /readyz), ``metrics`` and ``supervisor`` (the fleet and its loop).
"""
