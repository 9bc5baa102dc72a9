"""Clients for remote Subtide backends (RunPod serverless, pods, self-hosted servers).

`connect(url, key)` gives the Backend for a URL; `check(url, key)` says what it is and whether
it answers; `reach(target, key)` only whether anything answers there, within a stated time.
Only engine.protocol and engine.ffmpeg (the standard library and pydantic) are imported from the
engine, so this works without a model.
"""

from cloud.connect import REACH_TIMEOUT_S, Check, check, connect, reach
from cloud.detect import Kind, Target, detect
from cloud.http import HttpBackend
from cloud.serverless import ServerlessBackend

__all__ = [
    "REACH_TIMEOUT_S",
    "Check",
    "HttpBackend",
    "Kind",
    "ServerlessBackend",
    "Target",
    "check",
    "connect",
    "detect",
    "reach",
]
