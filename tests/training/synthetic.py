"""Tiny generated corpora for the training tests: buzzy tones whose pitch and loudness depend on the emotion."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from emoloop.models.emotions import EMOTIONS

PITCH_HZ = dict(zip(EMOTIONS, (110.0, 140.0, 180.0, 230.0, 290.0, 370.0), strict=True))


def write_clip(path: Path, emotion: str, seed: int, sample_rate_hz: int = 16000, seconds: float = 0.5) -> Path:
    """A harmonic tone at the emotion's pitch (jittered by speaker/seed) plus a little noise, as a WAV."""
    rng = np.random.default_rng(seed)
    f0 = PITCH_HZ.get(emotion, 200.0) * rng.uniform(0.95, 1.05)
    t = np.arange(int(seconds * sample_rate_hz)) / sample_rate_hz
    tone = sum(np.sin(2 * np.pi * k * f0 * t) / k for k in range(1, 6))
    audio = 0.3 * tone / np.abs(tone).max() + 0.01 * rng.standard_normal(t.size)
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, audio.astype(np.float32), sample_rate_hz, subtype="PCM_16")
    return path
