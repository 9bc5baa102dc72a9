"""Timed words → readable subtitle cues, and line breaking for any cue text.

The limits come from `Style`: characters per line, lines per cue, reading speed, duration, gap.
Every sentence starts a new cue; a sentence too long for one cue is cut at its most natural word
boundary (pause, punctuation, conjunction, balance). `CueBuilder` works on a stream of words, so
cues reach the user while later audio is still being transcribed.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate, pairwise

from engine.protocol import Cue, Style, Word

_CJK_LANGUAGES = frozenset({"zh", "ja", "yue", "ko"})
# Korean puts spaces between words; these scripts do not.
_UNSPACED_LANGUAGES = frozenset({"zh", "ja", "yue"})

# Silence that ends a sentence even when the transcript has no punctuation there (Whisper drops
# full stops): a cue held across a longer one shows the words after it that long too early.
_SENTENCE_PAUSE_S = 1.0
# An unfinished sentence this many times max_duration long is emitted anyway, so a speaker who
# never pauses or punctuates still gets subtitles with bounded delay.
_LONG_RUN_FACTOR = 2.0
# Shortest cue we ever show: timestamps of zero-length words must not make a cue vanish.
_MIN_VISIBLE_S = 0.01

_CLOSERS = "\"'”’»」』）)]】〕］｝}》〉"
_SENTENCE_END = re.compile(f"[.?!…。？！‼⁇⁈⁉][{re.escape(_CLOSERS)}]*$")
_BREAK_PUNCTUATION = re.compile(f"[,;:–—.?!…、，；：。？！][{re.escape(_CLOSERS)}]*$")
# A full stop after these does not end a sentence.
_ABBREVIATIONS = frozenset(
    {"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "jr.", "sr.", "e.g.", "i.e."}
)
_STRIP = string.punctuation + string.whitespace + "“”‘’«»¿¡…–—、，。！？：；「」『』（）"

# Line-breaking rules (Japanese kinsoku, also right for Chinese and for Western punctuation):
# these never start a line…
_NO_LINE_START = frozenset(
    "、。，．,.!?！？：:；;…‥–—・ーゝゞ々ぁぃぅぇぉっゃゅょゎァィゥェォッャュョヮヵヶ" + _CLOSERS
)
# …and these never end one.
_NO_LINE_END = frozenset("「『（(【〔［[｛{《〈“‘«¿¡")
# Markup subtitle files carry (HTML tags such as <i> or <font color="#ff0000">, ASS overrides
# such as {\an8}): never split, and never counted as characters on the line, since no player
# shows it. "a < b" is no tag: one starts with a letter.
_MARKUP = re.compile(r"</?[A-Za-z][^<>]*>|\{\\[^{}]*\}")
# A word: what lies between spaces, where markup with spaces inside it is still one piece.
_WORD = re.compile(rf"(?:{_MARKUP.pattern}|\S)+")
# In unspaced scripts a run of Latin letters or digits is still one unbreakable word.
_UNSPACED_UNIT = re.compile(rf"{_MARKUP.pattern}|[A-Za-z0-9]+(?:['’.\-][A-Za-z0-9]+)*|\S")
_LATIN = re.compile(r"[A-Za-z0-9]")


def _word_set(words: str) -> frozenset[str]:
    return frozenset(words.split())


# Words that lean on what follows: a break before them reads well, a break after them does not.
_LINKERS: dict[str, frozenset[str]] = {
    "en": _word_set(
        "and but or nor so yet because since although though while whereas unless until if "
        "when where which that who whom whose what to in on at of for with from by about into "
        "onto over under after before between through during without as than the a an"
    ),
    "es": _word_set(
        "y e o u pero porque que cuando si aunque como donde de en a con para por sin el la "
        "los las un una"
    ),
    "fr": _word_set(
        "et ou mais donc car parce que qui quand si comme où de à en dans pour avec sans sur "
        "le la les un une des du"
    ),
    "de": _word_set(
        "und oder aber denn weil dass wenn als ob der die das den dem des ein eine mit von zu "
        "in auf für bei nach aus"
    ),
    "zh": _word_set("但是 可是 所以 因为 而且 如果 然后 或者 和 但 而"),
}

# Scores for cut points (higher bonus = more natural place to break).
_PUNCTUATION_BONUS = 2.0  # strong: the text itself pauses there
_LINKER_BONUS = 1.0  # medium
_PAUSE_BONUS_PER_S = 3.0  # strong once the speaker pauses for a good fraction of a second
_PAUSE_BONUS_CAP_S = 1.0
_CUT_BALANCE_WEIGHT = 4.0  # cost of cutting half a cue's length away from an even split
_ORPHAN_COST = 3.0  # a cue of one word reads badly
_EXTRA_CUE_COST = 4.0  # per cue more than the sentence needs
_LINE_BALANCE_WEIGHT = 40.0  # cost per (line length off target / limit)²
_BOTTOM_HEAVY = 0.1  # lower lines aim a little longer: the eye drops down naturally
_OVERFLOW_COST_PER_CHAR = 1000.0  # any fitting layout beats every overflowing one


def is_cjk(language: str | None) -> bool:
    """True where lines are counted with the shorter CJK character limit."""
    return _base_language(language) in _CJK_LANGUAGES


def wrap_text(text: str, style: Style, language: str | None) -> str:
    """Break one cue's text into at most `style.max_lines` lines, joined by "\\n".

    Lines stay within the line limit when the text allows; otherwise all the text is still
    returned, as evenly spread as possible.
    """
    return _Rules.of(style, language).wrap(text)


def char_budget(style: Style, language: str | None, duration: float) -> int:
    """The most characters a cue of `duration` seconds may hold in `language`: what its lines
    take, and what a viewer reads at the style's characters per second."""
    lines = _Rules.of(style, language).limit * style.max_lines
    return max(1, min(lines, int(duration * style.max_cps)))


def fits(text: str, style: Style, language: str | None, duration: float) -> bool:
    """Whether a cue's text, wrapped by the language's rules, is within the style's limits:
    its lines, their length, and its reading speed over `duration`."""
    rules = _Rules.of(style, language)
    lines = rules.wrap(text).split("\n")
    widths = [_width(line) for line in lines]
    within_lines = len(lines) <= style.max_lines and max(widths) <= rules.limit
    reading = sum(widths)
    return within_lines and (duration <= 0 or reading / duration <= style.max_cps)


def ends_sentence(word: Word) -> bool:
    """Whether the word ends its sentence ("Mr." does not)."""
    text = word.text.strip()
    return bool(_SENTENCE_END.search(text)) and text.lower() not in _ABBREVIATIONS


def build_cues(words: Sequence[Word], style: Style, language: str | None) -> list[Cue]:
    """All cues for a complete transcript."""
    builder = CueBuilder(style, language)
    return builder.add(words) + builder.finish()


class CueBuilder:
    """Streaming: feed words as segments are decoded, get back the cues that became final.

    A cue is final once neither its text nor its timing can change any more.
    """

    def __init__(self, style: Style, language: str | None, first_id: int = 1) -> None:
        self._rules = _Rules.of(style, language)
        self._next_id = first_id
        self._sentence: list[Word] = []
        # The last finished cue's words: its end depends on when the next cue starts.
        self._held: list[Word] | None = None
        self._prev_end = 0.0

    def add(self, words: Iterable[Word]) -> list[Cue]:
        """Take the next words; return the cues that became final (possibly none)."""
        out: list[Cue] = []
        for word in words:
            if self._sentence and word.start - self._sentence[-1].end >= _SENTENCE_PAUSE_S:
                self._close_sentence(out)
            self._release(word.start, out)
            self._sentence.append(word)
            if ends_sentence(word):
                self._close_sentence(out)
            elif self._run_too_long():
                self._emit_early(out)
        return out

    def quiet_until(self, until: float) -> list[Cue]:
        """No word to come starts before `until`: the cues that settles, exactly as the next
        word would settle them. A sentence ends at a long enough pause, and the cue held for
        its end is final once the next cue could not cut its reading time short."""
        out: list[Cue] = []
        if self._sentence and until - self._sentence[-1].end >= _SENTENCE_PAUSE_S:
            self._close_sentence(out)
        if self._held is not None and not self._sentence:
            text = self._rules.join(self._held)
            _, end = _place(self._held, len(text), self._prev_end, None, self._rules.style)
            if until - end >= self._rules.style.min_gap:
                self._release(None, out)
        return out

    def finish(self) -> list[Cue]:
        """Flush the unfinished sentence and the held cue: the transcript has ended."""
        out: list[Cue] = []
        self._close_sentence(out)
        self._release(None, out)
        return out

    def _run_too_long(self) -> bool:
        span = self._sentence[-1].end - self._sentence[0].start
        return span > _LONG_RUN_FACTOR * self._rules.style.max_duration

    def _close_sentence(self, out: list[Cue]) -> None:
        if self._sentence:
            for piece in self._rules.split(self._sentence):
                self._push(piece, out)
        self._sentence = []

    def _emit_early(self, out: list[Cue]) -> None:
        # Keep the last piece buffered: the sentence goes on and may still join it.
        *done, self._sentence = self._rules.split(self._sentence)
        for piece in done:
            self._push(piece, out)
        self._release(self._sentence[0].start, out)

    def _push(self, piece: list[Word], out: list[Cue]) -> None:
        self._release(piece[0].start, out)
        self._held = piece

    def _release(self, next_start: float | None, out: list[Cue]) -> None:
        if self._held is not None:
            out.append(self._cue(self._held, next_start))
            self._held = None

    def _cue(self, words: list[Word], next_start: float | None) -> Cue:
        text = self._rules.join(words)
        start, end = _place(words, len(text), self._prev_end, next_start, self._rules.style)
        self._prev_end = end
        cue = Cue(id=self._next_id, start=start, end=end, text=self._rules.wrap(text), words=words)
        self._next_id += 1
        return cue


def _place(
    words: Sequence[Word], chars: int, prev_end: float, next_start: float | None, style: Style
) -> tuple[float, float]:
    """Start and end of a cue: follow the speech, then give the reader time where there is room."""
    start = words[0].start
    if next_start is not None and next_start - start < _MIN_VISIBLE_S:
        # Zero-length or overlapping word times leave no room at all before the next cue: show
        # this one a moment early rather than overlap, but never over the previous cue.
        start = max(next_start - _MIN_VISIBLE_S, prev_end)
    latest = math.inf if next_start is None else next_start - style.min_gap
    reading_time = max(style.min_duration, chars / style.max_cps)
    end = max(words[-1].end, start + min(reading_time, style.max_duration))
    # A cue too short to see is worse than a gap below min_gap; an overlap is never allowed.
    end = max(min(end, latest), start + _MIN_VISIBLE_S)
    if next_start is not None:
        end = min(end, next_start)
    return start, end


@dataclass(frozen=True, slots=True)
class _Token:
    """A piece of text that a line break never splits."""

    text: str
    sep: str  # what joins it to the token before when both share a line


@dataclass(frozen=True)
class _Rules:
    """The style resolved for one language: how to join, wrap and cut its text."""

    style: Style
    limit: int
    unspaced: bool
    linkers: frozenset[str]

    @classmethod
    def of(cls, style: Style, language: str | None) -> _Rules:
        base = _base_language(language)
        return cls(
            style=style,
            limit=style.max_chars_per_line_cjk if is_cjk(base) else style.max_chars_per_line,
            unspaced=base in _UNSPACED_LANGUAGES,
            # Unknown languages get the English list: code-switching into English is common.
            linkers=_LINKERS.get(base or "en", _LINKERS["en"]),
        )

    def join(self, words: Sequence[Word]) -> str:
        if not self.unspaced:
            return " ".join("".join(word.text for word in words).split())
        parts: list[str] = []
        for word in words:
            text = word.text.strip()
            # Latin words inside Chinese or Japanese text keep the space between them.
            if text and parts and _LATIN.match(parts[-1][-1]) and _LATIN.match(text[0]):
                parts.append(" ")
            if text:
                parts.append(text)
        return "".join(parts)

    def wrap(self, text: str) -> str:
        return "\n".join(self.lines(text))

    def lines(self, text: str) -> list[str]:
        tokens = _tokens(text, self.unspaced)
        if not tokens:
            return []
        lines = [_join_tokens(tokens)]
        count = 1
        while max(map(_width, lines)) > self.limit and count < min(
            self.style.max_lines, len(tokens)
        ):
            count += 1
            lines = _partition(tokens, count, self.limit, self.linkers)
        return lines

    def split(self, words: Sequence[Word]) -> list[list[Word]]:
        """Cut one sentence into pieces that each fit a cue (a single word always does)."""
        text = self.join(words)
        if len(words) == 1 or self._fits(words, text):
            return [list(words)]
        cut = self._best_cut(words, text)
        return self.split(words[:cut]) + self.split(words[cut:])

    def _fits(self, words: Sequence[Word], text: str) -> bool:
        style = self.style
        if words[-1].end - words[0].start > style.max_duration:
            return False
        # Unreadable even in the longest cue allowed: shorter cues each get their own time.
        if len(text) > style.max_cps * style.max_duration:
            return False
        # Cheap bound before searching line breaks: each break drops at most one space.
        if len(text) > (self.limit + 1) * style.max_lines:
            return False
        return all(_width(line) <= self.limit for line in self.lines(text))

    def _best_cut(self, words: Sequence[Word], text: str) -> int:
        """Index of the word that starts the second piece."""
        separator = 0 if self.unspaced else 1
        ends = list(accumulate(len(word.text.strip()) + separator for word in words))
        parts = max(2, math.ceil(self._load(len(text), words[-1].end - words[0].start)))
        return min(range(1, len(words)), key=lambda cut: self._cut_cost(words, cut, ends, parts))

    def _load(self, chars: float, duration: float) -> float:
        """How many cues' worth of text and speech this is (1.0 = a full cue)."""
        style = self.style
        return max(
            chars / (self.limit * style.max_lines),
            duration / style.max_duration,
            chars / (style.max_cps * style.max_duration),
        )

    def _cut_cost(self, words: Sequence[Word], cut: int, ends: list[int], parts: int) -> float:
        before, after = words[cut - 1], words[cut]
        left, right = ends[cut - 1], ends[-1] - ends[cut - 1]
        # Aim at an even share for every piece the sentence needs, not just at the middle, and
        # avoid cuts that leave a side needing more cues than its share: a sentence worth three
        # cues must not end up as four.
        off = min(abs(left / ends[-1] - k / parts) for k in range(1, parts))
        cost = _CUT_BALANCE_WEIGHT * (parts * off) ** 2
        needed = math.ceil(self._load(left, before.end - words[0].start)) + math.ceil(
            self._load(right, words[-1].end - after.start)
        )
        cost += _EXTRA_CUE_COST * max(needed - parts, 0)
        pause = min(max(after.start - before.end, 0.0), _PAUSE_BONUS_CAP_S)
        cost -= _PAUSE_BONUS_PER_S * pause
        cost -= _boundary_bonus(before.text, after.text, self.linkers)
        if len(words) > 2 and min(cut, len(words) - cut) == 1:
            cost += _ORPHAN_COST
        return cost


def _base_language(language: str | None) -> str | None:
    # "zh-TW", "pt_BR", "JA" → their base code, as Whisper and translation targets may differ.
    return language.lower().replace("_", "-").split("-")[0] if language else None


def _boundary_bonus(left: str, right: str, linkers: frozenset[str]) -> float:
    """How natural a break between these two texts is (higher is better)."""
    bonus = _PUNCTUATION_BONUS if _BREAK_PUNCTUATION.search(left.strip()) else 0.0
    if _bare(right) in linkers:
        bonus += _LINKER_BONUS
    if _bare(left) in linkers:
        bonus -= _LINKER_BONUS
    return bonus


def _bare(text: str) -> str:
    return text.strip(_STRIP).lower()


def _width(text: str) -> int:
    """Characters a reader sees: markup takes no room on the line."""
    return len(_MARKUP.sub("", text))


def _tokens(text: str, unspaced: bool) -> list[_Token]:
    words = _WORD.findall(text)
    if not unspaced:
        return _bind([_Token(word, " ") for word in words])
    units = [
        _Token(match.group(), " " if index == 0 else "")
        for word in words
        for index, match in enumerate(_UNSPACED_UNIT.finditer(word))
    ]
    return _bind(units)


def _bind(units: list[_Token]) -> list[_Token]:
    """Glue punctuation that must not start a line to the token before, and punctuation that
    must not end a line to the token after, so no break can separate them. Markup alone goes
    with the text it belongs to: an opening tag with what follows, a closing one with what
    came before."""
    tokens: list[_Token] = []
    for unit in units:
        if tokens and _glued(tokens[-1].text, unit.text):
            tokens[-1] = _Token(tokens[-1].text + unit.sep + unit.text, tokens[-1].sep)
        else:
            tokens.append(unit)
    if len(tokens) > 1 and not _width(tokens[-1].text):  # an opening tag with nothing after
        last = tokens.pop()
        tokens[-1] = _Token(tokens[-1].text + last.sep + last.text, tokens[-1].sep)
    return tokens


def _glued(before: str, after: str) -> bool:
    """Whether no line break may come between these two tokens."""
    shown_before, shown_after = _MARKUP.sub("", before), _MARKUP.sub("", after)
    if not shown_before and not before.startswith("</"):  # opening markup
        return True
    if not shown_after:
        return after.startswith("</")
    return _only(shown_after, _NO_LINE_START) or _only(shown_before, _NO_LINE_END)


def _only(text: str, chars: frozenset[str]) -> bool:
    return all(char in chars for char in text)


def _join_tokens(tokens: Sequence[_Token]) -> str:
    return tokens[0].text + "".join(token.sep + token.text for token in tokens[1:])


def _partition(
    tokens: Sequence[_Token], count: int, limit: int, linkers: frozenset[str]
) -> list[str]:
    """The best way to lay the tokens out on exactly `count` lines (dynamic programming)."""
    offsets = list(accumulate((len(t.sep) + _width(t.text) for t in tokens), initial=0))

    def width(first: int, stop: int) -> int:
        return offsets[stop] - offsets[first] - len(tokens[first].sep)

    mean = width(0, len(tokens)) / count

    def line_cost(first: int, stop: int, row: int) -> float:
        target = mean * (1 + _BOTTOM_HEAVY * (row - (count - 1) / 2))
        excess = max(0, width(first, stop) - limit)
        off = (width(first, stop) - target) / limit
        return _OVERFLOW_COST_PER_CHAR * excess + _LINE_BALANCE_WEIGHT * off * off

    def break_cost(index: int) -> float:
        return -_boundary_bonus(tokens[index - 1].text, tokens[index].text, linkers)

    # best[stop] = (cost, line starts) for tokens[:stop] laid out on row + 1 lines; every
    # line holds at least one token, so each row's stops are bounded on both sides.
    spare = len(tokens) - count
    best = {stop: (line_cost(0, stop, 0), (0,)) for stop in range(1, spare + 2)}
    for row in range(1, count):
        best = {
            stop: min(
                (
                    best[first][0] + break_cost(first) + line_cost(first, stop, row),
                    (*best[first][1], first),
                )
                for first in range(row, stop)
            )
            for stop in range(row + 1, spare + row + 2)
        }
    starts = (*best[len(tokens)][1], len(tokens))
    return [_join_tokens(tokens[a:b]) for a, b in pairwise(starts)]
