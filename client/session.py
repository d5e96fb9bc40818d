"""One conversation: utterance results from SER -> policy -> synthesis -> an answer sink, one CSV line a turn.

The session knows only the protos (through the client modules) and two small sink kinds: a file sink for
`emoloop run` and the speaker for `emoloop live`. Latency is counted from the moment the audio that let the
server decide the utterance had ended was sent (the endpoint) to the first answer sample going out.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

import grpc
import numpy as np

from emoloop.client.audio import Speaker
from emoloop.client.connect import ServiceDown, ServiceFailed
from emoloop.client.csvlog import TurnLog, TurnRecord, utc_now
from emoloop.client.emotions import emotion_of, emotion_value, scores_dict
from emoloop.client.ser import SerStream, Utterance
from emoloop.client.synthesis import SpeechChunk, SynthesisCall
from emoloop.v1 import policy_pb2, policy_pb2_grpc, ser_pb2_grpc, synthesis_pb2_grpc

DECISION_REASONS = {policy_pb2.DECISION_REASON_MODEL: "model", policy_pb2.DECISION_REASON_RULE_OVERRIDE: "override"}


class AnswerSink(Protocol):
    """Where answer audio goes: a file or a speaker."""

    def push(self, chunk: SpeechChunk, turn_id: str) -> None:
        """Take one chunk of a turn's answer."""

    def first_sample_at(self, turn_id: str, timeout_s: float) -> float | None:
        """perf_counter time at which the turn's first sample went out (None if it never did)."""

    def interrupt(self, turn_id: str) -> None:
        """Drop whatever of this turn has not been played yet."""

    def playing(self, turn_id: str) -> bool:
        """Whether some of this turn's audio is still to be heard."""


@dataclass
class FileSink:
    """Collects answers for a WAV file; a sample 'goes out' when its chunk arrives."""

    sample_rate_hz: int = 0
    gap_s: float = 0.3
    pieces: list[np.ndarray] = field(default_factory=list)
    _first: dict[str, float] = field(default_factory=dict)

    def push(self, chunk: SpeechChunk, turn_id: str) -> None:
        if turn_id not in self._first:
            self._first[turn_id] = time.perf_counter()
            if self.pieces:  # a short pause between answers
                self.pieces.append(np.zeros(int(self.gap_s * chunk.sample_rate_hz), np.float32))
        self.sample_rate_hz = chunk.sample_rate_hz
        self.pieces.append(chunk.samples)

    def first_sample_at(self, turn_id: str, timeout_s: float) -> float | None:
        return self._first.get(turn_id)

    def interrupt(self, turn_id: str) -> None:
        """A file has nothing to stop."""

    def playing(self, turn_id: str) -> bool:
        return False

    def audio(self) -> np.ndarray:
        return np.concatenate(self.pieces) if self.pieces else np.zeros(0, np.float32)


class SpeakerSink:
    """Plays answers through a Speaker (client.audio); first-sample times come from its output callback."""

    def __init__(self, speaker: Speaker) -> None:
        self.speaker = speaker

    def push(self, chunk: SpeechChunk, turn_id: str) -> None:
        self.speaker.push(chunk.samples, chunk.sample_rate_hz, turn_id, last=chunk.is_final)

    def first_sample_at(self, turn_id: str, timeout_s: float) -> float | None:
        deadline = time.perf_counter() + timeout_s
        while (turn := self.speaker.turn(turn_id)) is None or turn.first_sample_at is None:
            if time.perf_counter() > deadline:
                return None
            time.sleep(0.002)
        return turn.first_sample_at

    def interrupt(self, turn_id: str) -> None:
        self.speaker.clear(turn_id)

    def playing(self, turn_id: str) -> bool:
        turn = self.speaker.turn(turn_id)
        return turn is not None and turn.played_samples + turn.dropped_samples < turn.queued_samples


@dataclass(frozen=True)
class Stubs:
    """The three services' stubs."""

    ser: ser_pb2_grpc.EmotionRecognitionServiceStub
    policy: policy_pb2_grpc.PolicyServiceStub
    synthesis: synthesis_pb2_grpc.SynthesisServiceStub

    @classmethod
    def of(cls, ser: grpc.Channel, policy: grpc.Channel, synthesis: grpc.Channel) -> Stubs:
        return cls(
            ser_pb2_grpc.EmotionRecognitionServiceStub(ser),
            policy_pb2_grpc.PolicyServiceStub(policy),
            synthesis_pb2_grpc.SynthesisServiceStub(synthesis),
        )


@dataclass(frozen=True)
class Voice:
    """What the answers sound like."""

    persona: str = ""
    engine: str = ""
    voice: str = ""
    sample_rate_hz: int = 0


def replies_from(texts: list[str]) -> Iterator[str]:
    """The answer texts, turn by turn; the last one repeats once the list runs out."""
    return itertools.chain(texts, itertools.repeat(texts[-1]))


class Conversation:
    """Answers utterances: policy, then synthesis into the sink, then the CSV line."""

    def __init__(
        self,
        stubs: Stubs,
        replies: Iterator[str],
        sink: AnswerSink,
        voice: Voice = Voice(),
        log: TurnLog | None = None,
        report: Callable[[str], None] = print,
        timeout_s: float = 30.0,
    ) -> None:
        self.stubs, self.replies, self.sink, self.voice, self.log = stubs, replies, sink, voice, log
        self.report, self.timeout_s = report, timeout_s
        self.previous_emotion = 0
        self.turn_index = 0
        self._call: SynthesisCall | None = None
        self._turn_id = ""
        self._lock = threading.Lock()
        self.records: list[TurnRecord] = []

    def answer(self, utterance: Utterance, endpoint_at: float) -> TurnRecord:
        """One turn: decide, speak into the sink, log, and report each stage."""
        turn_id = f"turn-{self.turn_index}-{uuid.uuid4().hex[:8]}"
        started = time.perf_counter()
        decision = self._decide(utterance, turn_id)
        out_emotion = emotion_of(decision.emotion)
        text = next(self.replies)
        call = SynthesisCall(
            self.stubs.synthesis,
            [text],
            out_emotion,
            engine=self.voice.engine,
            voice=self.voice.voice,
            sample_rate_hz=self.voice.sample_rate_hz,
            turn_id=turn_id,
            timeout_s=self.timeout_s,
        )
        with self._lock:
            self._call, self._turn_id = call, turn_id
        synthesis_started = time.perf_counter()
        first_chunk_at, answer_samples, rate = None, 0, 0
        try:
            for chunk in call:
                first_chunk_at = first_chunk_at or chunk.received_at
                answer_samples, rate = answer_samples + chunk.samples.size, chunk.sample_rate_hz
                self.sink.push(chunk, turn_id)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                raise ServiceFailed("synthesis", error) from None
        finally:
            with self._lock:
                self._call = None
        first_sample_at = self.sink.first_sample_at(turn_id, timeout_s=2.0)
        heard = first_sample_at or first_chunk_at or time.perf_counter()
        record = TurnRecord(
            timestamp=utc_now(),
            text=text,
            in_emotion=utterance.emotion,
            out_emotion=out_emotion,
            latency_ms=(heard - endpoint_at) * 1000,
            turn_id=turn_id,
            in_confidence=utterance.confidence,
            policy_reason=DECISION_REASONS.get(decision.reason, "?") + (f":{decision.rule}" if decision.rule else ""),
            ser_ms=(started - endpoint_at) * 1000,
            policy_ms=(synthesis_started - started) * 1000,
            synthesis_first_chunk_ms=((first_chunk_at or heard) - synthesis_started) * 1000,
            playback_ms=(heard - (first_chunk_at or heard)) * 1000,
            utterance_ms=utterance.end_ms - utterance.start_ms,
            answer_ms=answer_samples * 1000 / rate if rate else 0.0,
        )
        self.records.append(record)
        if self.log:
            self.log.append(record)
        self.previous_emotion = emotion_value(out_emotion)
        self.turn_index += 1
        self._report(utterance, decision, record)
        return record

    def _decide(self, utterance: Utterance, turn_id: str) -> policy_pb2.Decision:
        """Ask the policy for the answer's emotion, in the conversation's context."""
        request = policy_pb2.DecideRequest(
            statistics=utterance.statistics,
            context=policy_pb2.PolicyContext(
                previous_response_emotion=self.previous_emotion, turn_index=self.turn_index, persona=self.voice.persona
            ),
            turn_id=turn_id,
        )
        try:
            return self.stubs.policy.Decide(request, timeout=self.timeout_s).decision
        except grpc.RpcError as error:
            raise ServiceFailed("policy", error) from None

    def interrupt(self) -> bool:
        """Barge-in: cancel the answer being synthesised and silence what is queued; True if one was playing."""
        with self._lock:
            call, turn_id = self._call, self._turn_id
        audible = bool(turn_id) and self.sink.playing(turn_id)
        if call is not None:
            call.cancel()
        if audible or call is not None:
            self.sink.interrupt(turn_id)
        return audible or call is not None

    def _report(self, utterance: Utterance, decision: policy_pb2.Decision, record: TurnRecord) -> None:
        scores = scores_dict(decision.scores)
        self.report(
            f"heard    {record.in_emotion} ({record.in_confidence:.2f}) in "
            f"{utterance.start_ms / 1000:.2f}-{utterance.end_ms / 1000:.2f} s"
        )
        self.report(
            f"policy   {record.out_emotion} ({scores[record.out_emotion]:.2f}, {record.policy_reason}, "
            f"persona {decision.persona})"
        )
        self.report(f'answer   "{record.text}" ({record.answer_ms / 1000:.2f} s of audio)')
        self.report(
            f"latency  {record.latency_ms:.0f} ms from the endpoint to the first answer sample = SER result "
            f"{record.ser_ms:.0f} + policy {record.policy_ms:.0f} + first synthesis chunk "
            f"{record.synthesis_first_chunk_ms:.0f} + playback {record.playback_ms:.0f} ms"
        )


def converse(
    conversation: Conversation,
    stream: SerStream,
    audio_blocks: Iterator[np.ndarray],
    barge_in: bool = False,
) -> None:
    """Feed audio blocks to SER on a thread while answering each utterance here, until the audio ends.

    With barge_in, speech heard while an answer plays cancels it (the SER's interim results flag speech only
    after the endpointer's minimum speech length, so a cough or "mhm" does not interrupt). A service that fails
    raises ServiceFailed naming it; the audio iterator is left where it stopped, ready for a new stream.
    """
    failure: list[BaseException] = []

    def feed() -> None:
        try:
            for block in audio_blocks:
                stream.send(block)
                if not stream.active:
                    return
        except BaseException as error:  # surfaced on the session thread
            failure.append(error)
        finally:
            stream.close()

    feeder = threading.Thread(target=feed, name="audio-feed", daemon=True)
    feeder.start()
    answering: threading.Thread | None = None
    try:
        while not failure and (event := stream.events.get()) is not None:
            if isinstance(event, Exception):
                raise event
            if isinstance(event, Utterance):
                if answering is not None and answering.is_alive():
                    conversation.interrupt()
                    answering.join()
                endpoint_at = stream.sent_at(event.decided_ms)
                answering = threading.Thread(target=_turn, args=(conversation, event, endpoint_at, failure))
                answering.start()
                if not barge_in:  # without barge-in the turns take strict turns
                    answering.join()
            elif barge_in and event.is_speech and conversation.interrupt():
                conversation.report("barge-in: the user spoke; the answer was stopped")
        if answering is not None:
            answering.join()
        if failure:
            raise failure[0]
    finally:
        if stream.active or failure:
            stream.cancel()
        feeder.join()


def _turn(conversation: Conversation, utterance: Utterance, endpoint_at: float, failure: list) -> None:
    """Answer one utterance on its own thread, handing any failure to the session thread."""
    try:
        conversation.answer(utterance, endpoint_at)
    except BaseException as error:
        failure.append(error)


def keep_conversing(
    conversation: Conversation,
    reconnect: Callable[[], Stubs],
    audio_blocks: Iterator[np.ndarray],
    barge_in: bool = True,
    backoff_s: tuple[float, ...] = (0.5, 1, 2, 4, 8),
) -> None:
    """converse(), and when a service fails, say which, reconnect with backoff and go on listening.

    Audio that arrives while a service is down is dropped: the user is told, and speaks again when it is back.
    """
    while True:
        try:
            converse(conversation, SerStream(conversation.stubs.ser, interim=barge_in), audio_blocks, barge_in)
            return
        except ServiceFailed as failure:
            conversation.report(f"{failure}; reconnecting")
            conversation.interrupt()
        for attempt in itertools.count():
            try:
                conversation.stubs = reconnect()
                conversation.report("reconnected; listening again")
                break
            except ServiceDown as down:
                delay = backoff_s[min(attempt, len(backoff_s) - 1)]
                conversation.report(f"{down}; retrying in {delay:g} s")
                time.sleep(delay)
