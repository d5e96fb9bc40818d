"""Flite engine: CMU Flite's built-in US English voices, through its command-line program.

A diphone voice (kal16) and three statistical-parametric clustergen voices (awb, rms, slt). Rate goes into
flite's duration stretch; the clustergen voices ignore flite's intonation targets, so pitch is edited with
WORLD (see program.py, shared with the festival engine).

Flite is a system program (Debian/Ubuntu `apt-get install flite`, macOS `brew install flite`), not a Python
package: the engine refuses to start, naming the command to run, when it is missing.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .program import TIMEOUT_S, ProgramEngine, find_program

# The 16 kHz voices compiled into flite 2.x (kal is kal16 at 8 kHz; awb_time speaks only the time of day).
VOICES = ("kal16", "awb", "rms", "slt")
LICENSE = "CMU Flite licence (BSD-style, free for any use; voices included)"
_INSTALL_HINT = "install it with `apt-get install flite` (Debian/Ubuntu) or `brew install flite` (macOS)"


class FliteEngine(ProgramEngine):
    """Flite's 16 kHz voices by name ("slt", "awb", "rms", "kal16"), one chunk per phrase."""

    engine = "flite"
    license = LICENSE

    def __init__(self, default_voice: str = "slt", seed: int | None = None) -> None:
        program = find_program("flite", _INSTALL_HINT)
        listed = subprocess.run([program, "-lv"], capture_output=True, text=True, timeout=TIMEOUT_S).stdout
        super().__init__(program, [name for name in VOICES if name in listed.split()], default_voice, seed)

    def command(self, voice: str, text_file: Path, wav_file: Path, duration_stretch: float) -> list[str]:
        stretch = f"duration_stretch={duration_stretch:.4f}"
        return [self._program, "-voice", voice, "--setf", stretch, "-f", str(text_file), "-o", str(wav_file)]
