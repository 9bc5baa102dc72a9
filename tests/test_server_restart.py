"""The pod server killed with SIGKILL and started again on the same cache dir: it comes back
with its queue. The interrupted job and the two waiting behind it finish under their ids, a
client that follows the first resumes its event stream with `Last-Event-ID` with no gap and no
duplicate, a cancelled job stays cancelled, a job whose upload is gone fails clearly, a torn
last journal line is ignored, and finished jobs can still be fetched after another restart."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from app.job_journal import JobJournal
from cloud.http import SseMessage, read_sse
from engine.protocol import JobSpec, ProgressEvent, Source
from tests.support.api_server import ServerProcess, server_process, wait_ready
from tests.support.synth import DIALOGUE_EN, fixture_dir, synthesize
from tests.support.timing import HANG_GUARD_S, JOB_HANG_GUARD_S
from tests.support.wer import wer

# A real model behind real server processes.
pytestmark = pytest.mark.slow

RESTARTED = "The server restarted; resuming this job"
# A job ends with one of these.
LAST = ("result", "error")
# Past Whisper's first 30 s window, which the engine's checkpoint can then skip.
KILL_AFTER_S = 35


@dataclass
class Story:
    """What clients saw across two kills of the server: the jobs' ids, the first job's events
    as its follower received them before and after the first kill, each job's status and
    events after it, and both again from the server started after the second kill."""

    ids: dict[str, str]
    before: list[SseMessage]
    after: list[SseMessage]
    upload_kept: bool  # the interrupted job's upload, while the server was down
    status: dict[str, dict]
    events: dict[str, list[SseMessage]]
    uploads_left: list[str]
    status_later: dict[str, dict]
    events_later: dict[str, list[SseMessage]]
    long_script: str


def _environment(cache: Path) -> dict[str, str]:
    return {
        "CACHE_DIR": str(cache),
        "WHISPER_MODEL": "bundled:tiny.en",
        "ENGINE_CONCURRENCY": "1",
        "RATE_LIMIT_PER_MINUTE": "0",
    }


def _upload(client: httpx.Client, path: Path) -> str:
    # A fresh title (the Whisper prompt) misses any transcript cache.
    files = {"file": (f"{uuid.uuid4().hex}.wav", path.read_bytes(), "audio/wav")}
    response = client.post("/api/jobs", files=files, data={"job": json.dumps({"formats": ["srt"]})})
    assert response.status_code == 202, response.text
    return response.json()["id"]


def _stream(client: httpx.Client, job_id: str, last_id: int | None = None) -> Iterator[SseMessage]:
    """The job's SSE messages (after `last_id`) through its last."""
    headers = {"Last-Event-ID": str(last_id)} if last_id is not None else {}
    with client.stream("GET", f"/api/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        yield from read_sse(_guarded(response.iter_lines()))


def _guarded(lines: Iterator[str]) -> Iterator[str]:
    """The stream's lines, heartbeats included, so that a job that hangs while the server
    stays alive fails the hang guard (the whole job on an idle machine: well under 20 s)."""
    deadline = time.monotonic() + JOB_HANG_GUARD_S
    for line in lines:
        assert time.monotonic() < deadline, "the job never ended"
        yield line


def _events(client: httpx.Client, job_id: str) -> list[SseMessage]:
    return list(_stream(client, job_id))


def _until_killed(messages: Iterator[SseMessage], server: ServerProcess) -> list[SseMessage]:
    """Follows the stream until a cue ends after KILL_AFTER_S, kills the server, then takes
    what is still on the way until the connection breaks."""
    seen: list[SseMessage] = []
    try:
        for message in messages:
            seen.append(message)
            assert message.event not in LAST, "the job ended before the server was killed"
            cues = json.loads(message.data)["cues"] if message.event == "cues" else []
            if any(cue["end"] > KILL_AFTER_S for cue in cues):
                server.kill()
    except httpx.TransportError:
        return seen
    raise AssertionError("the stream ended without the connection breaking")


@pytest.fixture(scope="module")
def story(clips, tmp_path_factory) -> Story:
    cache = tmp_path_factory.mktemp("restart-cache")
    environment = _environment(cache)
    # Three times the dialogue (about 2.5 min of speech): still transcribing when killed.
    long_clip = synthesize(DIALOGUE_EN * 3, fixture_dir(), "dialogue_en_x3", gap=0.7)
    sources = {"long": long_clip.wav} | dict.fromkeys(("a", "b", "lost", "no"), clips.short.wav)
    # Hang guard: a server process starts in a couple of seconds on an idle machine.
    with (
        server_process(environment, HANG_GUARD_S) as server,
        httpx.Client(base_url=server.url, timeout=JOB_HANG_GUARD_S) as client,
    ):
        wait_ready(client, HANG_GUARD_S)
        ids = {name: _upload(client, path) for name, path in sources.items()}
        assert client.delete(f"/api/jobs/{ids['no']}").json()["status"] == "cancelled"
        before = _until_killed(_stream(client, ids["long"]), server)

    journal = cache / "server-jobs"
    upload_kept = Path(_spec(journal, ids["long"])["upload"]).is_file()
    Path(_spec(journal, ids["lost"])["upload"]).unlink()
    # A crash in the middle of a write leaves a torn last line.
    with (journal / ids["long"] / "events.jsonl").open("ab") as log:
        log.write(b'{"type": "progress", "stage": "transcr')

    with (
        server_process(environment, HANG_GUARD_S) as server,
        httpx.Client(base_url=server.url, timeout=JOB_HANG_GUARD_S) as client,
    ):
        after = list(_stream(client, ids["long"], last_id=before[-1].id))
        events = {name: _events(client, job_id) for name, job_id in ids.items()}
        status = {name: client.get(f"/api/jobs/{job_id}").json() for name, job_id in ids.items()}
        uploads_left = os.listdir(cache / "uploads")

    with (
        server_process(environment, HANG_GUARD_S) as server,
        httpx.Client(base_url=server.url, timeout=HANG_GUARD_S) as client,
    ):
        status_later = {n: client.get(f"/api/jobs/{job_id}").json() for n, job_id in ids.items()}
        events_later = {name: _events(client, job_id) for name, job_id in ids.items()}

    return Story(
        ids=ids,
        before=before,
        after=after,
        upload_kept=upload_kept,
        status=status,
        events=events,
        uploads_left=uploads_left,
        status_later=status_later,
        events_later=events_later,
        long_script=long_clip.script,
    )


def _spec(journal: Path, job_id: str) -> dict:
    return json.loads((journal / job_id / "job.json").read_text())


def _data(messages: list[SseMessage]) -> list[dict]:
    return [json.loads(message.data) for message in messages]


def test_the_interrupted_job_and_the_two_behind_it_finish_after_the_restart(story, clips):
    for name in ("long", "a", "b"):
        assert story.status[name]["status"] == "done", story.status[name]
        assert story.status[name]["id"] == story.ids[name]
    text = " ".join(cue["text"] for cue in story.status["long"]["result"]["cues"])
    assert wer(story.long_script, text) < 0.35
    short = " ".join(cue["text"] for cue in story.status["a"]["result"]["cues"])
    assert wer(clips.short.script, short) < 0.35
    # Queued again in the order they came (the interrupted one came first); the cancelled job
    # and the one whose upload is gone are not.
    for position, name in enumerate(("long", "a", "b"), start=1):
        data = _data(story.events[name])
        note = next(i for i, d in enumerate(data) if d.get("message") == RESTARTED)
        assert data[note + 1]["message"] == f"Waiting: position {position} in the queue"


def test_a_follower_resumes_with_no_gap_and_no_duplicate(story):
    ids = [message.id for message in story.before + story.after]
    assert ids == list(range(len(ids)))
    # What the follower got is what any client now gets from the start.
    assert story.before + story.after == story.events["long"]
    data = _data(story.before + story.after)
    notes = [i for i, d in enumerate(data) if d.get("message") == RESTARTED]
    assert len(notes) == 1 and notes[0] >= len(story.before)
    assert any(d["type"] == "cues" for d in data[: notes[0]])
    percents = [d["percent"] for d in data if d["type"] == "progress"]
    assert percents == sorted(percents)
    # A client keeps cues by id (as the app does): the rerun's replace the stale ones.
    shown: dict[int, dict] = {}
    for d in data:
        if d["type"] == "cues":
            shown.update((cue["id"], cue) for cue in d["cues"])
    result = data[-1]
    assert result["type"] == "result"
    assert {cue["id"]: cue["text"] for cue in result["cues"]} == {
        cue_id: cue["text"] for cue_id, cue in shown.items()
    }


def test_uploads_stay_until_their_job_ends(story):
    assert story.upload_kept
    assert story.uploads_left == []


def test_a_job_whose_upload_is_gone_fails_clearly(story):
    status = story.status["lost"]
    assert status["status"] == "failed"
    assert status["error"]["code"] == "source_unavailable"
    assert "upload" in status["error"]["message"] and status["error"]["hint"]


def test_a_cancelled_job_stays_cancelled(story):
    for status in (story.status["no"], story.status_later["no"]):
        assert status["status"] == "cancelled" and status["error"]["code"] == "cancelled"
    assert [d["type"] for d in _data(story.events["no"])].count("error") == 1
    assert RESTARTED not in [d.get("message") for d in _data(story.events["no"])]


def test_finished_jobs_stay_fetchable_after_another_restart(story):
    for name in story.ids:
        assert story.status_later[name] == story.status[name]
        assert story.events_later[name] == story.events[name]


def test_a_torn_last_line_is_cut_off_and_the_next_event_starts_a_line_of_its_own(tmp_path):
    journal = JobJournal.open(tmp_path)
    assert journal is not None
    journal.add("a" * 32, JobSpec(source=Source(url="https://example.com/v")), None)
    journal.append("a" * 32, ProgressEvent(stage="queued", percent=0, message="one"))
    log = tmp_path / ("a" * 32) / "events.jsonl"
    whole = log.read_bytes()
    with log.open("ab") as out:
        out.write(b'{"type": "progress", "sta')
    assert [e.message for e in journal.jobs()[0].events] == ["one"]
    assert log.read_bytes() == whole
    journal.append("a" * 32, ProgressEvent(stage="queued", percent=0, message="two"))
    assert [e.message for e in journal.jobs()[0].events] == ["one", "two"]
    # A second server on the same cache dir can't take the journal over while this one lives.
    assert JobJournal.open(tmp_path) is None
    journal.close()
