"""Festival engine: the Festival Speech Synthesis System's English voices, through its text2wave program.

Two more families of synthesis for SER training data: residual-excited LPC diphone voices (kal_diphone, the
speaker of flite's kal16 through another synthesiser, and ked_diphone, a speaker of his own) and an HTS
statistical-parametric voice (cmu_us_slt_arctic_hts, HMM-predicted parameters through an MLSA vocoder). Rate
goes into festival's Duration_Stretch for the diphone voices and into the HTS engine's speed (`-r`, the
inverse of the stretch) for HTS, which ignores Duration_Stretch; pitch is edited with WORLD (see program.py).
text2wave resamples every voice to 16 kHz (the HTS voice speaks at 48 kHz).

Festival and its voices are system packages (Debian/Ubuntu `apt-get install festival festvox-kallpc16k
festvox-kdlpc16k festvox-us-slt-hts`), not Python packages: the engine refuses to start, naming that command,
when festival is missing, and offers only the voices that are installed.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from .program import SAMPLE_RATE_HZ, TIMEOUT_S, ProgramEngine, find_program

VOICES = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
LICENSE = "Festival and its CMU/OGI voices: free software licences (X11-style; HTS voice BSD-style)"
# The diphone voices peak near full scale at neutral; this leaves louder emotions room before clipping.
_SCALE = 0.6
_INSTALL_HINT = (
    "install it with `apt-get install festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts` (Debian/Ubuntu)"
)


class FestivalEngine(ProgramEngine):
    """Festival's installed English voices by name ("ked_diphone", ...), one chunk per phrase."""

    engine = "festival"
    license = LICENSE

    def __init__(self, default_voice: str = "ked_diphone", seed: int | None = None) -> None:
        program = find_program("text2wave", _INSTALL_HINT)
        festival = find_program("festival", _INSTALL_HINT)
        listed = subprocess.run(
            [festival, "--pipe"], input="(print (voice.list))", capture_output=True, text=True, timeout=TIMEOUT_S
        ).stdout
        installed = listed.replace("(", " ").replace(")", " ").split()
        super().__init__(program, [name for name in VOICES if name in installed], default_voice, seed)

    def command(self, voice: str, text_file: Path, wav_file: Path, duration_stretch: float) -> list[str]:
        if voice.endswith("_hts"):
            rate = f'(set! hts_engine_params (cons (list "-r" {1.0 / duration_stretch:.4f}) hts_engine_params))'
        else:
            rate = f"(Parameter.set 'Duration_Stretch {duration_stretch:.4f})"
        voice_and_rate = ["-eval", f"(voice_{voice})", "-eval", rate]
        output = ["-scale", str(_SCALE), "-F", str(SAMPLE_RATE_HZ), "-otype", "riff", "-o", str(wav_file)]
        return [self._program, *voice_and_rate, *output, str(text_file)]
