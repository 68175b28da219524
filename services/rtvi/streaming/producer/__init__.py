"""`rtvi produce`: frames from a source, JPEG-encoded, published to Kafka keyed by stream.

``config`` is its typed configuration, ``producer`` the loop, ``sources/`` where frames
come from (shared with `rtvi ingest`).
"""
