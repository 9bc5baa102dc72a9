"""The captions a video already carries: which track to use, and caption files → cues.

yt-dlp lists the tracks (`subtitles` are made by people, `automatic_captions` by the site's
speech recognition). A track made by people beats any transcription, so it is taken first; an
automatic one only when Whisper is off, and then only the site's original-language track, never
one of the machine translations YouTube offers beside it.

Caption files come as WebVTT, SRT, TTML (also called DFXP) or YouTube's json3. Markup, karaoke
timestamps and positioning are dropped, speaker names from `<v>` tags and TTML agents kept, and
the rolling two-line windows of automatic captions (each line shown twice) are folded back into
one cue per line. A track that is empty or mostly broken raises `SubtideError("bad_input")`:
the pipeline then says why and transcribes instead.
"""

from __future__ import annotations

import json
import re
import threading
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby, pairwise
from typing import Any

from engine.cues import build_cues
from engine.formats import decode_text, parse_srt, parse_vtt
from engine.languages import language_name, same_language
from engine.protocol import CaptionTrack, Cue, Style, SubtideError, Word

# Formats we read, best first: WebVTT and SRT carry exactly what is shown; TTML and json3 need
# more interpretation.
READABLE_FORMATS = ("vtt", "srt", "ttml", "dfxp", "json3")
ASR = "asr"
_ORIG = "-orig"
_LANG_CODE = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{2,8})*")
# More than this share of broken cues, and the track is not trusted at all.
_MAX_BROKEN_SHARE = 0.1
# Cues may overlap a little (a speaker cut in); a track where many do is malformed.
_OVERLAP_TOLERANCE_S = 0.05
_MAX_OVERLAP_SHARE = 0.25
# Automatic captions repeat a line in the window after it; adjacent cues this close are one.
_CONTIGUOUS_S = 0.05
_ROLLING_SHARE = 0.5
_MAX_CAPTION_BYTES = 20_000_000
# The detector is trusted only on enough text, and only when it is sure.
_DETECT_MIN_CHARS = 40
# How sure the detector must be before its answer is taken over a label or a reply.
DETECT_MIN_PROBABILITY = 0.9
_DETECT_SAMPLE_CHARS = 5000
# Languages a text detector confuses with each other: it never relabels within a group.
_CLOSE_LANGUAGES = (
    frozenset({"no", "nb", "nn", "da"}),
    frozenset({"ms", "id"}),
    frozenset({"hr", "sr", "bs"}),
    frozenset({"zh", "yue"}),
)
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|\{\\[^{}]*\}")


@dataclass(frozen=True)
class Track:
    """A caption track and where to fetch it (a link, or the text yt-dlp already holds)."""

    info: CaptionTrack
    url: str | None = None
    data: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    impersonate: bool = False

    @property
    def automatic(self) -> bool:
        return self.info.automatic

    @property
    def original(self) -> bool:
        """YouTube's own marker for the automatic track in the spoken language."""
        return self.info.id.endswith(_ORIG)


@dataclass(frozen=True)
class Captions:
    cues: list[Cue]
    # What was repaired on the way (dropped cues, relabelled language), for the user to see.
    notes: list[str] = field(default_factory=list)


# --- tracks ------------------------------------------------------------------------------------


def list_tracks(info: dict[str, Any]) -> list[Track]:
    """Every track in a yt-dlp info dict that has a format we read, made by people first."""
    tracks = []
    for automatic, key in ((False, "subtitles"), (True, "automatic_captions")):
        for name, formats in (info.get(key) or {}).items():
            # YouTube lists its live chat replay as a "subtitle"; it is not one.
            if name == "live_chat" or not isinstance(formats, list):
                continue
            track = _track(str(name or "und"), formats, automatic)
            if track is not None:
                tracks.append(track)
    return tracks


def _track(key: str, formats: list[dict[str, Any]], automatic: bool) -> Track | None:
    by_ext = {f.get("ext"): f for f in formats if isinstance(f, dict)}
    ext = next((e for e in READABLE_FORMATS if e in by_ext), None)
    if ext is None:
        return None
    chosen = by_ext[ext]
    code = key.removesuffix(_ORIG).replace("_", "-")
    # A page's <track> without srclang is keyed by its label: the text detector decides then.
    lang = code if _LANG_CODE.fullmatch(code) else "und"
    name = chosen.get("name") or (language_name(lang) if lang != "und" else key)
    info = CaptionTrack(
        id=f"{'auto' if automatic else 'manual'}:{key}",
        lang=lang,
        name=name,
        automatic=automatic,
        ext=ext,
    )
    return Track(
        info=info,
        url=chosen.get("url"),
        data=chosen.get("data"),
        headers=dict(chosen.get("http_headers") or {}),
        impersonate=bool(chosen.get("impersonate")),
    )


def choose(
    tracks: Sequence[Track],
    *,
    targets: Sequence[str],
    spoken: str | None,
    whisper_enabled: bool,
) -> Track | None:
    """The track to use, or None to transcribe.

    Order: a manual track in a target language (nothing to translate) → a manual track in
    another language, the spoken one first (translated) → Whisper → when Whisper is off, the
    site's automatic track in the spoken language. Without targets, the wanted language is the
    spoken one when known."""
    manual = [t for t in tracks if not t.automatic]
    wanted = list(targets) or ([spoken] if spoken else [])
    for lang in wanted:
        found = _in_language(manual, lang)
        if found:
            return found
    if manual and (targets or not spoken):
        return _in_language(manual, spoken) or manual[0]
    if whisper_enabled:
        return None
    return _automatic_original(tracks, spoken)


def _in_language(tracks: Sequence[Track], lang: str | None) -> Track | None:
    if not lang:
        return None
    same = [t for t in tracks if same_language(t.info.lang, lang)]
    exact = [t for t in same if t.info.lang.lower() == lang.lower()]
    return (exact or same or [None])[0]


def _automatic_original(tracks: Sequence[Track], spoken: str | None) -> Track | None:
    automatic = [t for t in tracks if t.automatic]
    originals = [t for t in automatic if t.original]
    if originals:
        return _in_language(originals, spoken) or originals[0]
    if spoken:
        return _in_language(automatic, spoken)
    # One automatic track and no marker: nothing to be a translation of, so it is the original.
    return automatic[0] if len(automatic) == 1 else None


def find(tracks: Sequence[Track], track_id: str) -> Track | None:
    return next((t for t in tracks if t.info.id == track_id), None)


# --- reading -----------------------------------------------------------------------------------


def read_captions(raw: bytes | str, ext: str, *, automatic: bool = False) -> Captions:
    """A caption file as cues: parsed, checked, cleaned. Raises bad_input when unusable."""
    if not raw:
        raise SubtideError("bad_input", "The caption track is empty (0 bytes).")
    if len(raw) > _MAX_CAPTION_BYTES:
        raise SubtideError("bad_input", "The caption track is too large to be captions.")
    text = decode_text(raw) if isinstance(raw, bytes) else raw
    reader = _READERS.get(ext)
    if reader is None:
        raise SubtideError("bad_input", f"Captions in the {ext} format cannot be read.")
    cues, unreadable = reader(text)
    return _clean(cues, unreadable, automatic=automatic)


def read_ttml(text: str) -> tuple[list[Cue], int]:
    """Cues from TTML/DFXP and the number of paragraphs whose times could not be read."""
    root = _xml_root(text)
    clock = _TtmlClock.of(root)
    agents = _ttml_agents(root)
    cues: list[Cue] = []
    bad = 0
    body = next((el for el in root if _local(el.tag) == "body"), None)
    if body is None:
        raise SubtideError("bad_input", "The caption track is TTML without a body.")
    start = clock.parse(body.get("begin")) or 0.0
    for paragraph, offset in _ttml_paragraphs(body, start, clock):
        times = clock.span(paragraph, offset)
        if times is None:
            bad += 1
            continue
        text_of = _ttml_text(paragraph)
        agent = (_attribute(paragraph, "agent") or "").split()
        speaker = agents.get(agent[0]) if agent else None
        cues.append(
            Cue(id=len(cues) + 1, start=times[0], end=times[1], text=text_of, speaker=speaker)
        )
    return cues, bad


def read_json3(text: str) -> tuple[list[Cue], int]:
    """Cues from YouTube's json3 and the number of events whose times could not be read.

    Each event is one line; `aAppend` events add to the line before (a line break, mostly).
    Automatic captions keep a line up while the next is shown, so each cue ends when the next
    one starts."""
    try:
        events = json.loads(text)["events"]
    except (ValueError, KeyError, TypeError):
        raise SubtideError("bad_input", "The caption track is not valid json3.") from None
    cues: list[Cue] = []
    bad = 0
    for event in events if isinstance(events, list) else ():
        segments = event.get("segs") if isinstance(event, dict) else None
        if not segments:
            continue  # window and style definitions
        line = "".join(str(s.get("utf8", "")) for s in segments if isinstance(s, dict))
        if event.get("aAppend"):
            if cues and line.strip():
                cues[-1] = cues[-1].model_copy(update={"text": cues[-1].text + line})
            continue
        times = _json3_times(event)
        if times is None:
            bad += 1
        elif line.strip():
            cues.append(Cue(id=len(cues) + 1, start=times[0], end=times[1], text=line))
    return _end_at_next(cues), bad


def _srt(text: str) -> tuple[list[Cue], int]:
    parsed = parse_srt(text)
    return parsed.cues, len(parsed.unreadable)


def _vtt(text: str) -> tuple[list[Cue], int]:
    parsed = parse_vtt(text)
    return parsed.cues, len(parsed.unreadable)


_READERS: dict[str, Callable[[str], tuple[list[Cue], int]]] = {
    "vtt": _vtt,
    "srt": _srt,
    "ttml": read_ttml,
    "dfxp": read_ttml,
    "json3": read_json3,
}


def _json3_times(event: dict[str, Any]) -> tuple[float, float] | None:
    start, length = event.get("tStartMs"), event.get("dDurationMs", 0)
    if not isinstance(start, int | float) or not isinstance(length, int | float):
        return None
    if start < 0 or length < 0:
        return None
    return start / 1000, (start + length) / 1000


def _end_at_next(cues: list[Cue]) -> list[Cue]:
    out = []
    for cue, after in zip(cues, [*cues[1:], None], strict=True):
        if after is not None and after.start < cue.end and after.start > cue.start:
            cue = cue.model_copy(update={"end": after.start})
        out.append(cue)
    return out


# --- TTML --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _TtmlClock:
    """TTML's time expressions, with the document's tick and frame rates."""

    tick_rate: float
    frame_rate: float

    @classmethod
    def of(cls, root: ElementTree.Element) -> _TtmlClock:
        frame_rate = _number(_attribute(root, "frameRate")) or 30.0
        # Without tickRate, ticks follow the frame rate (TTML 1, section 6.2.10).
        tick_rate = _number(_attribute(root, "tickRate")) or frame_rate
        return cls(tick_rate=tick_rate, frame_rate=frame_rate)

    def parse(self, value: str | None) -> float | None:
        if value is None:
            return None
        value = value.strip()
        clock = re.fullmatch(r"(\d+):(\d{2}):(\d{2})(?:(\.\d+)|:(\d+)(?:\.\d+)?)?", value)
        if clock:
            hours, minutes, seconds, fraction, frames = clock.groups()
            total = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
            return total + float(fraction or 0) + int(frames or 0) / self.frame_rate
        offset = re.fullmatch(r"(\d+(?:\.\d+)?)(h|ms|m|s|f|t)", value)
        if offset is None:
            return None
        number, metric = float(offset.group(1)), offset.group(2)
        scale = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
        if metric in scale:
            return number * scale[metric]
        return number / (self.frame_rate if metric == "f" else self.tick_rate)

    def span(self, element: ElementTree.Element, offset: float) -> tuple[float, float] | None:
        begin = self.parse(element.get("begin"))
        end = self.parse(element.get("end"))
        duration = self.parse(element.get("dur"))
        if begin is None or (end is None and duration is None):
            return None
        end = end if end is not None else begin + (duration or 0.0)
        return offset + begin, offset + end


def _xml_root(text: str) -> ElementTree.Element:
    # TTML needs no DTD; refusing one keeps entity expansion tricks out of the parser.
    if "<!DOCTYPE" in text[:4096].upper():
        raise SubtideError("bad_input", "The caption track is XML with a DOCTYPE; TTML has none.")
    try:
        root = ElementTree.fromstring(text.strip())
    except ElementTree.ParseError as exc:
        raise SubtideError("bad_input", f"The caption track is not valid TTML ({exc}).") from None
    if _local(root.tag) != "tt":
        raise SubtideError("bad_input", "The caption track is XML, but not TTML.")
    return root


def _ttml_paragraphs(
    element: ElementTree.Element, offset: float, clock: _TtmlClock
) -> Iterable[tuple[ElementTree.Element, float]]:
    """Each <p> with the time its parents' `begin` adds (TTML times nest)."""
    for child in element:
        if _local(child.tag) == "p":
            yield child, offset
        elif _local(child.tag) == "div":
            yield from _ttml_paragraphs(
                child, offset + (clock.parse(child.get("begin")) or 0), clock
            )


def _ttml_text(element: ElementTree.Element) -> str:
    parts = [_collapse(element.text)]
    for child in element:
        name = _local(child.tag)
        if name == "br":
            parts.append("\n")
        elif name == "span":
            parts.append(_ttml_text(child))
        parts.append(_collapse(child.tail))
    return "".join(parts)


def _ttml_agents(root: ElementTree.Element) -> dict[str, str]:
    """xml:id → name of each <ttm:agent> in the head (a speaker)."""
    agents = {}
    for agent in root.iter():
        if _local(agent.tag) != "agent":
            continue
        agent_id = _attribute(agent, "id")
        names = [el.text.strip() for el in agent if _local(el.tag) == "name" and el.text]
        if agent_id:
            agents[agent_id] = names[0] if names else agent_id
    return agents


def _local(name: str) -> str:
    return name.rsplit("}", 1)[-1]


def _attribute(element: ElementTree.Element, local: str) -> str | None:
    """An attribute by its local name, in whichever namespace (TTML has had three)."""
    return next((v for k, v in element.attrib.items() if _local(k) == local), None)


def _number(value: str | None) -> float | None:
    try:
        number = float(value) if value else None
    except ValueError:
        return None
    return number if number and number > 0 else None


def _collapse(text: str | None) -> str:
    # XML's default whitespace handling: any run (line breaks in the source too) is one space.
    return re.sub(r"\s+", " ", text or "")


# --- cleaning ----------------------------------------------------------------------------------


def _clean(cues: list[Cue], unreadable: int, *, automatic: bool) -> Captions:
    notes: list[str] = []
    meant = len(cues) + unreadable
    cues = [c.model_copy(update={"text": _plain(c.text)}) for c in cues]
    empty = sum(not c.text for c in cues)
    backwards = [c for c in cues if c.end < c.start]
    broken = unreadable + len(backwards)
    if meant and broken / meant > _MAX_BROKEN_SHARE:
        raise SubtideError(
            "bad_input",
            f"{broken} of {meant} captions have unreadable or backwards timestamps.",
        )
    if broken:
        notes.append(f"Skipped {broken} caption(s) with unreadable or backwards timestamps.")
    cues = sorted((c for c in cues if c.end >= c.start), key=lambda c: c.start)
    if automatic or _looks_rolling(cues):
        cues = fold_rolling(cues)
    with_text = [c for c in cues if c.text and c.end > c.start]
    if not with_text:
        raise SubtideError("bad_input", "The caption track holds no captions with text.")
    if empty:
        notes.append(f"Skipped {empty} empty caption(s).")
    _check_overlaps(with_text)
    return Captions(cues=_renumbered(with_text), notes=notes)


def _plain(text: str) -> str:
    """One caption's text without markup (SRT's <i> and {\\an8} too), one line per line."""
    lines = (" ".join(_TAG.sub("", line).split()) for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


def _looks_rolling(cues: Sequence[Cue]) -> bool:
    """Whether most cues start with the line the cue before ended with (a rolling window)."""
    if len(cues) < 3:
        return False
    repeats = sum(
        bool(a.text) and a.text.split("\n")[-1] == b.text.split("\n")[0] for a, b in pairwise(cues)
    )
    return repeats / (len(cues) - 1) >= _ROLLING_SHARE


def fold_rolling(cues: Sequence[Cue]) -> list[Cue]:
    """Rolling captions back to one cue per new line: the lines a cue repeats from the one just
    before are dropped, and a cue that only repeats lengthens the one it repeats. A cue after a
    gap is a new window, so a line said twice stays twice."""
    out: list[Cue] = []
    previous: list[str] = []
    previous_end = float("-inf")
    for cue in cues:
        lines = cue.text.split("\n") if cue.text else []
        rolling = cue.start - previous_end <= _CONTIGUOUS_S
        fresh = lines[_overlap(previous, lines) :] if rolling else lines
        if lines:
            previous, previous_end = lines, cue.end
        if fresh:
            out.append(cue.model_copy(update={"text": "\n".join(fresh)}))
        elif out and lines:
            out[-1] = out[-1].model_copy(update={"end": max(out[-1].end, cue.end)})
    return out


def _overlap(before: Sequence[str], lines: Sequence[str]) -> int:
    """How many of `lines`' first lines are the last lines of `before`."""
    for size in range(min(len(before), len(lines)), 0, -1):
        if list(before[-size:]) == list(lines[:size]):
            return size
    return 0


def _check_overlaps(cues: Sequence[Cue]) -> None:
    overlapping = sum(b.start < a.end - _OVERLAP_TOLERANCE_S for a, b in pairwise(cues))
    if len(cues) > 1 and overlapping / (len(cues) - 1) > _MAX_OVERLAP_SHARE:
        raise SubtideError(
            "bad_input",
            f"{overlapping} of {len(cues)} captions overlap the one before them: "
            "the track is malformed.",
        )


def _renumbered(cues: Sequence[Cue]) -> list[Cue]:
    return [c.model_copy(update={"id": i}) for i, c in enumerate(cues, start=1)]


# --- language ----------------------------------------------------------------------------------

_detector_lock = threading.Lock()
_detector: Any = None


def detect_language(text: str) -> tuple[str, float] | None:
    """The language of a text and the detector's confidence; None for too little text."""
    sample = " ".join(text.split())[:_DETECT_SAMPLE_CHARS]
    if len(sample) < _DETECT_MIN_CHARS:
        return None
    lang, probability = _language_detector().classify(sample)
    return str(lang), float(probability)


def _language_detector() -> Any:
    """py3langid's model, which ships inside the package (loaded once, about half a second)."""
    global _detector
    with _detector_lock:
        if _detector is None:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            _detector = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        return _detector


def checked_language(label: str, cues: Sequence[Cue]) -> tuple[str, str | None]:
    """The track's language after a look at its text, and a note when the label was wrong.

    A site may label a German track "en", or leave the label out: the detector overrides the
    label when it is confident on enough text, so the track is neither skipped nor translated
    from the wrong language."""
    found = detect_language(" ".join(c.text for c in cues))
    if found is None or found[1] < DETECT_MIN_PROBABILITY:
        return label, None
    detected = found[0]
    if label != "und" and (same_language(label, detected) or _close(label, detected)):
        return label, None
    if label == "und":
        return detected, f"The captions are in {language_name(detected)}."
    return detected, (
        f"The captions are labelled {language_name(label)} but are in "
        f"{language_name(detected)}; treating them as {language_name(detected)}."
    )


def _close(a: str, b: str) -> bool:
    a, b = a.split("-")[0].lower(), b.split("-")[0].lower()
    return any(a in group and b in group for group in _CLOSE_LANGUAGES)


# --- re-cueing ---------------------------------------------------------------------------------


def recue(cues: Sequence[Cue], style: Style, language: str | None) -> list[Cue]:
    """Captions re-cut by our readability rules. Captions have no word times, so each cue's
    words are spread over its span by length; a speaker's run of cues is re-cut on its own, so
    names stay on their lines."""
    out: list[Cue] = []
    for speaker, run in groupby(cues, key=lambda c: c.speaker):
        words = [word for cue in run for word in _spread(cue)]
        if words:
            out += [
                c.model_copy(update={"speaker": speaker})
                for c in build_cues(words, style, language)
            ]
    # Each run was cut alone: its last cue must not run into the next speaker's first.
    for i in range(len(out) - 1):
        if out[i].end > out[i + 1].start:
            out[i] = out[i].model_copy(update={"end": max(out[i + 1].start, out[i].start)})
    return [c.model_copy(update={"words": None}) for c in _renumbered(out)]


def _spread(cue: Cue) -> list[Word]:
    pieces = cue.text.split()
    if not pieces:
        return []
    weights = [len(piece) + 1 for piece in pieces]
    step = (cue.end - cue.start) / sum(weights)
    words, at = [], cue.start
    for piece, weight in zip(pieces, weights, strict=True):
        words.append(Word(start=at, end=at + step * weight, text=" " + piece))
        at += step * weight
    return words
