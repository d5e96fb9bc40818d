"""ctypes binding to the espeak-ng library shipped inside the `espeakng-loader` wheel.

One binding serves both the phonemiser of the Piper engine and the espeak engine, so the
process loads a single copy of the library. espeak-ng keeps global state (voice,
parameters, callback), so every call holds one module-wide lock.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from functools import cache

import espeakng_loader
import numpy as np

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_CHARS_UTF8 = 1
_PHONEMES_IPA = 0x02
_SYNTH_FLAGS = _CHARS_UTF8  # plain UTF-8 text, no SSML
_POS_CHARACTER = 1

# espeak_PARAMETER values (speak_lib.h)
RATE, VOLUME, PITCH, RANGE = 1, 2, 3, 4
DEFAULT_PARAMETERS = {RATE: 175, VOLUME: 100, PITCH: 50, RANGE: 50}

LICENSE = "GPL-3.0-or-later"
LOCK = threading.Lock()

_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_char_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


@dataclass(frozen=True)
class EspeakVoice:
    name: str
    language: str
    identifier: str


class _Espeak:
    """The initialised library; built once per process by `espeak()`."""

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p
        lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_Synth.argtypes = [
            ctypes.c_char_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
        lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
        data = espeakng_loader.get_data_path().encode()
        self.sample_rate_hz = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data, 0)
        if self.sample_rate_hz <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise with data at {data!r}")
        self._lib = lib
        self._pieces: list[np.ndarray] = []
        # Kept on self so the C side never calls a collected function pointer.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)
        self._voice = ""

    def _collect(self, wav: ctypes.POINTER(ctypes.c_short), count: int, _events: int) -> int:
        if count > 0:
            self._pieces.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0

    def _set_voice(self, voice: str) -> None:
        if voice != self._voice:
            if self._lib.espeak_SetVoiceByName(voice.encode()) != 0:
                raise ValueError(f"unknown espeak-ng voice: {voice!r}")
            self._voice = voice

    def phonemes(self, text: str, voice: str) -> str:
        """IPA phonemes of `text`, clauses joined by spaces (punctuation is dropped)."""
        with LOCK:
            self._set_voice(voice)
            pointer = ctypes.c_char_p(text.encode())
            clauses = []
            while pointer.value:
                clause = self._lib.espeak_TextToPhonemes(ctypes.byref(pointer), _CHARS_UTF8, _PHONEMES_IPA)
                clauses.append(clause.decode())
            return " ".join(c.strip() for c in clauses if c.strip())

    def synthesize(self, text: str, voice: str, parameters: dict[int, int]) -> np.ndarray:
        """Speak `text` whole; returns float32 PCM at `sample_rate_hz`."""
        data = text.encode()
        with LOCK:
            self._set_voice(voice)
            for parameter, default in DEFAULT_PARAMETERS.items():
                self._lib.espeak_SetParameter(parameter, parameters.get(parameter, default), 0)
            self._pieces = []
            status = self._lib.espeak_Synth(data, len(data) + 1, 0, _POS_CHARACTER, 0, _SYNTH_FLAGS, None, None)
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status}")
            pcm = np.concatenate(self._pieces) if self._pieces else np.zeros(0, np.int16)
        return pcm.astype(np.float32) / 32768.0

    def voices(self) -> list[EspeakVoice]:
        with LOCK:
            table = self._lib.espeak_ListVoices(None)
        found = []
        index = 0
        while table[index]:
            voice = table[index].contents
            # `languages` is a priority byte followed by a NUL-terminated name; take the first.
            language = voice.languages[1:].decode() if voice.languages else ""
            found.append(EspeakVoice(voice.name.decode(), language, voice.identifier.decode()))
            index += 1
        return found


@cache
def espeak() -> _Espeak:
    """The process-wide espeak-ng instance (initialised on first use)."""
    return _Espeak()
