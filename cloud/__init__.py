"""Clients for remote Subtide backends (RunPod serverless, pods, self-hosted servers)."""
