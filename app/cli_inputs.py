"""What `subtide run` and `subtide translate` are given, checked before any model loads or any
byte is downloaded: each problem names the option it is about (`--max-chars`, not the protocol's
`max_chars_per_line`). Light on imports, like the rest of the command line."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

    from cloud.detect import Target
    from engine.protocol import Source, SubtideError


# JobSpec's fields (and those of the models inside it) as the options that set them.
_OPTION_OF = {
    "source_lang": "-l/--lang",
    "target_langs": "--to",
    "whisper_model": "-m/--model",
    "diarize": "--diarize",
    "num_speakers": "--speakers",
    "min_speakers": "--min-speakers",
    "max_speakers": "--max-speakers",
    "speaker_names": "--speaker-names",
    "glossary": "--glossary",
    "description": "--about",
    "formats": "-f/--format",
    "max_chars_per_line": "--max-chars",
    "base_url": "--llm-url",
    "model": "--llm-model",
    "api_key": "--llm-key",
    "dual": "--dual",
    "speaker_labels": "--speaker-labels",
}
# Field names in a message (a model validator's "min_speakers must not exceed max_speakers");
# plain words such as "model" are left alone.
_FIELD_NAMES = re.compile(r"\b(" + "|".join(f for f in _OPTION_OF if "_" in f) + r")\b")
# A token that looks like a file name: "-x.m4a", "-take 2.wav".
_FILE_LIKE = re.compile(r"\.[A-Za-z][A-Za-z0-9]{1,4}$")


class UsageError(Exception):
    """A wrong option or setting, found before any work: exit status 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def dash_name_hint(argv: Sequence[str]) -> str | None:
    """Advice for a file whose name starts with "-", which argparse takes for an option."""
    for token in argv:
        if token == "--":
            break
        if not token.startswith("-") or "=" in token:
            continue
        if Path(token).exists() or _FILE_LIKE.search(token):
            return f"if {token} is a file, write ./{token}, or put -- before the file names"
    return None


def check_languages(args: argparse.Namespace) -> None:
    """`-l` and `--to` as known codes, normalised in place; Whisper must know the spoken one,
    while `translate -l` only tells the LLM what the files are in."""
    if not args.lang and not args.to:
        return
    from engine.languages import check_spoken, check_target

    if args.lang:
        check = check_target if args.translate_only else check_spoken
        args.lang = _as_option("-l/--lang", check, args.lang)
    targets = [_as_option("--to", check_target, code) for code in args.to]
    args.to = list(dict.fromkeys(targets))


def _as_option(option: str, check: Callable[[str], str], code: str) -> str:
    from engine.protocol import SubtideError

    try:
        return check(code)
    except SubtideError as exc:
        raise UsageError(f"{option}: {exc.message}", exc.hint) from None


def check_model(spec: str | None) -> None:
    """`-m` that can never load (an unknown name, a missing folder) is refused before any
    work, with the choices; a hub id is left to the hub. engine.asr is light: no faster-whisper
    until a model loads."""
    if spec is None:
        return
    from engine.asr import check_model_spec
    from engine.protocol import SubtideError

    try:
        check_model_spec(spec)
    except SubtideError as exc:
        raise UsageError(f"-m/--model: {exc.message}", exc.hint) from None


def check_llm_url(url: str | None) -> None:
    if url is None:
        return
    from cloud.detect import split_http_url
    from engine.protocol import SubtideError

    try:
        split_http_url(url)
    except SubtideError as exc:
        raise UsageError(
            f"--llm-url {url!r}: {exc.message}",
            "Give an OpenAI-compatible base URL, e.g. https://api.openai.com/v1 or "
            "http://localhost:11434/v1",
        ) from None


def backend_target(url: str, option: str) -> Target:
    """The backend `url` classified; a UsageError naming `option` (or the variable it came
    from) when it can't be a backend URL."""
    import cloud
    from engine.protocol import SubtideError

    try:
        return cloud.detect(url)
    except SubtideError as exc:
        raise UsageError(f"{option}: {exc.message}", exc.hint) from None


def check_output_folder(folder: Path) -> None:
    """`-o` must be a folder this user can write in, or one that can be made: found now, not
    after minutes of transcription."""
    path = folder.expanduser()
    existing, missing = path, None
    while not existing.exists():
        if existing.parent == existing:
            break
        existing, missing = existing.parent, existing
    if existing.exists() and not existing.is_dir():
        shown = "it" if existing == path else str(existing)
        raise UsageError(
            f"-o: {folder} can't be the output folder: {shown} is a file",
            hint="name a folder, e.g. -o subtitles/",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"-o: can't write in {existing} (permission denied)")
    if missing is None:
        return
    # Made and removed at once: some places refuse a new folder whatever access() says
    # (/proc, a read-only mount), and a run that fails should leave no empty folder behind.
    try:
        missing.mkdir()
        missing.rmdir()
    except OSError as exc:
        raise UsageError(
            f"-o: can't make the folder {folder} ({exc.strerror or exc})",
            hint="name a folder you can write in",
        ) from None


def load_glossary(path: Path | None) -> dict[str, str]:
    if path is None:
        return {}
    from engine.protocol import SubtideError
    from engine.translate import load_glossary

    try:
        return load_glossary(path)
    except SubtideError as exc:
        raise UsageError(f"--glossary: {exc.message}", exc.hint) from None


def job_options(args: argparse.Namespace, glossary: dict[str, str]) -> dict[str, Any]:
    """The JobSpec fields the options set (all but the source and formats), validated now, so
    that a wrong value stops the run before it starts."""
    from pydantic import ValidationError

    from engine.protocol import JobSpec, Source

    style: dict[str, Any] = {"dual": args.dual, "speaker_labels": args.speaker_labels}
    if args.max_chars is not None:
        style["max_chars_per_line"] = args.max_chars
    llm = None
    if args.llm_url or args.llm_model or args.llm_key:
        llm = {"base_url": args.llm_url, "model": args.llm_model, "api_key": args.llm_key}
    fields = {
        "source_lang": args.lang,
        "target_langs": args.to,
        "whisper_model": args.model,
        "translation": llm,
        "glossary": glossary,
        "description": args.about,
        "diarize": args.diarize,
        "num_speakers": args.speakers,
        "min_speakers": args.min_speakers,
        "max_speakers": args.max_speakers,
        "speaker_names": args.speaker_names,
        "style": style,
        "force_asr": args.force_asr,
        "recue_captions": args.recue,
        "skip_unreadable_cues": args.force,
    }
    try:
        # The options alone: any source will do, since every source gets the same ones.
        JobSpec(source=Source(path="-"), **fields)
    except ValidationError as exc:
        raise UsageError(option_problem(exc)) from None
    return fields


def option_problem(exc: ValidationError) -> str:
    """The first problem of a JobSpec's validation, in the words of the command line."""
    error = exc.errors()[0]
    option = next((_OPTION_OF[p] for p in reversed(error["loc"]) if p in _OPTION_OF), None)
    message = _FIELD_NAMES.sub(lambda m: _OPTION_OF[m[1]], error["msg"])
    message = message.removeprefix("Value error, ")
    message = re.sub(r"^(Input|String|List|Dictionary) should", "must", message)
    return f"{option} {message}" if option else message


def source_of(text: str, *, translate_only: bool) -> Source:
    """The Source a command-line SOURCE stands for; a `bad_input` SubtideError for one that can
    never work: a link that does not parse, a missing file, a folder, a named pipe (reading it
    would wait forever for a writer), or a non-subtitle file given to `translate`."""
    from cloud.detect import split_http_url
    from engine.ffmpeg import require_file
    from engine.formats import SUBTITLE_SUFFIXES
    from engine.protocol import Source, SubtideError

    if "://" in text and not translate_only:
        try:
            split_http_url(text)
        except SubtideError as exc:
            raise SubtideError("bad_input", exc.message, "check the link") from None
        return Source(url=text)
    path = Path(text).expanduser()
    subtitles = path.suffix.lower() in SUBTITLE_SUFFIXES
    if translate_only and not subtitles:
        raise SubtideError("bad_input", "translate takes .srt or .vtt files")
    require_file(path, "subtitle file" if subtitles else "media file")
    return Source(path=text)


def said(exc: SubtideError | UsageError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message
