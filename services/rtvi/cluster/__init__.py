"""Cluster commands (`rtvi loadtest`, `rtvi status`) on the kubernetes Python client."""
