"""Internals shared by the services; not a public API."""
