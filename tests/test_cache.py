"""The on-disk cache: keys, atomic entries, TTL, size cap and the cleanup interval."""

import os
import time
from pathlib import Path

import numpy as np

from engine.asr import DecodeOptions, Segment, TranscriptInfo, spread_words
from engine.cache import Cache, CacheLimits
from engine.media import Download

AUDIO = np.linspace(-1, 1, 16000, dtype=np.float32)
INFO = TranscriptInfo(language="en", language_probability=0.97, duration=1.0)
SEGMENTS = [Segment(0.0, 1.0, "Hello world.", spread_words("Hello world.", 0.0, 1.0), -0.2)]


def test_a_transcript_comes_back_exactly(tmp_path):
    cache = Cache(tmp_path)
    key = Cache.transcript_key(AUDIO, "bundled:base", DecodeOptions())
    assert cache.get_transcript(key) is None
    cache.put_transcript(key, INFO, SEGMENTS)
    assert cache.get_transcript(key) == (INFO, SEGMENTS)
    assert not [p for p in tmp_path.rglob(".*") if p.is_file()], "temporary files left behind"


def test_the_key_depends_on_audio_model_and_options():
    base = Cache.transcript_key(AUDIO, "m", DecodeOptions())
    assert base == Cache.transcript_key(AUDIO.copy(), "m", DecodeOptions())
    others = {
        Cache.transcript_key(AUDIO[:-1], "m", DecodeOptions()),
        Cache.transcript_key(AUDIO, "other", DecodeOptions()),
        Cache.transcript_key(AUDIO, "m", DecodeOptions(language="en")),
        Cache.transcript_key(AUDIO, "m", DecodeOptions(initial_prompt="A title")),
    }
    assert base not in others and len(others) == 4


def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path):
    cache = Cache(tmp_path)
    key = Cache.transcript_key(AUDIO, "m", DecodeOptions())
    cache.put_transcript(key, INFO, SEGMENTS)
    [entry] = (tmp_path / "transcripts").rglob("*.json")
    entry.write_text('{"info": {"language": "en"')
    assert cache.get_transcript(key) is None
    assert not entry.exists()


def _download(tmp_path: Path, name: str, size: int) -> Download:
    path = tmp_path / "dl" / name
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(os.urandom(size))
    return Download(path=path, title=f"Title {name}")


def test_downloads_are_kept_by_url_until_their_ttl(tmp_path):
    cache = Cache(tmp_path / "c", CacheLimits(audio_ttl_hours=1))
    kept = cache.put_audio("https://x/v", _download(tmp_path, "v.m4a", 1000))
    assert kept.path.read_bytes() and kept.title == "Title v.m4a"
    assert cache.get_audio("https://x/v") == kept
    assert cache.get_audio("https://x/other") is None
    old = time.time() - 2 * 3600
    os.utime(kept.path.parent / "meta.json", (old, old))
    assert cache.get_audio("https://x/v") is None
    cache.cleanup()
    assert not kept.path.exists()


def test_the_size_cap_evicts_least_recently_used_first(tmp_path):
    cache = Cache(tmp_path / "c", CacheLimits(max_size_mb=0.25))
    first = cache.put_audio("https://x/1", _download(tmp_path, "1.m4a", 100_000))
    second = cache.put_audio("https://x/2", _download(tmp_path, "2.m4a", 100_000))
    third = cache.put_audio("https://x/3", _download(tmp_path, "3.m4a", 100_000))
    for age, item in ((300, first), (200, second), (100, third)):
        stamp = time.time() - age
        os.utime(item.path.parent / "meta.json", (stamp, stamp))
    freed = cache.cleanup()
    assert freed >= 100_000
    assert not first.path.exists()
    assert second.path.exists() and third.path.exists()


def test_cleanup_runs_at_most_once_per_interval(tmp_path):
    cache = Cache(tmp_path / "c", CacheLimits(audio_ttl_hours=0, cleanup_interval_minutes=10))
    cache.maybe_cleanup()
    item = cache.put_audio("https://x/v", _download(tmp_path, "v.m4a", 10))
    cache.maybe_cleanup()
    assert item.path.exists(), "cleanup ran again before its interval"
    stamp = tmp_path / "c" / ".last_cleanup"
    old = time.time() - 11 * 60
    os.utime(stamp, (old, old))
    cache.maybe_cleanup()
    assert not item.path.exists()


def test_a_translated_batch_comes_back_and_a_damaged_one_is_a_miss(tmp_path):
    cache = Cache(tmp_path)
    assert cache.get_batch("ab" * 32) is None
    cache.put_batch("ab" * 32, ["Hallo.", "Wie geht's?"])
    assert cache.get_batch("ab" * 32) == ["Hallo.", "Wie geht's?"]
    [entry] = (tmp_path / "translations").rglob("*.json")
    entry.write_text('{"not": "a list"}')
    assert cache.get_batch("ab" * 32) is None and not entry.exists()
