"""The six emotions, in the one order every model, table and file uses."""

from __future__ import annotations

EMOTIONS: tuple[str, ...] = ("neutral", "calm", "happy", "sad", "angry", "fearful")
"""Index i of a probability vector is EMOTIONS[i]; the proto enum value is i + 1."""


def emotion_index(name: str) -> int:
    """Position of an emotion name, raising ValueError that lists the valid names."""
    try:
        return EMOTIONS.index(name)
    except ValueError:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}") from None
