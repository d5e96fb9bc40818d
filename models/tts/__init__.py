"""Text-to-speech engines: shared types, the engine protocol and a name -> engine registry."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from .text import split_phrases


@dataclass(frozen=True)
class AudioChunk:
    """A piece of synthesised speech, in playback order."""

    samples: np.ndarray  # float32 mono in [-1, 1]
    sample_rate_hz: int
    phrase_index: int  # which phrase of the text this audio speaks
    phrase: str
    start_s: float  # where the chunk starts in the utterance's audio

    @property
    def duration_s(self) -> float:
        return self.samples.size / self.sample_rate_hz


@dataclass(frozen=True)
class VoiceInfo:
    name: str  # what to pass as `voice` to synthesize()
    engine: str
    language: str
    sample_rate_hz: int
    license: str


class TtsEngine(Protocol):
    def synthesize(
        self, text: str | Iterable[str], emotion: str = "neutral", voice: str | None = None
    ) -> Iterator[AudioChunk]:
        """Speak `text` (a string, or pieces streaming from a text generator) with the
        given emotion, yielding audio as soon as each piece of it is ready."""
        ...

    def voices(self) -> list[VoiceInfo]: ...


# Engines are imported on first use so that choosing espeak never loads onnxruntime.
ENGINES = {
    "piper": "piper:PiperEngine",
    "espeak": "espeak:EspeakEngine",
    "kokoro": "kokoro:KokoroEngine",
    "flite": "flite:FliteEngine",
    "festival": "festival:FestivalEngine",
    "pico": "pico:PicoEngine",
    "gnuspeech": "gnuspeech:GnuspeechEngine",
}


def install_dir_for(name: str, env_var: str) -> Path:
    """Where an installer step (`make kokoro`, `make gnuspeech`) puts an engine's files and the engine looks for
    them: $`env_var` if set, else ~/.local/share/emoloop/`name`."""
    configured = os.environ.get(env_var)
    return Path(configured) if configured else Path.home() / ".local" / "share" / "emoloop" / name


def engine_class(name: str) -> type:
    if name not in ENGINES:
        raise ValueError(f"unknown TTS engine {name!r}; expected one of {sorted(ENGINES)}")
    module, cls = ENGINES[name].split(":")
    return getattr(importlib.import_module(f".{module}", __name__), cls)


def load_engine(name: str, **kwargs: object) -> TtsEngine:
    """Build an engine by registry name with its default voice(s)."""
    return engine_class(name)(**kwargs)


def stream_phrases(
    text: str | Iterable[str],
    render: Callable[[str], Iterator[np.ndarray]],
    sample_rate_hz: int,
) -> Iterator[AudioChunk]:
    """Split text into phrases and wrap each phrase's rendered blocks as AudioChunks,
    passing every block on the moment `render` produces it."""
    pieces = [text] if isinstance(text, str) else text
    position = 0
    for index, phrase in enumerate(split_phrases(pieces)):
        for block in render(phrase):
            if block.size:
                yield AudioChunk(block, sample_rate_hz, index, phrase, position / sample_rate_hz)
                position += block.size
