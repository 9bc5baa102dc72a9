"""A stand-in for RunPod's serverless control plane on 127.0.0.1, playing both of its sides.

Client side (what `cloud/serverless.py` and curl talk to), under `/v2/{endpoint}`, Bearer auth:
`POST /run`, `POST /runsync` (bodies over 10 MB, 20 MB for /runsync, are refused with 413),
`GET|POST /status/{id}`, `GET|POST /stream/{id}` (the chunks not returned yet),
`POST /cancel/{id}`, `GET /health`. Statuses go IN_QUEUE → IN_PROGRESS → COMPLETED / FAILED /
CANCELLED / TIMED_OUT (`policy.executionTimeout`, ms, per job, counted per attempt).

Worker side (what the runpod SDK's worker loop polls, see `worker_env`), authorised by the raw
`RUNPOD_AI_API_KEY` header: `GET job-take/{worker}` (long poll; 204 when idle), `GET
job-stop/{worker}` (long poll; `{"jobsToStop": [...]}`), `POST job-stream/{worker}/{job}` and
`POST job-done/{worker}/{job}` (a form-encoded JSON body), `GET ping/{worker}`. Any number of
workers (distinct worker ids) may serve one endpoint; each job goes to one of them.

Stopping a job: a cancel or an execution timeout ends the job at once for clients and queues a
stop signal for its worker, which hears of it only through `job-stop`, the stop channel the SDK
long-polls beside its job-takes (rp_scale.monitor_stop_signals): the SDK then cancels that job's
task. The stand-in holds that poll open for `STOP_POLL_S` (the SDK waits a second after an empty
answer before it asks again) and records when it handed each job's stop over (`stop_sent`).

Lost workers: a worker that sends nothing (pings come every second from the SDK's heartbeat
process) for `worker_lost_s` has lost its job. Like RunPod, the stand-in puts that job back at
the head of the queue once (counted as `retried` in /health); a job whose worker is lost a second
time FAILS, saying so. Answers from a lost worker about the job are ignored.

Faults: `fail_get_job` (answer the next N job-takes with 500), `drop_stream` (swallow the next N
stream chunks), `pause(True)` (job-takes hand out nothing, as when every worker is throttled).
`bare_stream = True` answers /stream with the bare list of chunks, RunPod's other documented shape.
For tests to look at: `jobs` (each with its input, status, chunks, the workers that took it and
when), `seen` (when each worker was last heard from) and `taking` (workers waiting for a job).
"""

from __future__ import annotations

import json
import sys
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
# Long: a stop reaches a waiting worker at once. Short enough that a worker told to shut down,
# whose SDK waits for its open polls to return, exits within a few seconds.
STOP_POLL_S = 5.0
# RunPod's limits on a request body.
PAYLOAD_LIMITS = {"run": 10_000_000, "runsync": 20_000_000}
WORKER_LOST = "Worker lost: the workers running this job stopped responding, twice."


@dataclass
class Job:
    id: str
    input: Any
    timeout_s: float | None
    status: str = "IN_QUEUE"
    worker: str | None = None
    workers: list[str] = field(default_factory=list)  # every worker that took it, in order
    attempt: int = 0
    losses: int = 0
    chunks: list[Any] = field(default_factory=list)
    streamed: int = 0  # chunks already returned by /stream
    output: Any = None
    error: str | None = None
    done_posts: int = 0
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished: float | None = None
    stop_sent: float | None = None  # when its worker was handed the stop (time.time())

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
    def __init__(
        self, api_key: str, worker_key: str, execution_timeout_s: float, worker_lost_s: float
    ) -> None:
        self.api_key = api_key
        self.worker_key = worker_key
        self.execution_timeout_s = execution_timeout_s
        self.worker_lost_s = worker_lost_s
        self.url = ""
        self.jobs: dict[str, Job] = {}
        self.queue: list[str] = []
        self.stops: dict[str, list[str]] = {}
        self.seen: dict[str, float] = {}  # worker id → when it last sent anything
        self.taking: set[str] = set()  # workers waiting in a job-take now: free for a job
        self.retried = 0
        self.fail_get_job = 0
        self.drop_stream = 0
        self.paused = False
        # /stream answers with the bare list of chunks, the other shape RunPod's docs show.
        self.bare_stream = False
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
            alive = set(self.alive_workers())
            retried = self.retried
        return {
            "jobs": {
                "completed": counts["COMPLETED"],
                "failed": counts["FAILED"],
                "inProgress": counts["IN_PROGRESS"],
                "inQueue": counts["IN_QUEUE"],
                "retried": retried,
            },
            "workers": {"idle": len(alive - busy), "running": len(alive & busy)},
        }

    def alive_workers(self) -> list[str]:
        now = time.monotonic()
        return sorted(w for w, seen in self.seen.items() if now - seen < self.worker_lost_s)

    # Lost workers.

    def saw(self, worker: str) -> None:
        with self.changed:
            self.seen[worker] = time.monotonic()

    def reap_lost(self) -> None:
        """Requeues (once) or fails the jobs of workers that went quiet."""
        now = time.monotonic()
        with self.changed:
            lost = [
                job
                for job in self.jobs.values()
                if job.status == "IN_PROGRESS"
                and job.worker is not None
                and now - max(self.seen.get(job.worker, 0.0), job.started or 0.0)
                > self.worker_lost_s
            ]
            for job in lost:
                job.losses += 1
                if job.losses == 1:
                    self.retried += 1
                    job.status, job.worker = "IN_QUEUE", None
                    self.queue.insert(0, job.id)
            self.changed.notify_all()
        for job in lost:
            if job.losses > 1:
                self._end(job, "FAILED", error=WORKER_LOST)

    def watch(self, stop: threading.Event) -> None:
        while not stop.wait(0.2):
            self.reap_lost()

    # Worker side.

    def take(self, worker: str) -> Job | None:
        with self.changed:
            self.taking.add(worker)
            try:
                self.changed.wait_for(lambda: self.queue and not self.paused, timeout=LONG_POLL_S)
            finally:
                self.taking.discard(worker)
            if not self.queue or self.paused:
                return None
            job = self.jobs[self.queue.pop(0)]
            job.status, job.worker, job.started = "IN_PROGRESS", worker, time.monotonic()
            job.workers.append(worker)
            job.attempt += 1
        if job.timeout_s:
            timer = threading.Timer(job.timeout_s, self._time_out, (job, job.attempt))
            timer.daemon = True
            timer.start()
        return job

    def _time_out(self, job: Job, attempt: int) -> None:
        with self.changed:
            current = job.attempt == attempt and job.status == "IN_PROGRESS"
        if current:  # the timer of an attempt whose worker was lost counts no more
            self._end(job, "TIMED_OUT", error=None)

    def pause(self, paused: bool) -> None:
        with self.changed:
            self.paused = paused
            self.changed.notify_all()

    def stop_signals(self, worker: str) -> list[str]:
        with self.changed:
            self.changed.wait_for(lambda: self.stops.get(worker), timeout=STOP_POLL_S)
            ids = self.stops.pop(worker, [])
            for job_id in ids:
                self.jobs[job_id].stop_sent = time.time()
            return ids

    def stream(self, job: Job, worker: str, body: dict[str, Any]) -> None:
        with self.changed:
            if job.worker != worker:
                return  # a lost worker's late chunk
            if self.drop_stream:
                self.drop_stream -= 1
            elif job.status == "IN_PROGRESS" and "output" in body:
                job.chunks.append(body["output"])
            self.changed.notify_all()

    def done(self, job: Job, worker: str, body: dict[str, Any], is_stream: bool) -> None:
        with self.changed:
            job.done_posts += 1
            if job.status != "IN_PROGRESS" or job.worker != worker:
                return  # a late answer: the job was cancelled, timed out or its worker lost
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
        if length > PAYLOAD_LIMITS.get(action, length):
            return self._send(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "payload too large"})
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
            if standin.bare_stream:
                return self._send(HTTPStatus.OK, stream)
            return self._send(HTTPStatus.OK, {"status": status, "stream": stream})
        if action == "cancel" and method == "POST":
            standin.cancel(job)
            return self._send(HTTPStatus.OK, {"id": job.id, "status": job.status})
        return self._send(HTTPStatus.NOT_FOUND, {"error": "no such route"})

    def _worker(self, action: str, rest: list[str], query: dict[str, list[str]], raw: bytes):
        standin = self.server.standin
        worker = rest[0] if rest else ""
        standin.saw(worker)
        if action == "ping":
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
            standin.stream(job, worker, body)
        else:
            standin.done(job, worker, body, is_stream=query.get("isStream") == ["true"])
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

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A worker that gave up on an answer (a retried post, a killed worker) is normal here.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)

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
    worker_lost_s: float = 10,
) -> Iterator[StandIn]:
    """Run the stand-in while the block runs; `.url` is "http://127.0.0.1:PORT"."""
    standin = StandIn(api_key, worker_key, execution_timeout_s, worker_lost_s)
    server = _Server(standin, endpoint_id)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
    )
    stop = threading.Event()
    watcher = threading.Thread(target=standin.watch, args=(stop,), daemon=True)
    thread.start()
    watcher.start()
    try:
        yield standin
    finally:
        stop.set()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        watcher.join(timeout=5)
