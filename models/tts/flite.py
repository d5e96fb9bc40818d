"""Flite engine: CMU Flite's built-in US English voices, through its command-line program.

A third family of synthesis beside espeak-ng's formants and the neural voices (Piper, Kokoro): a diphone voice
(kal16) and three statistical-parametric clustergen voices (awb, rms, slt), so that SER training data is not
made by two engines alone. Flite speaks a phrase in a few milliseconds, so each phrase is produced whole. Rate
goes into flite's duration stretch; the clustergen voices predict their own F0 and ignore flite's intonation
targets, so pitch level, range and jitter are edited on the audio as the Piper engine does (models/pitch.py);
volume is a gain; flite has no sampling noise, so the VITS noise ratios do not apply.

Flite is a system program (Debian/Ubuntu `apt-get install flite`, macOS `brew install flite`), not a Python
package: the engine refuses to start, naming the command to run, when it is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile

from ..pitch import F0Edit, edit_blocks, estimate_f0
from ..prosody import Prosody, prosody_for
from . import AudioChunk, VoiceInfo, stream_phrases

# The 16 kHz voices compiled into flite 2.x (kal is kal16 at 8 kHz; awb_time speaks only the time of day).
VOICES = ("kal16", "awb", "rms", "slt")
SAMPLE_RATE_HZ = 16000
LICENSE = "CMU Flite licence (BSD-style, free for any use; voices included)"
_INSTALL_HINT = "install it with `apt-get install flite` (Debian/Ubuntu) or `brew install flite` (macOS)"
_CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog, then it rests."
_TIMEOUT_S = 30.0


def flite_program() -> str:
    """Path of the flite executable; a clear error when it is not installed."""
    program = shutil.which("flite")
    if program is None:
        raise RuntimeError(f"the flite engine needs the flite program, which is not on PATH: {_INSTALL_HINT}")
    return program


class FliteEngine:
    """Flite's 16 kHz voices by name ("slt", "awb", "rms", "kal16"), one chunk per phrase."""

    def __init__(self, default_voice: str = "slt", seed: int | None = None) -> None:
        self._program = flite_program()
        listed = subprocess.run([self._program, "-lv"], capture_output=True, text=True, timeout=_TIMEOUT_S).stdout
        self._voices = [name for name in VOICES if name in listed.split()]
        self.default_voice = self._installed(default_voice)
        self._rng = np.random.default_rng(seed)
        self._centers: dict[str, float] = {}

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(name, "flite", "en-us", SAMPLE_RATE_HZ, LICENSE) for name in self._voices]

    def synthesize(
        self,
        text: str | Iterable[str],
        emotion: str = "neutral",
        voice: str | None = None,
        prosody: Prosody | None = None,
    ) -> Iterator[AudioChunk]:
        name = self._installed(voice or self.default_voice)
        prosody = prosody or prosody_for(emotion)
        return stream_phrases(text, lambda phrase: self._render(name, phrase, prosody), SAMPLE_RATE_HZ)

    def _installed(self, name: str) -> str:
        if name not in self._voices:
            raise ValueError(f"unknown flite voice {name!r}; installed: {self._voices}")
        return name

    def speak(self, voice: str, text: str, duration_stretch: float = 1.0) -> np.ndarray:
        """One flite run: `text` in `voice` as float32 samples at 16 kHz."""
        with tempfile.TemporaryDirectory(prefix="emoloop-flite-") as folder:
            text_file, wav_file = Path(folder) / "text.txt", Path(folder) / "speech.wav"
            text_file.write_text(text, encoding="utf-8")  # a file, so no text is ever read as an option
            command = [self._program, "-voice", voice, "--setf", f"duration_stretch={duration_stretch:.4f}"]
            done = subprocess.run(
                [*command, "-f", str(text_file), "-o", str(wav_file)], capture_output=True, timeout=_TIMEOUT_S
            )
            if done.returncode != 0 or not wav_file.is_file():
                raise RuntimeError(f"flite failed ({done.returncode}): {done.stderr.decode(errors='replace').strip()}")
            samples, rate = soundfile.read(wav_file, dtype="float32")
        if rate != SAMPLE_RATE_HZ:
            raise RuntimeError(f"flite voice {voice!r} spoke at {rate} Hz; expected {SAMPLE_RATE_HZ}")
        return samples

    def f0_center_hz(self, voice: str) -> float:
        """Median F0 of the voice's neutral sentence (flite is deterministic): the pivot of pitch-range edits."""
        if voice not in self._centers:
            f0 = estimate_f0(self.speak(voice, _CALIBRATION_TEXT), SAMPLE_RATE_HZ)
            self._centers[voice] = float(np.median(f0[f0 > 0]))
        return self._centers[voice]

    def _render(self, voice: str, phrase: str, prosody: Prosody) -> Iterator[np.ndarray]:
        blocks: Iterable[np.ndarray] = [self.speak(voice, phrase, prosody.duration_ratio)]
        if prosody.changes_pitch:
            edit = F0Edit.for_prosody(self.f0_center_hz(voice), prosody)
            blocks = edit_blocks(blocks, SAMPLE_RATE_HZ, edit, seed=int(self._rng.integers(2**32)))
        for block in blocks:
            yield np.clip(block * prosody.volume_ratio, -1.0, 1.0)
