"""Events within RunPod's chunk size (`engine.chunks`), and our serverless client putting a
slim result back together from either shape of /stream, or from /status's aggregated output.
The client runs against the RunPod stand-in; the test plays the worker's side of it."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.detect import Kind, Target
from cloud.serverless import ServerlessBackend
from engine.chunks import MissingCues, Reassembler, bounded, reassembled, size_of, split_cues
from engine.protocol import Cue, CuesEvent, ErrorEvent, Event, JobSpec, ResultEvent, Source
from tests.support.long_job import long_job
from tests.support.runpod_standin import StandIn, serve_runpod
from tests.support.runpod_workers import wait_for

LIMIT = 512_000
ENDPOINT = "ep-chunks"
API_KEY = "rpa_test"


@pytest.fixture(scope="module")
def hour() -> list[Event]:
    return long_job(minutes=60)


def result_of(events: list[Event]) -> ResultEvent:
    last = events[-1]
    assert isinstance(last, ResultEvent), last
    return last


# --- bounded and Reassembler ----------------------------------------------------------------


def test_every_chunk_of_an_hour_long_job_fits_and_the_result_comes_back_whole(hour):
    original = result_of(hour)
    assert size_of(original) > 1_000_000  # over RunPod's chunk size as it is

    chunks = list(bounded(hour))

    assert max(size_of(event) for event in chunks) <= LIMIT
    slim = result_of(chunks)
    assert slim.cues == [] and slim.streamed_cue_ids == [cue.id for cue in original.cues]
    assert slim.files == original.files  # the rendered files fit beside the ids
    assert result_of(list(reassembled(chunks))) == original


def test_a_short_job_passes_unchanged():
    events = long_job(minutes=5)
    assert size_of(result_of(events)) < LIMIT
    assert list(bounded(events)) == events
    assert list(reassembled(events)) == events


def test_one_cues_event_of_an_hour_is_split_in_order(hour):
    # Captions come as one `cues` event with every cue of the video.
    cues = result_of(hour).cues
    parts = list(split_cues(cues, 100_000))
    assert len(parts) > 1 and max(size_of(part) for part in parts) <= 100_000
    assert [cue for part in parts for cue in part.cues] == cues


def test_files_give_way_when_even_the_slim_result_is_too_big():
    events = long_job(minutes=20)
    original = result_of(events)
    budget = size_of(original.model_copy(update={"cues": []})) - 1

    chunks = list(bounded(events, budget))

    assert max(size_of(event) for event in chunks) <= budget
    assert result_of(chunks).files == []
    whole = result_of(list(reassembled(chunks)))
    assert whole == original.model_copy(update={"files": []})


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    minutes=st.floats(0.5, 4),
    max_bytes=st.integers(3_000, 60_000),
    skipped=st.sets(st.integers(0, 40), max_size=6),
    edited=st.sets(st.integers(0, 80), max_size=4),
    stale=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_any_job_fits_any_budget_and_reassembles_to_its_result(
    minutes, max_bytes, skipped, edited, stale, seed
):
    events = long_job(minutes=minutes, batch_s=10, seed=seed)
    original = result_of(events)
    # Streams that do not match the result: `cues` events left out, result cues edited after
    # their last streaming, a streamed cue the result dropped.
    sent = [e for i, e in enumerate(events[:-1]) if i not in skipped]
    cues = [
        cue.model_copy(update={"text": f"edited {cue.text}"}) if i in edited else cue
        for i, cue in enumerate(original.cues)
    ]
    if stale:
        sent.append(CuesEvent(cues=[Cue(id=10**6, start=0, end=1, text="dropped")]))
    original = original.model_copy(update={"cues": cues})

    chunks = list(bounded([*sent, original], max_bytes))

    assert max(size_of(event) for event in chunks) <= max_bytes
    whole = result_of(list(reassembled(chunks)))
    assert whole.files in (original.files, [])
    assert whole == original.model_copy(update={"files": whole.files})


def carrying_cue_1(chunks: list[Event]) -> set[int]:
    """The indexes of the chunks with the first cue (transcribed, then translated)."""
    return {i for i, e in enumerate(chunks) if isinstance(e, CuesEvent) and e.cues[0].id == 1}


def test_lost_cues_are_never_a_result_with_cues_missing(hour):
    chunks = list(bounded(hour))
    lost = carrying_cue_1(chunks)
    reassembler = Reassembler()
    with pytest.raises(MissingCues, match=r"\d+ of the result's \d+ cues never arrived"):
        for i, event in enumerate(chunks):
            if i not in lost:
                reassembler.feed(event)


def test_a_single_cue_over_the_budget_is_refused():
    cue = Cue(id=1, start=0, end=1, text="x" * 5_000)
    with pytest.raises(ValueError, match="cue 1 alone"):
        list(bounded([CuesEvent(cues=[cue, cue])], 4_000))


# --- The serverless client ------------------------------------------------------------------


@pytest.fixture(scope="module")
def standin() -> Iterator[StandIn]:
    with serve_runpod(api_key=API_KEY, endpoint_id=ENDPOINT) as server:
        yield server


def run_job(standin: StandIn, chunks: list[Event], lost: set[int] = frozenset()) -> list[Event]:
    """Our client's Events for a URL job whose worker streams `chunks` (the test plays the
    worker: RunPod's side of the stand-in is real); `lost`: the indexes of chunks lost."""
    target = Target.assume(Kind.SERVERLESS, f"{standin.url}/v2/{ENDPOINT}")
    client = ServerlessBackend(target.url, API_KEY, target=target, poll_s=0.05, retries=1)
    received: list[Event] = []
    spec = JobSpec(source=Source(url="https://example.com/talk.mp4"))
    reader = threading.Thread(target=lambda: received.extend(client.run(spec)), daemon=True)
    reader.start()
    wait_for(lambda: standin.queue, 30, "the client sent no job")
    job = standin.take("worker-1")
    assert job is not None
    for i, event in enumerate(chunks):
        standin.drop_stream = int(i in lost)
        standin.stream(job, "worker-1", {"output": event.model_dump(mode="json")})
    standin.done(job, "worker-1", {}, is_stream=True)  # the output: every chunk it kept
    reader.join(30)
    assert not reader.is_alive()
    return received


@pytest.mark.parametrize("bare", [False, True], ids=["status-and-stream", "bare-list"])
def test_the_client_reassembles_a_slim_result_from_either_stream_shape(standin, hour, bare):
    standin.bare_stream = bare
    try:
        events = run_job(standin, list(bounded(hour)))
    finally:
        standin.bare_stream = False

    original, result = result_of(hour), result_of(events)
    assert result.cues == original.cues and result.files == original.files
    assert result.streamed_cue_ids is None
    streamed = {cue.id: cue for e in events if isinstance(e, CuesEvent) for cue in e.cues}
    assert streamed == {cue.id: cue for cue in original.cues}


def test_the_client_reassembles_the_aggregated_status_output(standin, hour):
    standin.drop_stream = 10_000  # /stream returns nothing; /status has every chunk
    try:
        events = run_job(standin, list(bounded(hour)))
    finally:
        standin.drop_stream = 0
    assert result_of(events).cues == result_of(hour).cues


def test_the_client_fails_a_job_whose_cues_were_lost(standin, hour):
    chunks = list(bounded(hour))
    events = run_job(standin, chunks, carrying_cue_1(chunks))
    error = events[-1]
    assert isinstance(error, ErrorEvent) and error.code == "backend_unavailable", error
