"""Real serverless workers for the RunPod stand-in: `runpod/start.sh` with MODE=serverless, the
runpod SDK's worker loop and our handler, one process (group) per worker id."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from tests.support.runpod_standin import StandIn

ROOT = Path(__file__).resolve().parents[2]


class WorkerPool:
    """Worker processes started the way the image starts them. Each runs in a process group of
    its own: the SDK's heartbeat is a child process, and a killed worker must stop pinging."""

    def __init__(
        self,
        standin: StandIn,
        endpoint_id: str,
        home: Path,
        *,
        model: str = "bundled:tiny.en",
        env: dict[str, str] | None = None,
    ) -> None:
        self.standin, self.endpoint_id, self.home, self.model = standin, endpoint_id, home, model
        self.env = env or {}  # more variables for the workers (endpoint settings)
        self.cache = home / "cache"  # shared by the workers, as a network volume would be
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.started: dict[str, float] = {}
        self.logs: dict[str, Path] = {}

    def start(self, worker_id: str) -> None:
        # The SDK keeps its job list in `.runpod_jobs.pkl` in the working directory: a fresh
        # one per start, so a restarted worker does not resume a killed one's jobs.
        cwd = self.home / f"{worker_id}-{time.monotonic_ns()}"
        cwd.mkdir(parents=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("RUNPOD_")}
        env.update(
            MODE="serverless",
            CACHE_DIR=str(self.cache),
            WHISPER_MODEL=self.model,
            SUBTIDE_ALLOW_PRIVATE_URLS="true",
            HF_HUB_OFFLINE="1",
            # One thread per worker, as one GPU per worker: workers scale out, not up.
            OMP_NUM_THREADS="1",
            WHISPER_CPU_THREADS="1",
            **self.standin.worker_env(self.endpoint_id, worker_id),
        )
        env.update(self.env)
        self.logs[worker_id] = cwd / "worker.log"
        with self.logs[worker_id].open("wb") as out:
            self.processes[worker_id] = subprocess.Popen(
                ["bash", str(ROOT / "runpod" / "start.sh")],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.started[worker_id] = time.monotonic()

    def ensure(self, worker_ids: Iterable[str], timeout_s: float = 180) -> None:
        """Every one of `worker_ids` running and heard from (a worker warms its model before it
        polls for jobs, so it is ready then)."""
        wanted = list(worker_ids)
        for worker_id in wanted:
            process = self.processes.get(worker_id)
            if process is None or process.poll() is not None:
                self.start(worker_id)

        def ready() -> bool:
            seen = self.standin.seen
            return all(seen.get(w, 0.0) > self.started[w] for w in wanted)

        wait_for(ready, timeout_s, f"workers {', '.join(wanted)} did not start")

    def kill(self, worker_id: str) -> None:
        """Kills a worker and its heartbeat at once, as a crash or a lost machine would."""
        process = self.processes[worker_id]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def forget(self) -> None:
        """Empties the workers' cache, so a job that ran before is transcribed again."""
        for folder in ("transcripts", "audio"):
            shutil.rmtree(self.cache / folder, ignore_errors=True)


def wait_for(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.05)
