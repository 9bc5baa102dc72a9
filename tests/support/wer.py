"""Word error rate, for checking transcripts against a known script.

Both sides are normalised first, so that only words count: case and punctuation go, hyphens
split words ("ill-disposed" is "ill disposed"), titles are spelled out ("Mr." is "mister") and
so are numbers ("10" is "ten"), as a reader says them.
"""

from __future__ import annotations

import re

_WORD = re.compile(r"[\w']+")
_NUMBER = re.compile(r"\d+(?:,\d{3})*")
_TITLES = {"mr": "mister", "mrs": "missus", "ms": "miss", "dr": "doctor"}
_ONES = [
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"),
    *("eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen"),
    *("eighteen", "nineteen"),
]
_TENS = ["", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"]


def words(text: str) -> list[str]:
    """The text's words, normalised."""
    text = _NUMBER.sub(lambda m: " " + spoken(int(m[0].replace(",", ""))) + " ", text)
    return [_TITLES.get(word, word) for word in _WORD.findall(text.lower())]


def spoken(number: int) -> str:
    """A whole number below a billion as words: 1999 is "one thousand nine hundred ninety nine"."""
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    for size, name in ((10**6, "million"), (1000, "thousand"), (100, "hundred")):
        if number >= size:
            high, rest = divmod(number, size)
            return f"{spoken(high)} {name}" + (f" {spoken(rest)}" if rest else "")
    raise AssertionError("unreachable")


def align(reference: list[str], hypothesis: list[str]) -> list[tuple[int | None, int | None]]:
    """A least-edit alignment as (reference index, hypothesis index) pairs in order: both set for
    a match or substitution, one None for a deletion or insertion."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    cost = [[i + j if not i or not j else 0 for j in range(cols)] for i in range(rows)]
    for i in range(1, rows):
        for j in range(1, cols):
            cost[i][j] = min(
                cost[i - 1][j] + 1,
                cost[i][j - 1] + 1,
                cost[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]),
            )
    pairs: list[tuple[int | None, int | None]] = []
    i, j = rows - 1, cols - 1
    while i or j:
        changed = i and j and reference[i - 1] != hypothesis[j - 1]
        if i and j and cost[i][j] == cost[i - 1][j - 1] + changed:
            i, j = i - 1, j - 1
            pairs.append((i, j))
        elif i and cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
            pairs.append((i, None))
        else:
            j -= 1
            pairs.append((None, j))
    return pairs[::-1]


def edits(reference: str, hypothesis: str) -> tuple[int, int]:
    """Substitutions + deletions + insertions, and the reference's words: summed over many
    transcripts, their ratio is the WER of all of them."""
    ref, hyp = words(reference), words(hypothesis)
    changed = sum(r is None or h is None or ref[r] != hyp[h] for r, h in align(ref, hyp))
    return changed, len(ref)


def wer(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words."""
    changed, said = edits(reference, hypothesis)
    return changed / max(said, 1)
