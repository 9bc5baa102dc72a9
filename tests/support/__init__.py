"""Fixtures and stand-in servers for the tests (real media, real servers on 127.0.0.1)."""
