"""SynthesisService: a thin adapter from the synthesis protos to the TTS engines in models.tts."""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np

from emoloop.models.audio import Resampler
from emoloop.models.emotions import EMOTIONS
from emoloop.models.tts import AudioChunk, TtsEngine, load_engine
from emoloop.services.convert import check_text, emotion_name, emotion_value, encode_audio, mono_encoding
from emoloop.services.server import InvalidArgument, Unavailable, rpc_errors
from emoloop.v1 import common_pb2, synthesis_pb2, synthesis_pb2_grpc

log = logging.getLogger("emoloop.synthesis")

SAMPLE_RATES_HZ = (8000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Output rates offered besides the voice's native rate (sample_rate_hz = 0)."""
MAX_TEXT_CHARS = 5000
"""Longest text one call may speak, so that one caller cannot hog the engine."""
_MARKUP = re.compile(r"<[A-Za-z/!?][^<>]*>")  # tags, closing tags, <!-- comments -->, <?xml ...?>, <![CDATA[


@dataclass(frozen=True)
class Request:
    """A validated synthesis config."""

    engine: TtsEngine
    engine_name: str
    voice: str | None
    emotion: str
    sample_rate_hz: int
    encoding: int
    turn_id: str


class EngineSlots:
    """At most `n` engine runs compute at once; the rest wait their turn.

    Without a bound, every concurrent call runs the engine at the same time: on 2 cores 8 calls all slow to a
    crawl together and the service's memory grows with each (606 MB at 8 sessions, measured). A call holds a
    slot only while the engine computes a chunk, never while its chunk waits for a slow client or while it
    waits for the client's next text, so a stalled client cannot starve the others.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError("max_engine_runs: must be at least 1")
        self._semaphore = threading.BoundedSemaphore(n)

    def computed(self, chunks: Iterator[AudioChunk]) -> Iterator[AudioChunk]:
        """The engine's chunks, each computed while holding a slot."""
        while True:
            with self._semaphore:
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """Give the slot back while the engine waits on something other than the CPU (the client's text)."""
        self._semaphore.release()
        try:
            yield
        finally:
            self._semaphore.acquire()


class SynthesisServicer(synthesis_pb2_grpc.SynthesisServiceServicer):
    """Speaks text with an emotion; engines are loaded once and shared by every call."""

    service_name = synthesis_pb2.DESCRIPTOR.services_by_name["SynthesisService"].full_name

    def __init__(
        self,
        engines: Iterable[str] = ("piper", "espeak"),
        default_engine: str = "piper",
        engine_options: dict[str, dict[str, object]] | None = None,
        max_engine_runs: int = os.cpu_count() or 1,
    ) -> None:
        self._slots = EngineSlots(max_engine_runs)
        self._engine_names = list(engines)
        self._default = default_engine
        self._options = engine_options or {}
        self._engines: dict[str, TtsEngine] = {}

    def register(self, server: grpc.Server) -> None:
        synthesis_pb2_grpc.add_SynthesisServiceServicer_to_server(self, server)

    def load(self) -> None:
        """Load every engine; one that cannot load is skipped with an error, as long as one remains."""
        for name in self._engine_names:
            try:
                self._engines[name] = load_engine(name, **self._options.get(name, {}))
            except (ImportError, OSError, RuntimeError, ValueError) as error:
                log.error("event=engine_unavailable engine=%s error=%r", name, str(error))
        if not self._engines:
            raise RuntimeError(f"no TTS engine could be loaded (tried {', '.join(self._engine_names)})")
        if self._default not in self._engines:
            fallback = next(iter(self._engines))
            log.warning("event=default_engine_fallback wanted=%s using=%s", self._default, fallback)
            self._default = fallback

    def _engines_ready(self) -> dict[str, TtsEngine]:
        if not self._engines:
            raise Unavailable("synthesis: engines are still loading")
        return self._engines

    def _request(self, config: synthesis_pb2.SynthesisConfig) -> Request:
        """Validate a config against the loaded engines; errors name the proto field."""
        engines = self._engines_ready()
        name = config.engine or self._default
        if name not in engines:
            raise InvalidArgument("config.engine", f"unknown engine {name!r}; installed: {', '.join(engines)}")
        engine = engines[name]
        voice = config.voice or None
        if voice is not None and voice not in {v.name for v in engine.voices()}:
            raise InvalidArgument("config.voice", f"unknown {name} voice {voice!r}; see ListVoices")
        emotion = emotion_name(config.emotion, "config.emotion", allow_unspecified=True) or "neutral"
        audio_format = config.audio_format
        if audio_format.sample_rate_hz and audio_format.sample_rate_hz not in SAMPLE_RATES_HZ:
            raise InvalidArgument(
                "config.audio_format.sample_rate_hz",
                f"{audio_format.sample_rate_hz} Hz is not offered; use 0 (native) or one of {SAMPLE_RATES_HZ}",
            )
        encoding = mono_encoding(audio_format)
        check_text(config.turn_id, "config.turn_id", 128)
        return Request(
            engine=engine,
            engine_name=name,
            voice=voice,
            emotion=emotion,
            sample_rate_hz=audio_format.sample_rate_hz,
            encoding=encoding,
            turn_id=config.turn_id,
        )

    @staticmethod
    def _check_piece(text: str, field: str, total: int) -> None:
        """Reject control characters, markup the engines would read aloud, and text over the limit."""
        check_text(text, field, MAX_TEXT_CHARS)
        if _MARKUP.search(text):
            raise InvalidArgument(field, "SSML or other markup is not supported; send plain text")
        if total > MAX_TEXT_CHARS:
            raise InvalidArgument(field, f"the text is over the limit of {MAX_TEXT_CHARS} characters")

    def _audio(self, request: Request, texts: Iterable[str]) -> Iterator[tuple[np.ndarray, str, int, bool]]:
        """(samples at the requested rate, phrase, rate, is_final) per engine chunk, then the resampler's tail.

        Every chunk goes out the moment the engine yields it; the tail closes the stream with is_final.
        """
        resampler: Resampler | None = None
        phrase = ""
        for chunk in self._slots.computed(iter(request.engine.synthesize(texts, request.emotion, request.voice))):
            if resampler is None:
                resampler = Resampler(chunk.sample_rate_hz, request.sample_rate_hz or chunk.sample_rate_hz)
            phrase = chunk.phrase
            yield resampler.push(chunk.samples), phrase, resampler.to_hz, False
        if resampler is None:
            raise InvalidArgument("text", "no text to speak")
        yield resampler.flush(), phrase, resampler.to_hz, True

    @rpc_errors
    def StreamingSynthesize(
        self, request_iterator: Iterator[synthesis_pb2.StreamingSynthesizeRequest], context: grpc.ServicerContext
    ) -> Iterator[synthesis_pb2.StreamingSynthesizeResponse]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("streaming_request") != "config":
            raise InvalidArgument("config", "the first message of a stream must be the config")
        request = self._request(first.config)
        cancelled = threading.Event()
        context.add_callback(cancelled.set)

        def texts() -> Iterator[str]:  # pulled by the engine while it holds a slot
            total = 0
            while True:
                with self._slots.waiting():
                    message = next(request_iterator, None)
                if message is None:
                    return
                if message.WhichOneof("streaming_request") != "text":
                    raise InvalidArgument("text", "only the first message may be a config")
                total += len(message.text)
                self._check_piece(message.text, "text", total)
                yield message.text

        started = time.perf_counter()
        position, index = 0, 0
        try:
            for index, (samples, phrase, rate, final) in enumerate(self._audio(request, texts())):
                if cancelled.is_set():  # never yield into a cancelled call (grpc/grpc#22874)
                    log.info("event=cancelled turn_id=%r after_chunks=%d", request.turn_id, index)
                    return
                if index == 0:
                    log.debug(
                        "event=first_chunk turn_id=%r ms=%.1f", request.turn_id, (time.perf_counter() - started) * 1e3
                    )
                yield self._response(request, samples, phrase, rate, final, index, position)
                position += samples.size
        except GeneratorExit:  # the client went while this call waited to send a chunk
            log.info("event=cancelled turn_id=%r after_chunks=%d", request.turn_id, index)
            raise

    @staticmethod
    def _response(
        request: Request, samples: np.ndarray, phrase: str, rate: int, final: bool, index: int, position: int
    ) -> synthesis_pb2.StreamingSynthesizeResponse:
        """One chunk of the answer in the requested encoding, with its place and timing."""
        return synthesis_pb2.StreamingSynthesizeResponse(
            chunk=synthesis_pb2.AudioChunk(
                audio=encode_audio(samples, request.encoding),
                chunk_index=index,
                start_ms=position * 1000.0 / rate,
                duration_ms=samples.size * 1000.0 / rate,
                text=phrase,
            ),
            turn_id=request.turn_id,
            is_final=final,
            audio_format=common_pb2.AudioFormat(sample_rate_hz=rate, encoding=request.encoding, channels=1),
        )

    @rpc_errors
    def Synthesize(
        self, request: synthesis_pb2.SynthesizeRequest, context: grpc.ServicerContext
    ) -> synthesis_pb2.SynthesizeResponse:
        validated = self._request(request.config)
        self._check_piece(request.text, "text", len(request.text))
        parts = list(self._audio(validated, [request.text]))
        samples = np.concatenate([part[0] for part in parts])
        rate = parts[-1][2]
        return synthesis_pb2.SynthesizeResponse(
            audio=encode_audio(samples, validated.encoding),
            audio_format=common_pb2.AudioFormat(sample_rate_hz=rate, encoding=validated.encoding, channels=1),
            duration_ms=samples.size * 1000.0 / rate,
            turn_id=validated.turn_id,
        )

    @rpc_errors
    def ListVoices(
        self, request: synthesis_pb2.ListVoicesRequest, context: grpc.ServicerContext
    ) -> synthesis_pb2.ListVoicesResponse:
        voices = [
            synthesis_pb2.Voice(
                name=info.name,
                engine=name,
                language=info.language,
                native_sample_rate_hz=info.sample_rate_hz,
                emotions=[emotion_value(e) for e in EMOTIONS],
                license=info.license,
            )
            for name, engine in self._engines_ready().items()
            for info in engine.voices()
        ]
        return synthesis_pb2.ListVoicesResponse(voices=voices, default_engine=self._default)
