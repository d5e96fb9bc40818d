"""Engines that speak each phrase whole and edit its pitch with WORLD: programs run once per phrase (flite,
festival, gnuspeech) and SVOX Pico's library (pico).

These are families of synthesis of their own (diphone, clustergen, HTS, Pico's HMM voices, articulatory)
beside espeak-ng's formants and the neural voices, so that SER training data is not made by two engines alone.
They speak a phrase in tens to hundreds of milliseconds, so each phrase is produced whole. Rate goes into the
engine's own duration control; their voices predict their own F0 and mostly ignore intonation targets, so pitch
level, range and jitter are edited on the audio as the Piper engine does (models/pitch.py); volume is a gain; they
have no sampling noise, so the VITS noise ratios do not apply.

Text reaches the program through a file, never on its command line, so no text is read as an option. When the
program is missing, the engine refuses to start and names the command that installs it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import soundfile

from ..audio import resample
from ..pitch import F0Edit, edit_blocks, estimate_f0
from ..prosody import Prosody, prosody_for
from . import AudioChunk, VoiceInfo, stream_phrases

SAMPLE_RATE_HZ = 16000
_CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog, then it rests."
TIMEOUT_S = 30.0


def find_program(name: str, install_hint: str) -> str:
    """Path of an executable; a clear error naming how to install it when it is not on PATH."""
    program = shutil.which(name)
    if program is None:
        raise RuntimeError(f"this engine needs the {name} program, which is not on PATH: {install_hint}")
    return program


class WholePhraseEngine:
    """Shared by these engines: voices by name, one chunk per phrase, pitch edited with WORLD.

    A subclass names its engine and licence, finds its installed voices, and says how it speaks one text in a
    voice at a duration stretch into 16 kHz samples (`speak`)."""

    engine = ""
    license = ""

    def __init__(self, voices: list[str], default_voice: str, seed: int | None) -> None:
        self._voices = voices
        self.default_voice = self._installed(default_voice)
        self._rng = np.random.default_rng(seed)
        self._centers: dict[str, float] = {}

    def speak(self, voice: str, text: str, duration_stretch: float = 1.0) -> np.ndarray:
        """`text` in `voice` as float32 samples at 16 kHz, `duration_stretch` times as long as the voice's own."""
        raise NotImplementedError

    def language(self, voice: str) -> str:
        """The voice's language tag."""
        return "en-us"

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(name, self.engine, self.language(name), SAMPLE_RATE_HZ, self.license) for name in self._voices
        ]

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
            raise ValueError(f"unknown {self.engine} voice {name!r}; installed: {self._voices}")
        return name

    def f0_center_hz(self, voice: str) -> float:
        """Median F0 of the voice's neutral sentence (these engines are deterministic): the pivot of range edits."""
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


class ProgramEngine(WholePhraseEngine):
    """A system program run once per phrase. A subclass finds its program and installed voices, and says how
    one run of the program speaks a text file into a WAV file at `program_rate_hz` (`command`)."""

    program_rate_hz = SAMPLE_RATE_HZ

    def __init__(self, program: str, voices: list[str], default_voice: str, seed: int | None) -> None:
        self._program = program
        super().__init__(voices, default_voice, seed)

    def command(self, voice: str, text_file: Path, wav_file: Path, duration_stretch: float) -> list[str]:
        """The program's command line that speaks `text_file` in `voice` into `wav_file` at `program_rate_hz`."""
        raise NotImplementedError

    def speak(self, voice: str, text: str, duration_stretch: float = 1.0) -> np.ndarray:
        """One run of the program: `text` in `voice` as float32 samples, resampled to 16 kHz if need be."""
        with tempfile.TemporaryDirectory(prefix=f"emoloop-{self.engine}-") as folder:
            text_file, wav_file = Path(folder) / "text.txt", Path(folder) / "speech.wav"
            text_file.write_text(text, encoding="utf-8")
            done = subprocess.run(
                self.command(voice, text_file, wav_file, duration_stretch), capture_output=True, timeout=TIMEOUT_S
            )
            if done.returncode != 0 or not wav_file.is_file():
                error = done.stderr.decode(errors="replace").strip()
                raise RuntimeError(f"{self.engine} failed ({done.returncode}): {error}")
            samples, rate = soundfile.read(wav_file, dtype="float32")
        if rate != self.program_rate_hz:
            raise RuntimeError(f"{self.engine} voice {voice!r} spoke at {rate} Hz; expected {self.program_rate_hz}")
        return samples if rate == SAMPLE_RATE_HZ else resample(samples, rate, SAMPLE_RATE_HZ)
