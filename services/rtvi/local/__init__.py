"""Local mode: the whole pipeline on one machine, no cluster and no Docker."""
