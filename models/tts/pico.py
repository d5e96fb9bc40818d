"""Pico engine: SVOX Pico's English voices (en-US, en-GB), through the py-nanotts library.

One more family of synthesis for SER training data: Pico's small HMM-based statistical-parametric voices, the
ones Android shipped, made by another company with another vocoder than the HTS voice festival offers. Rate
goes into Pico's own speed control (the inverse of the duration stretch); pitch is edited with WORLD (see
program.py). Pico speaks at 16 kHz.

py-nanotts (Apache-2.0, Pico's language files included, no download) is a wheel for Linux x86-64 and an sdist
to build elsewhere (`pip install py-nanotts`); without it the engine refuses to start and says so.
"""

from __future__ import annotations

import numpy as np

from .program import WholePhraseEngine

VOICES = ("en-US", "en-GB")
LICENSE = "SVOX Pico engine and language files: Apache-2.0 (py-nanotts)"
# Pico speaks near full scale and clips a few hundred samples a sentence at its own volume; half of it does
# not clip and leaves louder emotions room.
_VOLUME = 0.5
# Pico's speed control accepts 0.2-5.0; the prosody table's rates stay well inside.
_SPEED = (0.2, 5.0)


class PicoEngine(WholePhraseEngine):
    """Pico's English voices by name ("en-US", "en-GB"), one chunk per phrase."""

    engine = "pico"
    license = LICENSE

    def __init__(self, default_voice: str = "en-US", seed: int | None = None) -> None:
        try:
            from py_nanotts import NanoTTS
        except ImportError as error:
            raise RuntimeError("the pico engine needs the py-nanotts package: `pip install py-nanotts`") from error
        self._tts = NanoTTS()
        super().__init__(list(VOICES), default_voice, seed)

    def language(self, voice: str) -> str:
        return voice.lower()

    def speak(self, voice: str, text: str, duration_stretch: float = 1.0) -> np.ndarray:
        """`text` in `voice` as float32 samples at 16 kHz. Angle brackets would open Pico's markup, so they are
        read as spaces: the text is spoken, never obeyed."""
        plain = text.replace("<", " ").replace(">", " ")
        speed = float(np.clip(1.0 / duration_stretch, *_SPEED))
        pcm = self._tts.speak(plain, voice=voice, speed=speed, volume=_VOLUME)
        return np.frombuffer(pcm, dtype="<i2").astype(np.float32) / 32768.0
