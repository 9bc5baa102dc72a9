"""The one rule for files the page hands to a job: they came through the app's own upload route.

A Gradio client names a file by its path, and any client can send any path. Gradio refuses one
it did not store (its own check, on once the app is launched or mounted by `ui.app`), but were
that check ever off, it would first copy the named file into its upload folder, so where a file
lies can't tell an upload from a server file. What the upload route answered can: its answer,
a JSON list of the stored paths, is Gradio's public HTTP contract (the one gradio_client uses).
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from starlette.middleware import Middleware

from engine.protocol import SubtideError

NOT_UPLOADED = "That file was not uploaded through this page."
NOT_UPLOADED_HINT = "Upload the file again, then press Run."
_UPLOAD_ROUTE = "/gradio_api/upload"
# A job uses its upload within minutes; this many newer uploads later it may be forgotten.
_REMEMBERED = 100_000


class Uploads:
    """The files the app's upload route stored: the only ones a job may read."""

    def __init__(self) -> None:
        self._paths: OrderedDict[Path, None] = OrderedDict()
        # The route records in the event loop; handlers check in worker threads.
        self._lock = threading.Lock()

    def check(self, path: str | None) -> None:
        """Refuses a `path` the upload route did not answer with. The message never repeats
        the path: it would tell a prober which server files exist."""
        if path is None:
            return
        resolved = Path(path).resolve()
        with self._lock:
            if resolved in self._paths:
                return
        raise SubtideError("bad_input", NOT_UPLOADED, NOT_UPLOADED_HINT)

    def recorder(self) -> Middleware:
        """For the Gradio app's `app_kwargs["middleware"]`: notes each upload route answer."""
        return Middleware(_RecordUploads, uploads=self)

    def record(self, answer: bytes) -> None:
        """Notes the paths of one answer of the upload route."""
        paths = [Path(path).resolve() for path in json.loads(answer)]
        with self._lock:
            for path in paths:
                self._paths[path] = None
            while len(self._paths) > _REMEMBERED:
                self._paths.popitem(last=False)


class _RecordUploads:
    """ASGI middleware: passes everything through, and records the paths in a successful answer
    of the upload route before the client gets it (so no run can come first)."""

    def __init__(self, app: Any, uploads: Uploads) -> None:
        self._app, self._uploads = app, uploads

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        is_upload = scope["type"] == "http" and scope["method"] == "POST"
        if not (is_upload and scope["path"].endswith(_UPLOAD_ROUTE)):
            await self._app(scope, receive, send)
            return
        status, body = 0, bytearray()

        async def noting(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and status == 200:
                body.extend(message.get("body", b""))
                if not message.get("more_body", False):
                    self._uploads.record(bytes(body))
            await send(message)

        await self._app(scope, receive, noting)
