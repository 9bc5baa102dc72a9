"""Composition: settings, the CLI and the HTTP server wire engine, cloud and ui together."""
