"""WAV files in and out, with the standard library: 16-bit PCM mono."""

from __future__ import annotations

import math
import wave
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly


def to_linear16(samples: np.ndarray) -> bytes:
    """float32 in [-1, 1] as 16-bit little-endian PCM bytes (LINEAR16 on the wire, the WAV sample format)."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype("<i2").tobytes()


def from_linear16(data: bytes) -> np.ndarray:
    """16-bit little-endian PCM bytes as float32 in [-1, 1)."""
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def write_wav(path: Path, samples: np.ndarray, sample_rate_hz: int) -> None:
    """Write float32 mono in [-1, 1] as 16-bit PCM."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(sample_rate_hz)
        out.writeframes(to_linear16(samples))


def read_wav(path: Path, rate_hz: int | None = None) -> tuple[np.ndarray, int]:
    """Read a 16-bit PCM WAV as float32 mono (channels are averaged), resampled to rate_hz if given."""
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2:
            raise ValueError(f"{path}: only 16-bit PCM WAV is supported (sample width {wav.getsampwidth()} bytes)")
        frames = from_linear16(wav.readframes(wav.getnframes()))
        channels, rate = wav.getnchannels(), wav.getframerate()
    mono = frames.reshape(-1, channels).mean(axis=1)
    if rate_hz and rate_hz != rate:
        divisor = math.gcd(rate_hz, rate)
        return resample_poly(mono, rate_hz // divisor, rate // divisor).astype(np.float32), rate_hz
    return mono, rate
