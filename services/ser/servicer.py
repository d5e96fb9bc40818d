"""EmotionRecognitionService: a thin adapter from the SER protos to the feature extractor, VAD and SER model.

One recogniser and one VAD session are shared by every stream; each stream has its own feature extractor,
endpointer and model window, created when the stream starts and dropped when it ends (or its client goes).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from emoloop.models.features import FeatureExtractor
from emoloop.models.ser import DEFAULT_CHECKPOINT, SerRecognizer, SerStream, UtteranceResult
from emoloop.models.vad import DEFAULT_CONFIG as DEFAULT_VAD_CONFIG
from emoloop.models.vad import Endpointer, SileroVad, UtteranceEnd, VadConfig
from emoloop.services.convert import array_to_scores, check_text, decode_audio, emotion_value, mono_encoding
from emoloop.services.server import InvalidArgument, Unavailable, rpc_errors
from emoloop.v1 import common_pb2, ser_pb2, ser_pb2_grpc

SAMPLE_RATE_HZ = 16000
MAX_CHUNK_SAMPLES = SAMPLE_RATE_HZ  # one message carries at most 1 s of audio
FRAME_MS = 10.0  # one feature frame per 10 ms


@dataclass
class _Stream:
    """Per-stream state: features, endpointer and model window, stream time, and ends awaiting their frames."""

    features: FeatureExtractor
    endpointer: Endpointer
    ser: SerStream
    samples: int = 0
    utterances: int = 0
    ends: list[UtteranceEnd] = field(default_factory=list)

    @property
    def processed_ms(self) -> float:
        return self.samples * 1000.0 / SAMPLE_RATE_HZ


def utterance_message(result: UtteranceResult, index: int, start_ms: float, end_ms: float) -> ser_pb2.UtteranceResult:
    """The proto form of a model result; its statistics are what the policy takes."""
    return ser_pb2.UtteranceResult(
        utterance_index=index,
        emotion=emotion_value(result.emotion),
        scores=array_to_scores(result.probabilities),
        confidence=result.confidence,
        start_ms=start_ms,
        end_ms=end_ms,
        statistics=common_pb2.EmotionStatistics(
            mean=array_to_scores(result.frame_mean),
            max=array_to_scores(result.frame_max),
            std=array_to_scores(result.frame_std),
            confidence=result.confidence,
            frame_count=result.n_frames,
        ),
    )


class SerServicer(ser_pb2_grpc.EmotionRecognitionServiceServicer):
    """Streams and clips in, emotions out."""

    service_name = ser_pb2.DESCRIPTOR.services_by_name["EmotionRecognitionService"].full_name

    def __init__(
        self,
        checkpoint: Path = DEFAULT_CHECKPOINT,
        backend: str = "onnx",
        vad_config: Path = DEFAULT_VAD_CONFIG,
        device: str = "auto",
        max_stream_s: float = 3600.0,
        max_clip_s: float = 60.0,
    ) -> None:
        self._checkpoint, self._backend, self._vad_config_path, self._device = checkpoint, backend, vad_config, device
        self.max_stream_s, self.max_clip_s = max_stream_s, max_clip_s
        self._recognizer: SerRecognizer | None = None

    def register(self, server: grpc.Server) -> None:
        ser_pb2_grpc.add_EmotionRecognitionServiceServicer_to_server(self, server)

    def load(self) -> None:
        if not Path(self._checkpoint).is_file():
            raise ValueError(f"no SER checkpoint at {self._checkpoint}: train one with `make train-ser DATA=DIR`")
        self._vad_config = VadConfig.load(self._vad_config_path)
        self._vad = SileroVad()
        self._recognizer = SerRecognizer.load(self._checkpoint, backend=self._backend, device=self._device)

    @property
    def recognizer(self) -> SerRecognizer:
        if self._recognizer is None:
            raise Unavailable("ser: the model is still loading")
        return self._recognizer

    @staticmethod
    def _encoding(config: ser_pb2.RecognitionConfig) -> int:
        """Validate the config's audio format; returns the encoding (UNSPECIFIED means LINEAR16)."""
        audio_format = config.audio_format
        if audio_format.sample_rate_hz != SAMPLE_RATE_HZ:
            raise InvalidArgument(
                "config.audio_format.sample_rate_hz",
                f"{audio_format.sample_rate_hz} Hz is not accepted; send {SAMPLE_RATE_HZ} Hz audio",
            )
        encoding = mono_encoding(audio_format)
        check_text(config.session_id, "config.session_id", 128)
        return encoding

    def _new_stream(self) -> _Stream:
        recognizer = self.recognizer
        return _Stream(
            features=FeatureExtractor(recognizer.checkpoint.feature_config),
            endpointer=Endpointer(self._vad, self._vad_config),
            ser=recognizer.stream(),
        )

    def _feed(
        self, stream: _Stream, samples: np.ndarray, interim: bool
    ) -> Iterator[ser_pb2.StreamingRecognizeResponse]:
        """Push one chunk through features, model and endpointer; yield interim and utterance results."""
        stream.samples += samples.size
        posteriors = stream.ser.push(stream.features.push(samples))
        events = stream.endpointer.push(samples)
        if interim and posteriors is not None:
            mean = posteriors.probabilities.mean(axis=0)
            start = posteriors.start_frame * FRAME_MS
            yield ser_pb2.StreamingRecognizeResponse(
                interim=ser_pb2.FrameEmotions(
                    start_ms=start,
                    end_ms=start + len(posteriors.probabilities) * FRAME_MS,
                    scores=array_to_scores(mean),
                    emotion=int(np.argmax(mean)) + 1,
                    is_speech=stream.endpointer.in_speech,
                ),
                audio_processed_ms=stream.processed_ms,
            )
        yield from self._utterances(stream, events)

    def _utterances(
        self, stream: _Stream, events: list, final: bool = False
    ) -> Iterator[ser_pb2.StreamingRecognizeResponse]:
        """Classify each ended utterance once the feature rows up to its end are in (all of them when `final`).

        Rows trail the audio by the feature look-ahead (swift-f0: ~160 ms), and an end decided on a
        max_length cut or a short min_silence_ms can come before its last rows.
        """
        stream.ends += [event for event in events if isinstance(event, UtteranceEnd)]
        while stream.ends and (final or math.ceil(stream.ends[0].end_ms / FRAME_MS) <= stream.ser.frames_seen):
            event = stream.ends.pop(0)
            result = stream.ser.finish(int(event.start_ms // FRAME_MS), math.ceil(event.end_ms / FRAME_MS))
            if result is None:
                continue
            yield ser_pb2.StreamingRecognizeResponse(
                utterance=utterance_message(result, stream.utterances, event.start_ms, event.end_ms),
                audio_processed_ms=stream.processed_ms,
            )
            stream.utterances += 1

    @rpc_errors
    def StreamingRecognize(
        self, request_iterator: Iterator[ser_pb2.StreamingRecognizeRequest], context: grpc.ServicerContext
    ) -> Iterator[ser_pb2.StreamingRecognizeResponse]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("streaming_request") != "config":
            raise InvalidArgument("config", "the first message of a stream must be the config")
        encoding = self._encoding(first.config)
        interim, session_id = first.config.interim_results, first.config.session_id
        stream = self._new_stream()
        limit = int(self.max_stream_s * SAMPLE_RATE_HZ)
        for request in request_iterator:
            if request.WhichOneof("streaming_request") != "audio":
                raise InvalidArgument("audio", "only the first message may be a config")
            samples = decode_audio(request.audio, encoding, "audio")
            if samples.size == 0:
                raise InvalidArgument("audio", "empty audio message")
            if samples.size > MAX_CHUNK_SAMPLES:
                raise InvalidArgument("audio", f"{samples.size} samples in one message; at most {MAX_CHUNK_SAMPLES}")
            if stream.samples + samples.size > limit:
                raise InvalidArgument("audio", f"the stream is over its maximum of {self.max_stream_s:g} s")
            for response in self._feed(stream, samples, interim):
                response.session_id = session_id
                yield response
        stream.ser.push(stream.features.flush())
        for response in self._utterances(stream, stream.endpointer.flush(), final=True):
            response.session_id = session_id
            yield response

    @rpc_errors
    def Recognize(self, request: ser_pb2.RecognizeRequest, context: grpc.ServicerContext) -> ser_pb2.RecognizeResponse:
        encoding = self._encoding(request.config)
        samples = decode_audio(request.audio, encoding, "audio")
        if samples.size < 400:
            raise InvalidArgument("audio", "the clip is shorter than one 25 ms analysis window")
        if samples.size > self.max_clip_s * SAMPLE_RATE_HZ:
            raise InvalidArgument("audio", f"the clip is over the {self.max_clip_s:g} s limit; stream it instead")
        recognizer = self.recognizer
        features = FeatureExtractor(recognizer.checkpoint.feature_config).extract(samples)
        result = recognizer.recognize(features)
        return ser_pb2.RecognizeResponse(
            result=utterance_message(result, 0, 0.0, samples.size * 1000.0 / SAMPLE_RATE_HZ)
        )
