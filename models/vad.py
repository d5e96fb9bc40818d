"""Endpointing for the SER service: Silero VAD (ONNX) speech probabilities turned into utterance events.

The Silero model file ships inside the `silero-vad` wheel; it is driven here with onnxruntime alone, so neither
torch nor the package's own Python code is imported (importing `silero_vad` imports torch). One `SileroVad`
holds the expensive ONNX session and is shared; each audio stream gets its own cheap `Endpointer`, which owns
that stream's recurrent state. The thresholds live in vad.toml, where each is explained.
"""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Literal

import numpy as np
import onnxruntime

from .audio import check_mono_float32

SAMPLE_RATE = 16_000
BLOCK_SAMPLES = 512  # the only block size the v5/v6 model takes at 16 kHz (32 ms)
CONTEXT_SAMPLES = 64  # the tail of the previous block, prepended to each block as the model expects
STATE_SHAPE = (2, 1, 128)  # the model's recurrent state for a batch of one
DEFAULT_CONFIG = Path(__file__).with_name("vad.toml")
# The 16 kHz-only export: the same probabilities as silero_vad.onnx (bit-identical on speech), 1.3 MB instead of
# 2.3 MB on disk and about 16 MiB instead of 24 MiB resident once loaded.
DEFAULT_MODEL_NAME = "silero_vad_16k_op15.onnx"


def packaged_model_path(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Path of a model file inside the installed `silero-vad` wheel.

    `importlib.resources.files("silero_vad.data")` would import the package, and its `__init__` imports torch;
    `find_spec` of the top-level package locates it without running any of its code.
    """
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the silero-vad package is not installed (pip install --no-deps silero-vad)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found in the installed silero-vad package")
    return path


@dataclass(frozen=True)
class VadConfig:
    """Endpointing thresholds; see vad.toml for what each does and why its default."""

    start_threshold: float
    end_threshold: float
    min_speech_ms: int
    min_silence_ms: int
    speech_pad_ms: int
    max_utterance_s: float

    def __post_init__(self) -> None:
        if not 0.0 < self.end_threshold <= self.start_threshold < 1.0:
            raise ValueError(
                f"thresholds must satisfy 0 < end_threshold <= start_threshold < 1, "
                f"got end_threshold={self.end_threshold}, start_threshold={self.start_threshold}"
            )
        if self.min_speech_ms < 0 or self.min_silence_ms <= 0 or self.speech_pad_ms < 0:
            raise ValueError("min_speech_ms and speech_pad_ms must be >= 0 and min_silence_ms > 0")
        if self.speech_pad_ms > self.min_silence_ms:
            raise ValueError(
                f"speech_pad_ms ({self.speech_pad_ms}) must not exceed min_silence_ms ({self.min_silence_ms}): "
                "the padded end would lie after the time the end is decided"
            )
        if self.max_utterance_s * 1000 <= self.min_speech_ms:
            raise ValueError(f"max_utterance_s ({self.max_utterance_s}) must be longer than min_speech_ms")

    @classmethod
    def load(cls, path: Path | str = DEFAULT_CONFIG) -> VadConfig:
        """Read the [endpointing] table of a TOML file; every key is required and no other is allowed."""
        with open(path, "rb") as file:
            table = tomllib.load(file).get("endpointing")
        if not isinstance(table, dict):
            raise ValueError(f"{path}: missing [endpointing] table")
        names = {field.name for field in fields(cls)}
        if set(table) != names:
            raise ValueError(
                f"{path}: [endpointing] keys missing {sorted(names - set(table))}, unknown {sorted(set(table) - names)}"
            )
        for key in ("min_speech_ms", "min_silence_ms", "speech_pad_ms"):
            if not isinstance(table[key], int):
                raise ValueError(f"{path}: {key} must be an integer number of milliseconds")
        return cls(**table)


class SileroState:
    """One stream's recurrent state and audio context: cheap, one per stream."""

    def __init__(self) -> None:
        self.rnn = np.zeros(STATE_SHAPE, np.float32)
        self.context = np.zeros(CONTEXT_SAMPLES, np.float32)


class SileroVad:
    """The Silero VAD ONNX session: load once, share between streams (onnxruntime's `run` is thread-safe)."""

    def __init__(self, path: Path | str | None = None) -> None:
        """Load `path`, or the model shipped in the silero-vad wheel. One thread: the model is tiny and the
        cores are shared, so more threads only add synchronisation overhead."""
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.path = Path(path) if path is not None else packaged_model_path()
        self.session = onnxruntime.InferenceSession(
            str(self.path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {node.name for node in self.session.get_inputs()}
        if inputs != {"input", "state", "sr"}:
            raise ValueError(f"{self.path} is not a Silero VAD v5/v6 model: its inputs are {sorted(inputs)}")
        self._sample_rate = np.array(SAMPLE_RATE, np.int64)

    def probability(self, block: np.ndarray, state: SileroState) -> float:
        """Speech probability of one 512-sample float32 block; advances `state` to include it."""
        frame = np.concatenate([state.context, block])[np.newaxis, :]
        output, state.rnn = self.session.run(
            ["output", "stateN"], {"input": frame, "state": state.rnn, "sr": self._sample_rate}
        )
        state.context = block[-CONTEXT_SAMPLES:].copy()
        return float(output[0, 0])


@dataclass(frozen=True)
class SpeechStart:
    """Speech has lasted min_speech_ms: an utterance began at `start_ms` (padded); decided at `decided_ms`."""

    start_ms: int
    decided_ms: int


@dataclass(frozen=True)
class UtteranceEnd:
    """The utterance spans [start_ms, end_ms) of stream time (padded); its end was decided at `decided_ms`.

    `reason` is "silence" (min_silence_ms of trailing silence), "max_length" (cut at max_utterance_s while
    speech went on) or "flush" (the stream ended inside speech).
    """

    start_ms: int
    end_ms: int
    decided_ms: int
    reason: Literal["silence", "max_length", "flush"]


VadEvent = SpeechStart | UtteranceEnd


def _ms(samples: int) -> int:
    return samples * 1000 // SAMPLE_RATE


def _samples(ms: float) -> int:
    return round(ms * SAMPLE_RATE / 1000)


class Endpointer:
    """Per-stream endpointing: push 16 kHz float32 audio, get SpeechStart / UtteranceEnd events.

    Audio of any length is accepted and re-chunked into the model's 512-sample blocks (callers' chunk sizes
    vary: gRPC frames, resampler output); a remainder waits for the next push. Every SpeechStart is followed by
    exactly one UtteranceEnd, and utterances never overlap. Times are stream time in ms from the first sample
    pushed since the last reset. Not thread-safe: feed each endpointer from one thread at a time.
    """

    def __init__(self, model: SileroVad, config: VadConfig) -> None:
        self.model = model
        self.config = config
        self._min_speech = _samples(config.min_speech_ms)
        self._min_silence = _samples(config.min_silence_ms)
        self._pad = _samples(config.speech_pad_ms)
        self._max_utterance = _samples(config.max_utterance_s * 1000)
        self.reset()

    def reset(self) -> None:
        """Start a new stream: fresh model state, clock at 0, no utterance open, pending samples dropped."""
        self._state = SileroState()
        self._pending = np.zeros(0, np.float32)
        self._clock = 0  # samples processed by the model
        self._onset: int | None = None  # first sample of the current speech (candidate or confirmed)
        self._last_speech_end = 0  # sample just after the last block judged speech
        self._previous_end = 0  # end of the last utterance reported: the next one's padding stops there
        self._confirmed = False  # speech has lasted min_speech_ms and SpeechStart was emitted
        self.speech_probability = 0.0  # of the last block processed

    @property
    def in_speech(self) -> bool:
        """True between a SpeechStart and its UtteranceEnd."""
        return self._confirmed

    def push(self, audio: np.ndarray) -> list[VadEvent]:
        """Feed audio (1-D float32, 16 kHz, finite); return the events decided by the whole blocks now complete."""
        check_mono_float32(audio, "audio")
        self._pending = np.concatenate([self._pending, audio])
        events: list[VadEvent] = []
        while self._pending.size >= BLOCK_SAMPLES:
            block, self._pending = self._pending[:BLOCK_SAMPLES], self._pending[BLOCK_SAMPLES:]
            events.extend(self._step(block))
        return events

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open utterance (reason "flush"), then reset for a new stream.

        A trailing partial block (< 32 ms) is dropped; a candidate shorter than min_speech_ms is dropped.
        """
        events: list[VadEvent] = []
        if self._confirmed:
            events.append(self._end(min(self._last_speech_end + self._pad, self._clock), "flush"))
        self.reset()
        return events

    def _step(self, block: np.ndarray) -> list[VadEvent]:
        probability = self.model.probability(block, self._state)
        self.speech_probability = probability
        block_start, self._clock = self._clock, self._clock + BLOCK_SAMPLES
        # Hysteresis: speech begins above start_threshold and goes on while above end_threshold.
        if self._onset is None:
            if probability >= self.config.start_threshold:
                self._onset, self._last_speech_end = block_start, self._clock
            else:
                return []
        elif probability >= self.config.end_threshold:
            self._last_speech_end = self._clock

        events: list[VadEvent] = []
        if not self._confirmed and self._last_speech_end - self._onset >= self._min_speech:
            self._confirmed = True
            events.append(SpeechStart(start_ms=_ms(self._padded_start()), decided_ms=_ms(self._clock)))
        if self._clock - self._last_speech_end >= self._min_silence:
            if self._confirmed:
                events.append(self._end(self._last_speech_end + self._pad, "silence"))
            else:
                self._onset = None  # a blip that never lasted min_speech_ms is dropped without an event
        elif self._confirmed and self._clock - self._onset >= self._max_utterance:
            events.append(self._end(self._clock, "max_length"))
        return events

    def _padded_start(self) -> int:
        assert self._onset is not None
        return max(self._previous_end, self._onset - self._pad)

    def _end(self, end: int, reason: Literal["silence", "max_length", "flush"]) -> UtteranceEnd:
        event = UtteranceEnd(
            start_ms=_ms(self._padded_start()), end_ms=_ms(end), decided_ms=_ms(self._clock), reason=reason
        )
        self._onset = None
        self._confirmed = False
        self._previous_end = end
        return event
