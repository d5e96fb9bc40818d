"""Client side of SynthesisService: stream text in, get audio chunks out, cancel at once on barge-in."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np

from emoloop.client.emotions import emotion_value
from emoloop.client.wavio import from_linear16
from emoloop.v1 import common_pb2, synthesis_pb2, synthesis_pb2_grpc


@dataclass(frozen=True)
class SpeechChunk:
    """One piece of the answer's audio as the client received it."""

    samples: np.ndarray
    sample_rate_hz: int
    index: int
    start_ms: float
    text: str
    is_final: bool
    received_at: float  # time.perf_counter() when it arrived


class SynthesisCall:
    """A running StreamingSynthesize call: iterate for chunks, cancel() to stop the server's work at once."""

    def __init__(
        self,
        stub: synthesis_pb2_grpc.SynthesisServiceStub,
        texts: Iterable[str],
        emotion: str,
        engine: str = "",
        voice: str = "",
        sample_rate_hz: int = 0,
        turn_id: str = "",
        timeout_s: float | None = None,
    ) -> None:
        self.encoding = common_pb2.AUDIO_ENCODING_LINEAR16
        config = synthesis_pb2.SynthesisConfig(
            engine=engine,
            voice=voice,
            emotion=emotion_value(emotion),
            audio_format=common_pb2.AudioFormat(sample_rate_hz=sample_rate_hz, encoding=self.encoding, channels=1),
            turn_id=turn_id,
        )

        def requests() -> Iterator[synthesis_pb2.StreamingSynthesizeRequest]:
            yield synthesis_pb2.StreamingSynthesizeRequest(config=config)
            for piece in texts:
                yield synthesis_pb2.StreamingSynthesizeRequest(text=piece)

        self._call = stub.StreamingSynthesize(requests(), timeout=timeout_s)

    def __iter__(self) -> Iterator[SpeechChunk]:
        for response in self._call:
            chunk = response.chunk
            samples = from_linear16(chunk.audio)
            rate = response.audio_format.sample_rate_hz
            yield SpeechChunk(
                samples, rate, chunk.chunk_index, chunk.start_ms, chunk.text, response.is_final, time.perf_counter()
            )

    def cancel(self) -> None:
        """Cancel the call: the server stops synthesising and no further chunk arrives."""
        self._call.cancel()


def list_voices(channel: grpc.Channel, timeout_s: float = 10.0) -> synthesis_pb2.ListVoicesResponse:
    """The installed voices."""
    return synthesis_pb2_grpc.SynthesisServiceStub(channel).ListVoices(
        synthesis_pb2.ListVoicesRequest(), timeout=timeout_s
    )
