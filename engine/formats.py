"""Cues to subtitle files (SRT, VTT, ASS, TXT, JSON) and SRT, VTT, JSON back to cues.

(A video's own caption tracks, with their other formats, are read in `engine.captions`.)

Every text format is rendered from one intermediate `_Entry` per cue, so the choice of language,
the dual-language layout and the clamping of times are decided once and agree across formats.
"""

from __future__ import annotations

import codecs
import html
import io
import json
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from engine.ffmpeg import require_file
from engine.protocol import Cue, Format, RenderedFile, Source, Style, SubtideError, TextSource

# Never mutated; a module constant keeps `Style()` out of the signatures' default expressions.
_DEFAULT_STYLE = Style()
_DUAL_FORMATS: frozenset[str] = frozenset({"srt", "vtt", "ass"})
_PARAGRAPH_PAUSE_MS = 2000
_STEM_MAX_CHARS = 120
_STEM_FALLBACK = "subtitles"

_ASS_FONT_SIZE = 64
# The translation under the source line is smaller so the pair stays two visual lines tall.
_ASS_DUAL_FONT_SIZE = 48
_ASS_DEFAULT_COLOUR = "FFFFFF"
# Readable on dark and bright video alike, and none of them is the default white.
_ASS_SPEAKER_PALETTE = (
    "FFE14D",  # yellow
    "5CE1FF",  # cyan
    "7CFC8A",  # green
    "FF8AD8",  # pink
    "FFA94D",  # orange
    "8AB4FF",  # light blue
    "C8A2FF",  # lavender
    "D4FF5C",  # lime
)

_VTT_TIME = r"(?:(\d+):)?([0-5]\d):([0-5]\d)\.(\d{3})"
# SRT as tools really write it: a dot for the comma, one or two digits where two belong.
_SRT_TIME = r"(\d+):(\d{1,2}):(\d{1,2})[,.](\d{1,3})"
_SRT_TIMING = re.compile(rf"^\s*{_SRT_TIME}\s*-->\s*{_SRT_TIME}(?:\s.*)?$")
_VTT_TIMING = re.compile(rf"^\s*{_VTT_TIME}\s*-->\s*{_VTT_TIME}(?:\s.*)?$")
_VTT_SKIPPED_BLOCK = re.compile(r"^(?:NOTE|STYLE|REGION)(?:[ \t]|$)")
_VTT_VOICE = re.compile(r"<v(?:\.[^\s>]*)?[ \t]+([^>]*)>")
_VTT_TAG = re.compile(r"<[^>]*>")
# Scripts written without spaces between words: joining their cues with a space would be wrong.
# (CJK punctuation, kana, Han ideographs, full-width forms; Hangul is spaced, so not here)
_NO_SPACE_SCRIPT = re.compile(
    r"[\u3000-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff00-\uffef]"
)
# Byte order marks, longest first: UTF-32 LE's begins with UTF-16 LE's.
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
# UTF-32 holds ASCII as one byte and three zeros: a share of zeros above this in each of the
# three lanes means UTF-32.
_WIDE_ZEROS = 0.5
# Unreadable cues named in a message; the rest are counted.
_LISTED_UNREADABLE = 5
_LABEL_CHARS = 40
# Characters that Windows, macOS or Linux refuse (or treat as separators) in a file name.
_UNSAFE_NAME_CHARS = frozenset('<>:"/\\|?*')
_WINDOWS_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL"} | {f"{dev}{n}" for dev in ("COM", "LPT") for n in range(1, 10)}
)


@dataclass(frozen=True, slots=True)
class _Entry:
    """One cue as every format shows it: clamped times, the main lines and dual lines below."""

    start_ms: int
    end_ms: int
    lines: list[str]
    dual_lines: list[str]
    speaker: str | None


@dataclass(frozen=True, slots=True)
class _PlannedFile:
    fmt: Format
    filename: str
    lang: str | None
    dual_with: str | None
    file_lang: str | None


# --- public API -------------------------------------------------------------------------------


def render(
    fmt: Format,
    cues: Sequence[Cue],
    *,
    lang: str | None = None,
    dual_with: str | None = None,
    style: Style = _DEFAULT_STYLE,
    title: str | None = None,
    language: str | None = None,
    duration: float | None = None,
    source: TextSource | None = None,
) -> str:
    """Render `cues` as one subtitle file.

    `lang` picks the text (None: the source; a code: that translation, or the source text where
    it is missing). `dual_with` adds that translation under each cue (SRT, VTT, ASS). `language`
    is the source language; `title`, `duration` and `source` (where the text came from) go where
    the format has room for them.
    """
    if fmt == "json":
        if lang is not None or dual_with is not None:
            raise ValueError("JSON always holds every language; lang and dual_with do not apply")
        return _render_json(cues, title=title, language=language, duration=duration, source=source)
    if dual_with is not None and fmt not in _DUAL_FORMATS:
        raise ValueError(f"dual-language output is for srt, vtt and ass, not {fmt}")
    entries = [_entry(cue, lang, dual_with) for cue in cues]
    if fmt == "srt":
        return _render_srt(entries, style)
    if fmt == "vtt":
        return _render_vtt(entries, style, lang or language)
    if fmt == "ass":
        return _render_ass(entries, title)
    if fmt == "txt":
        return _render_txt(entries, style)
    raise ValueError(f"unknown subtitle format: {fmt}")


def render_files(
    cues: Sequence[Cue],
    formats: Sequence[Format],
    *,
    stem: str,
    language: str,
    target_langs: Sequence[str] = (),
    style: Style = _DEFAULT_STYLE,
    title: str | None = None,
    duration: float | None = None,
    source: TextSource | None = None,
) -> list[RenderedFile]:
    """Every file a job asked for: per format the source, each target and, if dual, each pair."""
    plan = _plan_files(formats, stem, language, target_langs, dual=style.dual)
    return [
        RenderedFile(
            format=planned.fmt,
            filename=planned.filename,
            lang=planned.file_lang,
            content=render(
                planned.fmt,
                cues,
                lang=planned.lang,
                dual_with=planned.dual_with,
                style=style,
                title=title,
                language=language,
                duration=duration,
                source=source,
            ),
        )
        for planned in plan
    ]


SUBTITLE_SUFFIXES = frozenset({".srt", ".vtt"})


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A cue a reader could not use: how the file names it, and why."""

    label: str  # "cue 3" (its number in the file), else its first line in quotes
    reason: str


@dataclass(frozen=True)
class ParsedCues:
    """What a reader made of a subtitle file: the cues it read (ids from 1) and those it could
    not, so nothing is dropped without the caller knowing."""

    cues: list[Cue]
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.cues) + len(self.unreadable)

    def problem(self, name: str) -> str:
        """ "2 of 6 cues in talk.srt cannot be read: cue 3 (…), cue 5 (…)" """
        shown = [f"{u.label} ({u.reason})" for u in self.unreadable[:_LISTED_UNREADABLE]]
        more = len(self.unreadable) - len(shown)
        listing = ", ".join(shown) + (f" and {more} more" if more else "")
        return f"{len(self.unreadable)} of {self.total} cues in {name} cannot be read: {listing}"


def read_subtitles(path: Path) -> ParsedCues:
    """The cues of an SRT or VTT file written by any tool (UTF-8, UTF-16 or UTF-32 with or
    without BOM, or cp1252), and those it holds that cannot be read."""
    require_file(path, "subtitle file")
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise SubtideError("bad_input", f"Cannot read {path.name}: {exc.strerror}") from None
    text = decode_text(raw)
    parsed = parse_vtt(text) if path.suffix.lower() == ".vtt" else parse_srt(text)
    if not parsed.total:
        raise SubtideError(
            "bad_input",
            f"{path.name} holds no subtitles Subtide can read.",
            hint="Check that it is a valid SRT or WebVTT file.",
        )
    return parsed


def decode_text(raw: bytes) -> str:
    """Subtitle bytes as text: a byte order mark says the encoding; NUL bytes without one mean
    UTF-16 or UTF-32 (which plain text never holds); else UTF-8, else the Windows ANSI code page
    that older tools write."""
    for bom, codec in _BOMS:
        if raw.startswith(bom):
            return raw[len(bom) :].decode(codec, errors="replace")
    if b"\x00" in raw:
        return raw.decode(_wide_codec(raw[:4096]), errors="replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("cp1252", errors="replace")


def _wide_codec(sample: bytes) -> str:
    """UTF-16 or UTF-32, and which byte order, from where the zero bytes of mostly-ASCII text
    (timings, digits, spaces) fall."""

    def zeros(offset: int, step: int) -> float:
        lane = sample[offset::step]
        return lane.count(0) / max(len(lane), 1)

    if min(zeros(1, 4), zeros(2, 4), zeros(3, 4)) > _WIDE_ZEROS:
        return "utf-32-le"
    if min(zeros(0, 4), zeros(1, 4), zeros(2, 4)) > _WIDE_ZEROS:
        return "utf-32-be"
    return "utf-16-le" if zeros(1, 2) >= zeros(0, 2) else "utf-16-be"


def read_srt(text: str) -> list[Cue]:
    """Cues from SRT text; unreadable blocks are left out, ids renumbered from 1."""
    return parse_srt(text).cues


def parse_srt(text: str) -> ParsedCues:
    """Cues from SRT text, and the blocks meant as cues that could not be read."""
    # Whitespace-only lines end a block too: editors leave stray spaces on "empty" lines.
    lines = [line if line.strip() else "" for line in _raw_lines(text.removeprefix("\ufeff"))]
    cues: list[Cue] = []
    unreadable: list[Unreadable] = []
    for block in _blocks(lines):
        # The timing line comes first, or second after the cue's number.
        timing_at = 0 if "-->" in block[0] else 1
        timing = _SRT_TIMING.match(block[timing_at]) if timing_at < len(block) else None
        body = "\n".join(line.rstrip() for line in block[timing_at + 1 :])
        cue = _timed_cue(timing, len(cues) + 1, body)
        if isinstance(cue, Cue):
            cues.append(cue)
        elif _meant_as_cue(block):
            unreadable.append(Unreadable(_label(block), cue))
    return ParsedCues(cues, unreadable)


def read_vtt(text: str) -> list[Cue]:
    """Cues from WebVTT text, speakers from voice tags, other markup removed, ids from 1."""
    return parse_vtt(text).cues


def parse_vtt(text: str) -> ParsedCues:
    """Cues from WebVTT text, and the cue blocks that could not be read."""
    lines = _raw_lines(text.removeprefix("\ufeff"))
    if not re.match(r"WEBVTT(?:[ \t]|$)", lines[0]):
        raise SubtideError(
            "bad_input", "not a WebVTT file", hint="A WebVTT file starts with the line WEBVTT."
        )
    cues: list[Cue] = []
    unreadable: list[Unreadable] = []
    for block in _blocks(lines[1:]):
        if _VTT_SKIPPED_BLOCK.match(block[0]) or not any("-->" in ln for ln in block[:2]):
            continue
        cue = _vtt_cue(block, len(cues) + 1)
        if isinstance(cue, Cue):
            cues.append(cue)
        else:
            unreadable.append(Unreadable(_label(block), cue))
    return ParsedCues(cues, unreadable)


def read_json(text: str) -> list[Cue]:
    """Cues from a Subtide JSON export, exactly as they were rendered."""
    try:
        return [Cue.model_validate(item) for item in json.loads(text)["cues"]]
    except (ValueError, KeyError, TypeError):
        # ValueError covers both malformed JSON and pydantic's ValidationError.
        raise SubtideError(
            "bad_input",
            "this JSON file is not a Subtide export",
            hint="Export the subtitles from Subtide again as JSON.",
        ) from None


def file_stem(source: Source, title: str | None) -> str:
    """The name a job's files get: the video title, else the file's name."""
    if title:
        return safe_stem(title)
    if source.path:
        return safe_stem(Path(source.path).stem)
    return "subtitles"


def safe_stem(title: str) -> str:
    """A file name stem from a video title that every desktop OS accepts; never empty."""
    cleaned = "".join(
        " " if ch in _UNSAFE_NAME_CHARS or unicodedata.category(ch) == "Cc" else ch for ch in title
    )
    # Leading dots hide the file (or make it ".."), Windows drops trailing dots and spaces.
    stem = " ".join(cleaned.split()).strip(". ")
    stem = stem[:_STEM_MAX_CHARS].rstrip(". ")
    if not stem:
        return _STEM_FALLBACK
    if stem.split(".")[0].upper() in _WINDOWS_RESERVED:
        return f"_{stem}"
    return stem


# --- shared -----------------------------------------------------------------------------------


def _entry(cue: Cue, lang: str | None, dual_with: str | None) -> _Entry:
    start_ms, end_ms = _span_ms(cue)
    main = _text_in(cue, lang)
    dual = main if dual_with is None else _text_in(cue, dual_with)
    # A missing translation falls back to the main text; showing it twice would only add noise.
    dual_lines = [] if dual == main else _lines(dual)
    return _Entry(start_ms, end_ms, _lines(main), dual_lines, cue.speaker)


def _span_ms(cue: Cue) -> tuple[int, int]:
    # Players reject negative or backwards times, so a bad cue is pinned rather than written.
    start = max(0, round(cue.start * 1000))
    return start, max(start, round(cue.end * 1000))


def _text_in(cue: Cue, lang: str | None) -> str:
    if lang is None:
        return cue.text
    translated = cue.translations.get(lang, "")
    return translated if translated.strip() else cue.text


def _lines(text: str) -> list[str]:
    # A blank line ends a cue in SRT and VTT, so one inside a cue would split it.
    return [line.strip() for line in text.splitlines() if line.strip()]


def _clock(ms: int) -> tuple[int, int, int, int]:
    seconds, milliseconds = divmod(ms, 1000)
    minutes, seconds = divmod(seconds, 60)
    hours, minutes = divmod(minutes, 60)
    return hours, minutes, seconds, milliseconds


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _plan_files(
    formats: Sequence[Format],
    stem: str,
    language: str,
    target_langs: Sequence[str],
    *,
    dual: bool,
) -> list[_PlannedFile]:
    # Language codes come from the job and land in file names, so they get the title's treatment.
    targets = [(lang, safe_stem(lang)) for lang in dict.fromkeys(target_langs)]
    source = safe_stem(language)
    plan: list[_PlannedFile] = []
    for fmt in dict.fromkeys(formats):
        if fmt == "json":
            plan.append(_PlannedFile(fmt, f"{stem}.json", None, None, None))
            continue
        plan.append(_PlannedFile(fmt, f"{stem}.{fmt}", None, None, language))
        plan.extend(
            _PlannedFile(fmt, f"{stem}.{name}.{fmt}", lang, None, lang) for lang, name in targets
        )
        if dual and fmt in _DUAL_FORMATS:
            plan.extend(
                _PlannedFile(fmt, f"{stem}.{source}-{name}.{fmt}", None, lang, f"{language}-{lang}")
                for lang, name in targets
            )
    return plan


# --- SRT --------------------------------------------------------------------------------------


def _render_srt(entries: Sequence[_Entry], style: Style) -> str:
    from pysrt import SubRipFile, SubRipItem, SubRipTime

    subs = SubRipFile(
        items=[
            SubRipItem(
                index=index,
                start=SubRipTime.from_ordinal(entry.start_ms),
                end=SubRipTime.from_ordinal(entry.end_ms),
                text="\n".join(_labelled(entry, style) + entry.dual_lines),
            )
            for index, entry in enumerate(entries, start=1)
        ]
    )
    out = io.StringIO()
    # pysrt defaults to os.linesep; the same bytes on every OS keep files and tests stable.
    subs.write_into(out, eol="\n")
    return out.getvalue()


def _labelled(entry: _Entry, style: Style) -> list[str]:
    if not (style.speaker_labels and entry.speaker):
        return entry.lines
    first, *rest = entry.lines or [""]
    return [f"[{_one_line(entry.speaker)}] {first}".rstrip(), *rest]


# --- VTT --------------------------------------------------------------------------------------


def _render_vtt(entries: Sequence[_Entry], style: Style, language: str | None) -> str:
    header = ["WEBVTT"]
    if language:
        header += ["Kind: captions", f"Language: {_one_line(language)}"]
    blocks = ["\n".join(header)]
    blocks += [_vtt_block(entry, style) for entry in entries]
    return "\n\n".join(blocks) + "\n"


def _vtt_block(entry: _Entry, style: Style) -> str:
    timing = f"{_vtt_time(entry.start_ms)} --> {_vtt_time(entry.end_ms)}"
    lines = [_vtt_escape(line) for line in entry.lines + entry.dual_lines]
    if style.speaker_labels and entry.speaker:
        voice = f"<v {_vtt_escape(_one_line(entry.speaker))}>"
        lines = [voice + (lines[0] if lines else ""), *lines[1:]]
    return "\n".join([timing, *lines])


def _vtt_time(ms: int) -> str:
    hours, minutes, seconds, millis = _clock(ms)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}.{millis:03d}"


def _vtt_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _raw_lines(text: str) -> list[str]:
    return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")


def _blocks(lines: Sequence[str]) -> list[list[str]]:
    blocks: list[list[str]] = [[]]
    for line in lines:
        # Only an empty line ends a block: YouTube's captions hold lines of one space.
        if line:
            blocks[-1].append(line)
        elif blocks[-1]:
            blocks.append([])
    return [block for block in blocks if block]


def _vtt_cue(block: Sequence[str], cue_id: int) -> Cue | str:
    """The cue of a block, or why it cannot be read."""
    # The timing line comes first, or second after an optional cue identifier.
    timing_at = 0 if "-->" in block[0] else 1
    text, speaker = _vtt_payload("\n".join(block[timing_at + 1 :]))
    cue = _timed_cue(_VTT_TIMING.match(block[timing_at]), cue_id, text)
    return cue.model_copy(update={"speaker": speaker}) if isinstance(cue, Cue) else cue


def _timed_cue(timing: re.Match[str] | None, cue_id: int, text: str) -> Cue | str:
    """A cue from a timing line's match, or why it cannot be one. A cue that ends before it
    starts is refused rather than mended: whichever time is wrong, a guess would show the text
    at the wrong moment."""
    if timing is None:
        return "timing line unreadable"
    times = timing.groups()
    start, end = _seconds_of(times[:4]), _seconds_of(times[4:])
    if end < start:
        return "ends before it starts"
    return Cue(id=cue_id, start=start, end=end, text=text)


def _meant_as_cue(block: Sequence[str]) -> bool:
    """An SRT block with an arrow, or a number over more lines, was written as a cue; other
    stray text (a blank line inside a cue's text leaves some) never was."""
    return any("-->" in line for line in block) or (block[0].strip().isdigit() and len(block) > 1)


def _label(block: Sequence[str]) -> str:
    """How an editor finds a cue: its number (or VTT identifier), else its first line."""
    number = block[0].strip()
    return f"cue {number}" if number.isdigit() else f'"{_clipped(block[0])}"'


def _clipped(line: str) -> str:
    line = line.strip()
    return line if len(line) <= _LABEL_CHARS else line[: _LABEL_CHARS - 1] + "…"


def _seconds_of(parts: Sequence[str | None]) -> float:
    hours, minutes, seconds, millis = (int(part or 0) for part in parts)
    return (((hours * 60 + minutes) * 60 + seconds) * 1000 + millis) / 1000


def _vtt_payload(payload: str) -> tuple[str, str | None]:
    voice = _VTT_VOICE.search(payload)
    speaker = (html.unescape(voice.group(1)).strip() or None) if voice else None
    # Tags go before entities are decoded, so an escaped "&lt;b&gt;" stays visible text.
    plain = html.unescape(_VTT_TAG.sub("", payload))
    return "\n".join(line.strip() for line in plain.split("\n") if line.strip()), speaker


# --- ASS --------------------------------------------------------------------------------------


def _render_ass(entries: Sequence[_Entry], title: str | None) -> str:
    styles = _ass_speaker_styles(entries)
    sections = [
        _ass_script_info(title),
        _ass_styles(styles),
        _ass_events(entries, styles),
    ]
    return "\n\n".join(sections) + "\n"


def _ass_script_info(title: str | None) -> str:
    return "\n".join(
        [
            "[Script Info]",
            f"Title: {_one_line(title or '') or 'Subtitles'}",
            "ScriptType: v4.00+",
            "PlayResX: 1920",
            "PlayResY: 1080",
            "WrapStyle: 0",
            "ScaledBorderAndShadow: yes",
        ]
    )


def _ass_speaker_styles(entries: Sequence[_Entry]) -> dict[str, str]:
    """Speaker -> a style name of its own, in order of first appearance."""
    styles: dict[str, str] = {}
    taken = {"Default"}
    for speaker in dict.fromkeys(entry.speaker for entry in entries if entry.speaker):
        base = _ass_field(speaker) or "Speaker"
        name, n = base, 2
        # Two speakers may clean up to the same name; a style name must stay unique.
        while name in taken:
            name, n = f"{base} {n}", n + 1
        styles[speaker] = name
        taken.add(name)
    return styles


def _ass_styles(speaker_styles: dict[str, str]) -> str:
    lines = [
        "[V4+ Styles]",
        "Format: Name, Fontname, Fontsize, PrimaryColour, SecondaryColour, OutlineColour, "
        "BackColour, Bold, Italic, Underline, StrikeOut, ScaleX, ScaleY, Spacing, Angle, "
        "BorderStyle, Outline, Shadow, Alignment, MarginL, MarginR, MarginV, Encoding",
        _ass_style_line("Default", _ASS_DEFAULT_COLOUR),
    ]
    lines += [
        _ass_style_line(name, _ASS_SPEAKER_PALETTE[index % len(_ASS_SPEAKER_PALETTE)])
        for index, name in enumerate(speaker_styles.values())
    ]
    return "\n".join(lines)


def _ass_style_line(name: str, rgb: str) -> str:
    # White-on-black-outline with a soft shadow, bottom centre (alignment 2), 60 px margins.
    return (
        f"Style: {name},Arial,{_ASS_FONT_SIZE},{_ass_colour(rgb)},&H000000FF,&H00000000,"
        "&H80000000,0,0,0,0,100,100,0,0,1,3,1,2,60,60,60,1"
    )


def _ass_colour(rgb: str) -> str:
    # ASS colours are &HAABBGGRR: alpha first, then the channels in reverse.
    return f"&H00{rgb[4:6]}{rgb[2:4]}{rgb[0:2]}"


def _ass_events(entries: Sequence[_Entry], speaker_styles: dict[str, str]) -> str:
    lines = [
        "[Events]",
        "Format: Layer, Start, End, Style, Name, MarginL, MarginR, MarginV, Effect, Text",
    ]
    lines += [_ass_dialogue(entry, speaker_styles) for entry in entries]
    return "\n".join(lines)


def _ass_dialogue(entry: _Entry, speaker_styles: dict[str, str]) -> str:
    style = speaker_styles.get(entry.speaker or "", "Default")
    name = _ass_field(entry.speaker or "")
    text = "\\N".join(_ass_escape(line) for line in entry.lines)
    if entry.dual_lines:
        dual = "\\N".join(_ass_escape(line) for line in entry.dual_lines)
        text += f"\\N{{\\fs{_ASS_DUAL_FONT_SIZE}\\i1}}{dual}"
    start, end = _ass_time(entry.start_ms), _ass_time(entry.end_ms)
    return f"Dialogue: 0,{start},{end},{style},{name},0,0,0,,{text}"


def _ass_time(ms: int) -> str:
    # Rounded to the nearest centisecond (not truncated): the error stays within 5 ms either way
    # instead of always pulling cues up to 10 ms early, and ordering is still preserved.
    hours, minutes, seconds, millis = _clock((ms + 5) // 10 * 10)
    return f"{hours}:{minutes:02d}:{seconds:02d}.{millis // 10:02d}"


def _ass_field(value: str) -> str:
    # Fields before Text are comma separated; a comma inside one would shift the rest.
    return _one_line(value.replace(",", " "))


def _ass_escape(line: str) -> str:
    # libass reads \{ and \} as literal braces; bare ones would open an override block.
    return line.replace("{", "\\{").replace("}", "\\}")


# --- TXT --------------------------------------------------------------------------------------


def _render_txt(entries: Sequence[_Entry], style: Style) -> str:
    paragraphs = [_txt_paragraph(group, style) for group in _paragraph_groups(entries)]
    return "\n\n".join(paragraphs) + "\n" if paragraphs else ""


def _paragraph_groups(entries: Sequence[_Entry]) -> list[list[_Entry]]:
    groups: list[list[_Entry]] = []
    for entry in entries:
        if not entry.lines:
            continue
        previous = groups[-1][-1] if groups else None
        if (
            previous is None
            or entry.speaker != previous.speaker
            or entry.start_ms - previous.end_ms >= _PARAGRAPH_PAUSE_MS
        ):
            groups.append([])
        groups[-1].append(entry)
    return groups


def _txt_paragraph(group: Sequence[_Entry], style: Style) -> str:
    text = ""
    for line in (line for entry in group for line in entry.lines):
        text = _join_words(text, line)
    speaker = group[0].speaker
    return f"{_one_line(speaker)}: {text}" if style.speaker_labels and speaker else text


def _join_words(left: str, right: str) -> str:
    if not left:
        return right
    if _NO_SPACE_SCRIPT.match(left[-1]) and _NO_SPACE_SCRIPT.match(right[0]):
        return left + right
    return f"{left} {right}"


# --- JSON -------------------------------------------------------------------------------------


def _render_json(
    cues: Sequence[Cue],
    *,
    title: str | None,
    language: str | None,
    duration: float | None,
    source: TextSource | None,
) -> str:
    document: dict[str, object] = {"title": title, "language": language, "duration": duration}
    if source is not None:
        document["source"] = source
    # Each cue lists the targets it kept its source text in; this says the same per target, so
    # a reader finds the lines to check without walking every cue.
    untranslated: dict[str, list[int]] = {}
    for cue in cues:
        for lang in cue.untranslated:
            untranslated.setdefault(lang, []).append(cue.id)
    if untranslated:
        document["untranslated"] = untranslated
    document["cues"] = [cue.model_dump() for cue in cues]
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
