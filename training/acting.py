"""Voice quality of acted emotions (tilt, breathiness, tremor, harshness), added to rendered speech.

The engines render an emotion's prosody (pitch level and range, rate, loudness), but the generated data's
loudness cue is mostly washed out by the random gain of augmentation, and pitch level is ambiguous for a voice
the model has never heard. Real acted emotions also differ in voice quality, which survives a gain change and
is relative to the voice itself (Murray & Arnott 1993; Schröder 2001): this module adds it, from the table in
`acting.toml`, to a 16 kHz clip before augmentation. It is a training-data concern only; the synthesis service
does not use it.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from functools import cache
from pathlib import Path

import numpy as np

from emoloop.models.emotions import EMOTIONS

TABLE = Path(__file__).with_name("acting.toml")
SAMPLE_RATE_HZ = 16000
TILT_PIVOT_HZ = 500.0
BREATH_CUTOFF_HZ = 1500.0
ENVELOPE_S = 0.02
TREMOR_HZ = (5.0, 7.0)
SOFT_CLIP_DRIVE = 3.0


@dataclass(frozen=True)
class VoiceQuality:
    """One emotion's voice quality (see acting.toml for what each field means)."""

    tilt_db_per_octave: float
    breath_ratio: float
    tremor_semitones: float
    harshness: float


_KEYS = tuple(f.name for f in fields(VoiceQuality))


def parse_table(table: dict) -> tuple[dict[str, VoiceQuality], VoiceQuality]:
    """Validate a decoded table: every emotion and `variation` with exactly the known keys, all numbers."""
    unknown = set(table) - set(EMOTIONS) - {"variation"}
    if unknown:
        raise ValueError(f"unknown section(s) in acting table: {sorted(unknown)}")
    entries = {}
    for name in (*EMOTIONS, "variation"):
        entry = table.get(name)
        if entry is None:
            raise ValueError(f"acting table lacks [{name}]")
        if set(entry) != set(_KEYS):
            raise ValueError(f"[{name}] must have exactly {list(_KEYS)}, has {sorted(entry)}")
        if not all(isinstance(entry[k], int | float) and not isinstance(entry[k], bool) for k in _KEYS):
            raise ValueError(f"[{name}]: every value must be a number")
        if any(entry[k] < 0 for k in _KEYS if k != "tilt_db_per_octave"):
            raise ValueError(f"[{name}]: only tilt_db_per_octave may be negative")
        entries[name] = VoiceQuality(**{k: float(entry[k]) for k in _KEYS})
    variation = entries.pop("variation")
    if any(e.harshness > 1 for e in entries.values()):
        raise ValueError("harshness is a mix fraction and must be at most 1")
    return entries, variation


@cache
def load_table(path: Path = TABLE) -> tuple[dict[str, VoiceQuality], VoiceQuality]:
    with open(path, "rb") as handle:
        return parse_table(tomllib.load(handle))


def vary(emotion: str, intensity: float, rng: np.random.Generator, path: Path = TABLE) -> VoiceQuality:
    """One take: the entry scaled by the acting intensity, plus per-utterance noise, clipped to valid ranges."""
    entries, variation = load_table(path)
    entry = entries[emotion]
    values = {k: intensity * getattr(entry, k) + rng.normal(0.0, getattr(variation, k)) for k in _KEYS}
    quality = VoiceQuality(**values)
    return replace(
        quality,
        breath_ratio=max(quality.breath_ratio, 0.0),
        tremor_semitones=max(quality.tremor_semitones, 0.0),
        harshness=float(np.clip(quality.harshness, 0.0, 1.0)),
    )


def rms(audio: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(audio, dtype=np.float64)))) if audio.size else 0.0


def _same_rms(audio: np.ndarray, reference: np.ndarray) -> np.ndarray:
    level = rms(audio)
    return audio * (rms(reference) / level) if level > 0 else audio


def tilt(audio: np.ndarray, db_per_octave: float) -> np.ndarray:
    """Spectral slope of `db_per_octave` above TILT_PIVOT_HZ (flat below), at the same RMS."""
    spectrum = np.fft.rfft(audio)
    freqs = np.fft.rfftfreq(audio.size, 1.0 / SAMPLE_RATE_HZ)
    octaves = np.log2(np.maximum(freqs, TILT_PIVOT_HZ) / TILT_PIVOT_HZ)
    shaped = np.fft.irfft(spectrum * 10 ** (db_per_octave * octaves / 20), audio.size)
    return _same_rms(shaped, audio)


def envelope(audio: np.ndarray) -> np.ndarray:
    """Smoothed amplitude (moving RMS over ENVELOPE_S), so added breath follows the speech."""
    width = max(1, int(ENVELOPE_S * SAMPLE_RATE_HZ))
    power = np.convolve(np.square(audio, dtype=np.float64), np.ones(width) / width, mode="same")
    return np.sqrt(power)


def breathe(audio: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Add aspiration: noise above BREATH_CUTOFF_HZ, shaped by the speech envelope, at `ratio` of its RMS."""
    if ratio <= 0 or not audio.size:
        return audio
    spectrum = np.fft.rfft(rng.standard_normal(audio.size))
    spectrum[np.fft.rfftfreq(audio.size, 1.0 / SAMPLE_RATE_HZ) < BREATH_CUTOFF_HZ] = 0
    noise = np.fft.irfft(spectrum, audio.size) * envelope(audio)
    level = rms(noise)
    return audio + noise * (ratio * rms(audio) / level) if level > 0 else audio


def tremble(audio: np.ndarray, semitones: float, rng: np.random.Generator) -> np.ndarray:
    """Vibrato of ±`semitones` at a random 5-7 Hz, by reading the clip through a sinusoidally moving delay."""
    if semitones <= 0 or not audio.size:
        return audio
    rate = rng.uniform(*TREMOR_HZ)
    # A delay d(t) = D sin(2 pi f t) scales instantaneous frequency by 1 - 2 pi f D cos(...).
    depth_s = (2 ** (semitones / 12) - 1) / (2 * np.pi * rate)
    t = np.arange(audio.size) / SAMPLE_RATE_HZ
    phase = rng.uniform(0, 2 * np.pi)
    read_at = (t - depth_s * np.sin(2 * np.pi * rate * t + phase)) * SAMPLE_RATE_HZ
    return np.interp(read_at, np.arange(audio.size), audio)


def harden(audio: np.ndarray, harshness: float) -> np.ndarray:
    """Mix in a soft-clipped copy (odd harmonics on loud, voiced parts: a pressed voice), at the same RMS."""
    peak = float(np.max(np.abs(audio), initial=0.0))
    if harshness <= 0 or peak == 0:
        return audio
    clipped = np.tanh(SOFT_CLIP_DRIVE * audio / peak) / np.tanh(SOFT_CLIP_DRIVE) * peak
    return _same_rms((1 - harshness) * audio + harshness * clipped, audio)


def act(audio: np.ndarray, quality: VoiceQuality, rng: np.random.Generator) -> np.ndarray:
    """Apply a take's voice quality to 16 kHz mono speech: tremor, harshness, tilt, then breath."""
    out = audio.astype(np.float64)
    out = tremble(out, quality.tremor_semitones, rng)
    out = harden(out, quality.harshness)
    out = tilt(out, quality.tilt_db_per_octave)
    out = breathe(out, quality.breath_ratio, rng)
    return out.astype(np.float32)
