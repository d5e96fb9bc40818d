"""Phrase segmentation of streamed text.

Synthesis starts once a whole phrase is known, so the first phrase is cut short (at the
first comma, or after a few words) to bring the first audio forward; later phrases run to
a sentence end, or a comma once they are long enough, so their prosody stays natural.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

_SENTENCE_END = ".!?;:"
# A terminator followed by whitespace closes a phrase; requiring the whitespace keeps
# "3.5" and "e.g." whole when the text arrives in pieces.
_BREAK = re.compile(r"[.!?;:,]+[\"')\]]*\s")


class PhraseSegmenter:
    """Feed text pieces (e.g. tokens from a language model); get complete phrases out."""

    def __init__(
        self,
        first_max_words: int = 6,
        min_clause_words: int = 6,
        max_words: int = 30,
    ) -> None:
        self.first_max_words = first_max_words
        self.min_clause_words = min_clause_words
        self.max_words = max_words
        self._pending = ""
        self._emitted = 0

    def feed(self, piece: str) -> list[str]:
        """Add a piece of text; return the phrases it completed (possibly none)."""
        self._pending += piece
        phrases = []
        while (phrase := self._next_phrase()) is not None:
            if phrase:
                phrases.append(phrase)
        return phrases

    def flush(self) -> list[str]:
        """End of text: return whatever is left as a last phrase."""
        phrases = self.feed(" ")
        rest = self._take(len(self._pending))
        if rest:
            phrases.append(rest)
        return phrases

    def _next_phrase(self) -> str | None:
        first = self._emitted == 0
        limit = self.first_max_words if first else self.max_words
        words = list(re.finditer(r"\S+\s", self._pending))
        limit_end = words[limit - 1].end() if len(words) >= limit else len(self._pending) + 1
        for match in _BREAK.finditer(self._pending):
            if match.end() > limit_end:
                break
            closes_sentence = any(c in _SENTENCE_END for c in match.group())
            long_enough = len(self._pending[: match.end()].split()) >= self.min_clause_words
            if closes_sentence or first or long_enough:
                return self._take(match.end())
        if limit_end <= len(self._pending):
            return self._take(limit_end)
        return None

    def _take(self, end: int) -> str:
        """Cut the pending text at `end`; "" when the cut holds nothing speakable."""
        phrase = " ".join(self._pending[:end].split())
        self._pending = self._pending[end:]
        if not any(c.isalnum() for c in phrase):
            return ""
        self._emitted += 1
        return phrase


def split_phrases(pieces: Iterable[str], **limits: int) -> Iterator[str]:
    """Phrases of a stream of text pieces, yielded as soon as each is complete."""
    segmenter = PhraseSegmenter(**limits)
    for piece in pieces:
        yield from segmenter.feed(piece)
    yield from segmenter.flush()
