"""Emotion names as the client uses them, derived from the proto enum (the client knows only the protos)."""

from __future__ import annotations

from emoloop.v1 import common_pb2

EMOTIONS = [n.removeprefix("EMOTION_").lower() for n in common_pb2.Emotion.keys()[1:]]
"""The six lower-case names in the protocol's order (UNSPECIFIED left out)."""


def emotion_of(value: int) -> str:
    """The lower-case name of a proto Emotion value."""
    return common_pb2.Emotion.Name(value).removeprefix("EMOTION_").lower()


def emotion_value(name: str) -> int:
    """The proto Emotion for a lower-case name ("calm"), with a clear error for an unknown one."""
    if name not in EMOTIONS:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(EMOTIONS)}")
    return common_pb2.Emotion.Value(f"EMOTION_{name.upper()}")


def scores_dict(scores: common_pb2.EmotionScores) -> dict[str, float]:
    """EmotionScores as {"neutral": p, ...} in the protocol's order."""
    return {name: round(float(getattr(scores, name)), 4) for name in EMOTIONS}
