"""Stream chunk sizes of a long job, as RunPod carries them: the Events of a synthetic job
(`tests/support/long_job.py`: cues with words, then their translations, then the result with
rendered files) before and after `engine.chunks.bounded`.

    python bench/chunks.py [--minutes 60] [--targets de] [--max-bytes 512000]

Goal: no chunk over the budget (RunPod splits chunks over 1 MB), the result slim when the
whole one would not fit, and the reassembled result equal to the original.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.chunks import MAX_CHUNK_BYTES, bounded, reassembled, size_of  # noqa: E402
from engine.protocol import Event, ResultEvent  # noqa: E402
from tests.support.long_job import long_job  # noqa: E402


def describe(label: str, events: list[Event]) -> ResultEvent:
    sizes = [size_of(event) for event in events]
    result = events[-1]
    assert isinstance(result, ResultEvent)
    print(
        f"{label:>8}: {len(events):4d} chunks, largest {max(sizes) / 1e3:8.1f} kB, "
        f"total {sum(sizes) / 1e3:8.1f} kB, result {size_of(result) / 1e3:8.1f} kB "
        f"({len(result.cues)} cues, {len(result.files)} files)"
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60)
    parser.add_argument("--targets", nargs="*", default=["de"])
    parser.add_argument("--max-bytes", type=int, default=MAX_CHUNK_BYTES)
    args = parser.parse_args()

    events = long_job(args.minutes, tuple(args.targets))
    original = describe("as is", events)
    chunks = list(bounded(events, args.max_bytes))
    describe("bounded", chunks)
    per_second = size_of(original) / (args.minutes * 60)
    print(f"full result: {per_second:.0f} bytes per second of speech")
    largest = max(size_of(event) for event in chunks)
    whole = list(reassembled(chunks))[-1]
    assert isinstance(whole, ResultEvent)
    print(f"largest chunk within {args.max_bytes} bytes: {largest <= args.max_bytes}")
    same = whole.model_copy(update={"files": original.files}) == original
    files = "with its files" if whole.files == original.files else "its files left to the client"
    print(f"reassembled result equals the original: {same} ({files})")


if __name__ == "__main__":
    main()
