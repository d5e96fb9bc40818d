"""Conversions between proto messages and the models' plain values, shared by every servicer.

Validation lives here too, so every service rejects the same bad input with the same field names.
"""

from __future__ import annotations

import numpy as np

from emoloop.models.emotions import EMOTIONS
from emoloop.services.server import InvalidArgument
from emoloop.v1 import common_pb2


def emotion_name(value: int, field: str, allow_unspecified: bool = False) -> str | None:
    """The model-side name of a proto Emotion; unknown or (unless allowed) UNSPECIFIED values are rejected."""
    if value == common_pb2.EMOTION_UNSPECIFIED and allow_unspecified:
        return None
    if not 1 <= value <= len(EMOTIONS):
        raise InvalidArgument(
            field, f"unknown emotion value {value}; expected one of {', '.join(n.upper() for n in EMOTIONS)}"
        )
    return EMOTIONS[value - 1]


def emotion_value(name: str) -> int:
    """The proto Emotion value of a model-side name."""
    return EMOTIONS.index(name) + 1


def scores_to_array(scores: common_pb2.EmotionScores) -> np.ndarray:
    """EmotionScores as a vector in EMOTIONS order."""
    return np.array([getattr(scores, name) for name in EMOTIONS], dtype=np.float64)


def array_to_scores(values: np.ndarray) -> common_pb2.EmotionScores:
    """A vector in EMOTIONS order as EmotionScores."""
    return common_pb2.EmotionScores(**{name: float(v) for name, v in zip(EMOTIONS, values, strict=True)})


def check_text(value: str, field: str, max_chars: int) -> str:
    """Reject text that is too long or carries control characters an engine would read aloud or choke on."""
    if len(value) > max_chars:
        raise InvalidArgument(field, f"{len(value)} characters is over the limit of {max_chars}")
    bad = next((c for c in value if (ord(c) < 32 and c not in "\t\n\r") or 0x7F <= ord(c) < 0xA0), None)
    if bad is not None:
        raise InvalidArgument(field, f"control character U+{ord(bad):04X} is not allowed")
    return value


def mono_encoding(audio_format: common_pb2.AudioFormat, field: str = "config.audio_format") -> int:
    """Check a format's channels and encoding (shared by every service); UNSPECIFIED encoding means LINEAR16."""
    if audio_format.channels not in (0, 1):
        raise InvalidArgument(f"{field}.channels", "only mono (1) audio is supported")
    if audio_format.encoding not in common_pb2.AudioEncoding.values():
        raise InvalidArgument(f"{field}.encoding", f"unknown encoding value {audio_format.encoding}")
    return audio_format.encoding or common_pb2.AUDIO_ENCODING_LINEAR16


def encode_audio(samples: np.ndarray, encoding: int) -> bytes:
    """float32 mono in [-1, 1] as the wire encoding (little-endian)."""
    if encoding == common_pb2.AUDIO_ENCODING_FLOAT32:
        return np.asarray(samples, dtype="<f4").tobytes()
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def decode_audio(data: bytes, encoding: int, field: str) -> np.ndarray:
    """Wire audio as float32 mono; rejects odd byte counts and non-finite samples, naming the field."""
    if encoding == common_pb2.AUDIO_ENCODING_FLOAT32:
        if len(data) % 4:
            raise InvalidArgument(field, f"{len(data)} bytes is not a whole number of FLOAT32 samples")
        samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
        if not np.all(np.isfinite(samples)):
            raise InvalidArgument(field, "FLOAT32 audio contains NaN or infinite samples")
        return samples
    if len(data) % 2:
        raise InvalidArgument(field, f"{len(data)} bytes is not a whole number of LINEAR16 samples")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
