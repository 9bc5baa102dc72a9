"""A stand-in for RunPod's serverless control plane on 127.0.0.1, playing both of its sides.

Client side (what `cloud/serverless.py` and curl talk to), under `/v2/{endpoint}`, Bearer auth:
`POST /run`, `POST /runsync`, `GET|POST /status/{id}`, `GET|POST /stream/{id}` (the chunks not
returned yet), `POST /cancel/{id}`, `GET /health`. Statuses go IN_QUEUE → IN_PROGRESS →
COMPLETED / FAILED / CANCELLED / TIMED_OUT (`policy.executionTimeout`, ms, per job).

Worker side (what the runpod SDK's worker loop polls, see `worker_env`), authorised by the raw
`RUNPOD_AI_API_KEY` header: `GET job-take/{worker}` (long poll; 204 when idle), `GET
job-stop/{worker}` (long poll; `{"jobsToStop": [...]}`), `POST job-stream/{worker}/{job}` and
`POST job-done/{worker}/{job}` (a form-encoded JSON body), `GET ping/{worker}`.

Faults: `fail_get_job` (answer the next N job-takes with 500), `drop_stream` (swallow the next N
stream chunks).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

TERMINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"}
LONG_POLL_S = 1.0


@dataclass
class Job:
    id: str
    input: Any
    timeout_s: float | None
    status: str = "IN_QUEUE"
    worker: str | None = None
    chunks: list[Any] = field(default_factory=list)
    streamed: int = 0  # chunks already returned by /stream
    output: Any = None
    error: str | None = None
    done_posts: int = 0
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None

    def view(self) -> dict[str, Any]:
        body: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.started is not None:
            body["delayTime"] = int((self.started - self.submitted) * 1000)
        if self.started is not None and self.finished is not None:
            body["executionTime"] = int((self.finished - self.started) * 1000)
        if self.output is not None:
            body["output"] = self.output
        if self.error is not None:
            body["error"] = self.error
        return body


class StandIn:
    def __init__(self, api_key: str, worker_key: str, execution_timeout_s: float) -> None:
        self.api_key = api_key
        self.worker_key = worker_key
        self.execution_timeout_s = execution_timeout_s
        self.url = ""
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self.stops: dict[str, list[str]] = {}
        self.pings: dict[str, float] = {}
        self.fail_get_job = 0
        self.drop_stream = 0
        self.changed = threading.Condition()

    def worker_env(self, endpoint_id: str, worker_id: str = "worker-1") -> dict[str, str]:
        """The variables RunPod gives a worker; the SDK appends `&...` to each, hence `?gpu=`."""
        base = f"{self.url}/v2/{endpoint_id}"
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{base}/job-take/$ID?gpu=standin",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/job-done/$RUNPOD_POD_ID/$ID?gpu=standin",
            "RUNPOD_WEBHOOK_POST_STREAM": f"{base}/job-stream/$RUNPOD_POD_ID/$ID?gpu=standin",
            "RUNPOD_WEBHOOK_PING": f"{base}/ping/$RUNPOD_POD_ID?gpu=standin",
            "RUNPOD_PING_INTERVAL": "1000",
            # The SDK's start-up checks open a connection to a public DNS server; tests send
            # traffic to 127.0.0.1 only.
            "RUNPOD_SKIP_AUTO_SYSTEM_CHECKS": "true",
            "RUNPOD_AI_API_KEY": self.worker_key,
            "RUNPOD_POD_ID": worker_id,
            "RUNPOD_ENDPOINT_ID": endpoint_id,
        }

    # Client side.

    def submit(self, body: dict[str, Any]) -> Job:
        timeout_ms = (body.get("policy") or {}).get("executionTimeout")
        job = Job(
            id=str(uuid.uuid4()),
            input=body.get("input"),
            timeout_s=timeout_ms / 1000 if timeout_ms else self.execution_timeout_s,
        )
        with self.changed:
            self.jobs[job.id] = job
            self.queue.append(job.id)
            self.changed.notify_all()
        return job

    def wait(self, job: Job, timeout_s: float) -> None:
        with self.changed:
            self.changed.wait_for(lambda: job.status in TERMINAL, timeout=timeout_s)

    def cancel(self, job: Job) -> None:
        self._end(job, "CANCELLED", error=None)

    def _end(self, job: Job, status: str, error: str | None) -> None:
        with self.changed:
            if job.status in TERMINAL:
                return
            if job.id in self.queue:
                self.queue.remove(job.id)
            if job.worker:
                self.stops.setdefault(job.worker, []).append(job.id)
            job.status, job.error, job.finished = status, error, time.monotonic()
            self.changed.notify_all()

    def health(self) -> dict[str, Any]:
        with self.changed:
            counts = {status: 0 for status in ("IN_QUEUE", "IN_PROGRESS", "COMPLETED", "FAILED")}
            for job in self.jobs.values():
                if job.status in counts:
                    counts[job.status] += 1
            busy = {job.worker for job in self.jobs.values() if job.status == "IN_PROGRESS"}
            alive = {w for w, seen in self.pings.items() if time.monotonic() - seen < 30}
        return {
            "jobs": {
                "completed": counts["COMPLETED"],
                "failed": counts["FAILED"],
                "inProgress": counts["IN_PROGRESS"],
                "inQueue": counts["IN_QUEUE"],
                "retried": 0,
            },
            "workers": {"idle": len(alive - busy), "running": len(alive & busy)},
        }

    # Worker side.

    def take(self, worker: str) -> Job | None:
        with self.changed:
            self.pings[worker] = time.monotonic()
            self.changed.wait_for(lambda: self.queue, timeout=LONG_POLL_S)
            if not self.queue:
                return None
            job = self.jobs[self.queue.pop(0)]
            job.status, job.worker, job.started = "IN_PROGRESS", worker, time.monotonic()
        if job.timeout_s:
            timer = threading.Timer(job.timeout_s, self._end, (job, "TIMED_OUT", None))
            timer.daemon = True
            timer.start()
        return job

    def stop_signals(self, worker: str) -> list[str]:
        with self.changed:
            self.changed.wait_for(lambda: self.stops.get(worker), timeout=LONG_POLL_S)
            return self.stops.pop(worker, [])

    def stream(self, job: Job, body: dict[str, Any]) -> None:
        with self.changed:
            if self.drop_stream:
                self.drop_stream -= 1
            elif job.status == "IN_PROGRESS" and "output" in body:
                job.chunks.append(body["output"])
            self.changed.notify_all()

    def done(self, job: Job, body: dict[str, Any], is_stream: bool) -> None:
        with self.changed:
            job.done_posts += 1
            if job.status != "IN_PROGRESS":
                return  # a late answer for a job that was cancelled or timed out
            if body.get("error"):
                job.output = body.get("output")
                status, error = "FAILED", str(body["error"])
            else:
                output = body.get("output")
                # An aggregated stream comes back whole; without it RunPod keeps the chunks.
                job.output = job.chunks if is_stream and not output else output
                status, error = "COMPLETED", None
        self._end(job, status, error)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def _route(self, method: str) -> None:
        standin = self.server.standin
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        segments = parts.path.strip("/").split("/")
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if len(segments) < 3 or segments[0] != "v2" or segments[1] != self.server.endpoint_id:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "endpoint not found"})
        action, rest = segments[2], segments[3:]
        if action in {"job-take", "job-stop", "job-stream", "job-done", "ping"}:
            if self.headers.get("Authorization") != standin.worker_key:
                return self._send(HTTPStatus.UNAUTHORIZED, {"error": "bad worker key"})
            return self._worker(action, rest, query, raw)
        if self.headers.get("Authorization") != f"Bearer {standin.api_key}":
            return self._send(HTTPStatus.UNAUTHORIZED, {"error": "Unauthorized"})
        body = json.loads(raw) if raw else {}
        if action in {"run", "runsync"} and method == "POST" and not rest:
            if not isinstance(body, dict) or "input" not in body:
                return self._send(HTTPStatus.BAD_REQUEST, {"error": "missing input"})
            job = standin.submit(body)
            if action == "run":
                return self._send(HTTPStatus.OK, {"id": job.id, "status": job.status})
            standin.wait(job, float(query.get("wait", ["90000"])[0]) / 1000)
            return self._send(HTTPStatus.OK, job.view())
        if action == "health" and method == "GET" and not rest:
            return self._send(HTTPStatus.OK, standin.health())
        job = standin.jobs.get(rest[0]) if len(rest) == 1 else None
        if job is None:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "job not found"})
        if action == "status":
            return self._send(HTTPStatus.OK, job.view())
        if action == "stream":
            with standin.changed:
                fresh, job.streamed = job.chunks[job.streamed :], len(job.chunks)
                status = job.status
            stream = [{"output": chunk} for chunk in fresh]
            return self._send(HTTPStatus.OK, {"status": status, "stream": stream})
        if action == "cancel" and method == "POST":
            standin.cancel(job)
            return self._send(HTTPStatus.OK, {"id": job.id, "status": job.status})
        return self._send(HTTPStatus.NOT_FOUND, {"error": "no such route"})

    def _worker(self, action: str, rest: list[str], query: dict[str, list[str]], raw: bytes):
        standin = self.server.standin
        worker = rest[0] if rest else ""
        if action == "ping":
            standin.pings[worker] = time.monotonic()
            return self._send(HTTPStatus.OK, {})
        if action == "job-take":
            if standin.fail_get_job:
                standin.fail_get_job -= 1
                return self._send(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "injected"})
            job = standin.take(worker)
            if job is None:
                return self._send(HTTPStatus.NO_CONTENT, None)
            return self._send(HTTPStatus.OK, {"id": job.id, "input": job.input})
        if action == "job-stop":
            ids = standin.stop_signals(worker)
            if not ids:
                return self._send(HTTPStatus.NO_CONTENT, None)
            return self._send(HTTPStatus.OK, {"jobsToStop": ids})
        job = standin.jobs.get(rest[1]) if len(rest) == 2 else None
        if job is None:
            return self._send(HTTPStatus.NOT_FOUND, {"error": "job not found"})
        body = json.loads(raw)
        if action == "job-stream":
            standin.stream(job, body)
        else:
            standin.done(job, body, is_stream=query.get("isStream") == ["true"])
        return self._send(HTTPStatus.OK, {})

    def _send(self, status: HTTPStatus, body: object) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(status)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, standin: StandIn, endpoint_id: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.standin = standin
        self.endpoint_id = endpoint_id


@contextmanager
def serve_runpod(
    api_key: str = "rpa_test",
    endpoint_id: str = "ep-test",
    worker_key: str = "rpw_worker",
    execution_timeout_s: float = 600,
) -> Iterator[StandIn]:
    """Run the stand-in while the block runs; `.url` is "http://127.0.0.1:PORT"."""
    standin = StandIn(api_key, worker_key, execution_timeout_s)
    server = _Server(standin, endpoint_id)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
