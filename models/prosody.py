"""Emotion -> prosody table, loaded from `prosody.toml` (data, not code) and validated."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields
from functools import cache
from pathlib import Path

from .emotions import EMOTIONS

DEFAULT_TABLE = Path(__file__).with_name("prosody.toml")


@dataclass(frozen=True)
class Prosody:
    """How one emotion changes delivery relative to the voice's neutral (see prosody.toml)."""

    pitch_shift_semitones: float
    pitch_range_ratio: float
    rate_ratio: float
    volume_ratio: float
    jitter_semitones: float
    noise_scale_ratio: float
    noise_w_ratio: float

    @property
    def duration_ratio(self) -> float:
        return 1.0 / self.rate_ratio

    @property
    def changes_pitch(self) -> bool:
        return (self.pitch_shift_semitones, self.pitch_range_ratio, self.jitter_semitones) != (
            0.0,
            1.0,
            0.0,
        )


_KEYS = tuple(f.name for f in fields(Prosody))
_RATIOS = {key for key in _KEYS if key.endswith("_ratio")}


def parse_prosody(table: dict) -> dict[str, Prosody]:
    """Validate a decoded table; every error names the offending emotion or key."""
    unknown = set(table) - set(EMOTIONS)
    if unknown:
        raise ValueError(f"unknown emotion(s) in prosody table: {sorted(unknown)}")
    result = {}
    for emotion in EMOTIONS:
        if emotion not in table:
            raise ValueError(f"prosody table lacks emotion {emotion!r}")
        entry = table[emotion]
        extra = set(entry) - set(_KEYS)
        if extra:
            raise ValueError(f"unknown key(s) for {emotion!r}: {sorted(extra)}")
        values = {}
        for key in _KEYS:
            if key not in entry:
                raise ValueError(f"{emotion!r} lacks key {key!r}")
            value = entry[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{emotion}.{key} must be a number, got {value!r}")
            if key in _RATIOS and value <= 0:
                raise ValueError(f"{emotion}.{key} must be > 0, got {value}")
            if key == "jitter_semitones" and value < 0:
                raise ValueError(f"{emotion}.{key} must be >= 0, got {value}")
            values[key] = float(value)
        result[emotion] = Prosody(**values)
    return result


def load_prosody(path: Path | str = DEFAULT_TABLE) -> dict[str, Prosody]:
    """Read and validate a prosody table file."""
    with open(path, "rb") as file:
        return parse_prosody(tomllib.load(file))


@cache
def default_prosody() -> dict[str, Prosody]:
    return load_prosody()


def prosody_for(emotion: str) -> Prosody:
    """The default table's entry; ValueError for an emotion outside EMOTIONS."""
    table = default_prosody()
    if emotion not in table:
        raise ValueError(f"unknown emotion {emotion!r}; expected one of {EMOTIONS}")
    return table[emotion]
