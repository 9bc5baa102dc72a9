"""Clients for remote Subtide backends (RunPod serverless, pods, self-hosted servers).

`connect(url, key)` gives the Backend for a URL; `check(url, key)` says what it is and whether
it answers. Only engine.protocol and engine.ffmpeg (the standard library and pydantic) are
imported from the engine, so this works without a model.
"""

from cloud.connect import Check, check, connect
from cloud.detect import Kind, Target, detect
from cloud.http import HttpBackend
from cloud.serverless import ServerlessBackend

__all__ = [
    "Check",
    "HttpBackend",
    "Kind",
    "ServerlessBackend",
    "Target",
    "check",
    "connect",
    "detect",
]
