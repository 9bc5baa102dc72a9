"""The RunPod serverless queue worker: one JobSpec in, the engine's Events streamed out.

Run it as a script (`python runpod/handler.py`); RunPod's worker loop calls `handler` once per
job. Every Event goes to `/stream/{id}` as it comes and, aggregated, to `/status/{id}`; an `error`
Event also ends the job as FAILED with its message.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# Run as a script, Python puts this folder, which is named `runpod`, first on sys.path, where it
# would shadow the RunPod SDK (`import runpod` would find this folder). Drop it, and add the repo
# root so `engine` and `app` import without an installed package.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

# The SDK; ruff would file it as first-party because of this folder's name.
import runpod  # noqa: E402

# isort: split
from pydantic import ValidationError  # noqa: E402

from app.config import Settings  # noqa: E402
from app.job_limits import JobLimits  # noqa: E402
from engine.pipeline import Engine  # noqa: E402
from engine.protocol import (  # noqa: E402
    ErrorEvent,
    JobSpec,
    SubtideError,
    validation_problems,
)
from engine.stream import ReadAhead  # noqa: E402

log = logging.getLogger("subtide.runpod")

Handler = Callable[[dict[str, Any]], Iterator[dict[str, Any]]]


def read_spec(job_input: object, limits: JobLimits) -> JobSpec:
    """The job's input as a JobSpec within the worker's limits, or a `bad_input` SubtideError
    naming the bad field."""
    try:
        spec = JobSpec.model_validate(job_input)
    except ValidationError as exc:
        problems = "; ".join(validation_problems(exc))
        raise SubtideError(
            "bad_input",
            f"Invalid job input: {problems}",
            "send {'input': {...}} with the fields of a Subtide JobSpec",
        ) from exc
    if spec.source.path:
        raise SubtideError(
            "bad_input",
            "Invalid job input: source.path: a worker cannot read your files",
            "send source.url or source.audio_b64 on serverless",
        )
    limits.check(spec)
    return spec


def make_handler(engine: Engine, limits: JobLimits) -> Handler:
    previous: list[ReadAhead] = []

    def handler(job: dict[str, Any]) -> Iterator[dict[str, Any]]:
        try:
            spec = read_spec(job.get("input"), limits)
        except SubtideError as exc:
            yield exc.to_event().model_dump(mode="json")
            # A chunk with an `error` key is how the SDK marks a generator's job FAILED.
            yield {"error": exc.message}
            return
        # The SDK closes a stopped job's generator when it gets round to it, at times after
        # the worker's next job has begun. The engine runs one job at a time, so the job
        # before is stopped here first (a job that ended is already over: nothing to stop).
        while previous:
            previous.pop().stop()
        events = ReadAhead(engine.run(spec), engine.cancel)
        previous.append(events)
        last = None
        try:
            for last in events:
                yield last.model_dump(mode="json")
        except GeneratorExit:
            # RunPod stopped the job (cancel or execution timeout) and the SDK dropped this
            # generator. Let the engine stop on its own terms, so nothing of this job is still
            # running when the next one starts.
            log.info("job %s stopped by RunPod; cancelling the engine", job.get("id"))
            events.stop()
            raise
        if isinstance(last, ErrorEvent):
            yield {"error": last.message}

    return handler


def main() -> None:
    logging.basicConfig(level=logging.INFO)
    settings = Settings()
    engine = Engine(settings.engine_options(serves_others=True))
    try:
        engine.warm()  # once per worker, before the first job
    except SubtideError as exc:
        # Jobs then report the problem themselves, with its hint.
        log.warning("warm-up: %s", exc.message)
    runpod.serverless.start(
        {
            "handler": make_handler(engine, JobLimits.from_settings(settings)),
            "return_aggregate_stream": True,
        }
    )


if __name__ == "__main__":
    main()
