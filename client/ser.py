"""Client side of EmotionRecognitionService: a stream fed from a queue, results read on their own thread."""

from __future__ import annotations

import bisect
import queue
import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np

from emoloop.client.connect import ServiceFailed
from emoloop.client.emotions import emotion_of, scores_dict
from emoloop.client.wavio import to_linear16
from emoloop.v1 import common_pb2, ser_pb2, ser_pb2_grpc

SAMPLE_RATE_HZ = 16000


@dataclass(frozen=True)
class Utterance:
    """One utterance result as the client received it."""

    index: int
    emotion: str
    scores: dict[str, float]
    confidence: float
    start_ms: float
    end_ms: float
    statistics: common_pb2.EmotionStatistics
    decided_ms: float  # how much audio the server had consumed when it decided the utterance ended
    received_at: float  # time.perf_counter() at arrival


@dataclass(frozen=True)
class Interim:
    """The emotion of the newest frames."""

    emotion: str
    is_speech: bool
    end_ms: float
    received_at: float


_END = object()


class SerStream:
    """One StreamingRecognize call: send() audio blocks from any thread, read results from `events`.

    The request iterator is fed from a queue, so the call lives until close() (grpc/grpc#21737), and the
    client remembers when each block was sent, so that latency can be counted from the moment the audio that
    let the server decide an utterance end had been sent.
    """

    def __init__(self, stub: ser_pb2_grpc.EmotionRecognitionServiceStub, interim: bool = True, session_id: str = ""):
        self._requests: queue.Queue = queue.Queue()
        self.events: queue.Queue[Utterance | Interim | Exception | None] = queue.Queue()
        self.active = True  # False once the input is closed or the call has ended
        self._sent_ms: list[float] = []
        self._sent_at: list[float] = []
        self._total_samples = 0
        config = ser_pb2.RecognitionConfig(
            audio_format=common_pb2.AudioFormat(
                sample_rate_hz=SAMPLE_RATE_HZ, encoding=common_pb2.AUDIO_ENCODING_LINEAR16, channels=1
            ),
            interim_results=interim,
            session_id=session_id,
        )
        self._requests.put(ser_pb2.StreamingRecognizeRequest(config=config))
        self._call = stub.StreamingRecognize(iter(self._requests.get, _END))
        self._reader = threading.Thread(target=self._read, name="ser-results", daemon=True)
        self._reader.start()

    def send(self, block: np.ndarray) -> None:
        """Queue a block of 16 kHz float32 audio and note when it went out."""
        self._requests.put(ser_pb2.StreamingRecognizeRequest(audio=to_linear16(block)))
        self._total_samples += block.size
        self._sent_ms.append(self._total_samples * 1000.0 / SAMPLE_RATE_HZ)
        self._sent_at.append(time.perf_counter())

    def sent_at(self, stream_ms: float) -> float:
        """perf_counter time at which the audio up to stream_ms had been sent."""
        i = min(bisect.bisect_left(self._sent_ms, stream_ms - 1e-6), len(self._sent_at) - 1)
        return self._sent_at[i]

    def close(self) -> None:
        """End the input; the server flushes an open utterance and finishes the stream."""
        if self.active:
            self.active = False
            self._requests.put(_END)

    def cancel(self) -> None:
        """Abandon the call at once."""
        self.close()
        self._call.cancel()

    def _read(self) -> None:
        try:
            for response in self._call:
                kind = response.WhichOneof("result")
                if kind == "utterance":
                    u = response.utterance
                    self.events.put(
                        Utterance(
                            u.utterance_index,
                            emotion_of(u.emotion),
                            scores_dict(u.scores),
                            u.confidence,
                            u.start_ms,
                            u.end_ms,
                            u.statistics,
                            response.audio_processed_ms,
                            time.perf_counter(),
                        )
                    )
                elif kind == "interim":
                    i = response.interim
                    self.events.put(Interim(emotion_of(i.emotion), i.is_speech, i.end_ms, time.perf_counter()))
            self.events.put(None)
        except grpc.RpcError as error:
            self.active = False
            self.events.put(None if error.code() == grpc.StatusCode.CANCELLED else ServiceFailed("ser", error))
