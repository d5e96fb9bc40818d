"""Light engine: espeak-ng formant synthesis with direct pitch, range, rate and volume.

A phrase takes a few milliseconds, so each phrase is produced whole. espeak-ng has no
jitter control, so `jitter_semitones` of the prosody table is not rendered here.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

from ..prosody import Prosody, prosody_for
from . import AudioChunk, VoiceInfo, stream_phrases
from .espeak_lib import DEFAULT_PARAMETERS, LICENSE, PITCH, RANGE, RATE, VOLUME, espeak

# espeak-ng's pitch parameter (default 50) is not linear in semitones; these points were
# measured on en-us (mean F0 shift of a sentence at parameter 0, 25, 50, 75, 99).
_PITCH_SEMITONES = (-4.7, -3.3, 0.0, 4.4, 9.0)
_PITCH_PARAMETER = (0, 25, 50, 75, 99)


def espeak_parameters(prosody: Prosody) -> dict[int, int]:
    """espeak-ng parameter values that realise a prosody entry."""
    return {
        PITCH: round(float(np.interp(prosody.pitch_shift_semitones, _PITCH_SEMITONES, _PITCH_PARAMETER))),
        # espeak's range is a width in Hz, so a raised voice needs a wider one to keep
        # the same width in semitones.
        RANGE: round(
            min(
                100.0,
                DEFAULT_PARAMETERS[RANGE] * prosody.pitch_range_ratio * 2.0 ** (prosody.pitch_shift_semitones / 12.0),
            )
        ),
        RATE: round(DEFAULT_PARAMETERS[RATE] * prosody.rate_ratio),
        VOLUME: round(min(200.0, DEFAULT_PARAMETERS[VOLUME] * prosody.volume_ratio)),
    }


class EspeakEngine:
    """espeak-ng voices by language code (e.g. "en-us"), one chunk per phrase."""

    def __init__(self, default_voice: str = "en-us") -> None:
        self.default_voice = default_voice
        self.sample_rate_hz = espeak().sample_rate_hz
        # Voices are named by language code; espeak-ng selects them by identifier ("en-gb" is "gmw/en").
        self._identifiers = {v.language: v.identifier for v in espeak().voices()}

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(v.language, "espeak", v.language, self.sample_rate_hz, LICENSE) for v in espeak().voices()]

    def synthesize(
        self,
        text: str | Iterable[str],
        emotion: str = "neutral",
        voice: str | None = None,
        prosody: Prosody | None = None,
    ) -> Iterator[AudioChunk]:
        parameters = espeak_parameters(prosody or prosody_for(emotion))
        name = voice or self.default_voice
        language, plus, variant = name.partition("+")  # "en-us+f2": a voice with a variant
        if language not in self._identifiers:
            raise ValueError(f"unknown espeak voice {name!r}")
        selector = self._identifiers[language] + plus + variant

        def render(phrase: str) -> Iterator[np.ndarray]:
            yield espeak().synthesize(phrase, selector, parameters)

        return stream_phrases(text, render, self.sample_rate_hz)
