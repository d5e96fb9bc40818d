"""Load: several concurrent streaming sessions per service for a fixed short time, with nothing dropped.

Six sessions fit this 2-core machine; each session repeats whole streams until the time is up, and every
stream must come back complete and in order, as it does alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from emoloop.v1 import common_pb2, policy_pb2, synthesis_pb2
from tests.reliability.conftest import (
    CALL_TIMEOUT_S,
    EMOTION_FIELDS,
    MAX_STREAM_S,
    Stubs,
    assert_all_serving,
    check_synthesis_stream,
    observation,
    synthesis_stream,
)
from tests.services.test_ser_service import blocks, config, silence, speech

SESSIONS = 6
DURATION_S = 2.5
UTTERANCES = 3
TURNS = 20
TEXT = ["I understand, ", "let me help you ", "with that right away. ", "It will not take long."]


def hammer(session: Callable[[int, int], None], sessions: int = SESSIONS, duration_s: float = DURATION_S) -> int:
    """Run `session(worker, round)` on `sessions` threads, each repeating it until the time is up.

    Every worker finishes at least one round; an assertion in any round fails the test. Returns the
    number of streams completed.
    """
    deadline = time.monotonic() + duration_s

    def worker(index: int) -> int:
        rounds = 0
        while rounds == 0 or time.monotonic() < deadline:
            session(index, rounds)
            rounds += 1
        return rounds

    with ThreadPoolExecutor(sessions) as pool:
        return sum(pool.map(worker, range(sessions)))


@pytest.fixture(scope="module")
def three_utterances() -> np.ndarray:
    """Three short utterances between silences long enough for the endpointer to close each one.

    Under the servicer's 5 s stream limit here (MAX_STREAM_S).
    """
    utterance = speech("I was waiting.")
    audio = np.concatenate([silence(0.2), utterance, silence(0.7), utterance, silence(0.7), utterance, silence(0.3)])
    assert audio.size / 16000 < MAX_STREAM_S
    return audio


def test_concurrent_ser_streams_each_get_every_utterance_in_order(stubs: Stubs, three_utterances: np.ndarray) -> None:
    requests = [config(), *blocks(three_utterances)]
    alone = list(stubs.ser.StreamingRecognize(iter(requests), timeout=CALL_TIMEOUT_S))
    assert [r.utterance.utterance_index for r in alone if r.WhichOneof("result") == "utterance"] == [0, 1, 2]

    def session(worker: int, rounds: int) -> None:
        session_id = f"load-{worker}-{rounds}"
        cfg = config(interim=True, session_id=session_id)
        responses = list(stubs.ser.StreamingRecognize(iter([cfg, *requests[1:]]), timeout=CALL_TIMEOUT_S))
        utterances = [r.utterance for r in responses if r.WhichOneof("result") == "utterance"]
        assert [u.utterance_index for u in utterances] == list(range(UTTERANCES)), session_id
        assert all(r.session_id == session_id for r in responses)
        for utterance in utterances:
            assert sum(getattr(utterance.scores, name) for name in EMOTION_FIELDS) == pytest.approx(1, abs=1e-4)
        processed = [r.audio_processed_ms for r in responses]
        assert processed == sorted(processed)

    streams = hammer(session)
    print(f"load: {streams} SER streams of {UTTERANCES} utterances over {SESSIONS} concurrent sessions")
    assert streams >= SESSIONS
    assert_all_serving(stubs.channel)


def test_concurrent_synthesis_streams_each_get_all_their_audio_in_order(stubs: Stubs) -> None:
    cfg = synthesis_pb2.SynthesisConfig(emotion=common_pb2.EMOTION_CALM)
    reference = list(stubs.synthesis.StreamingSynthesize(synthesis_stream(cfg, *TEXT), timeout=CALL_TIMEOUT_S))
    alone, phrases = check_synthesis_stream(reference), [r.chunk.text for r in reference]
    rate = 22050
    # espeak-ng's output depends on what it spoke before (state inside the library), so interleaved streams vary by
    # up to ~45 ms (measured); a lost chunk is a whole phrase (> 300 ms) and also fails the phrase check below.
    tolerance = int(0.1 * rate)

    def session(worker: int, rounds: int) -> None:
        turn_id = f"load-{worker}-{rounds}"
        request = synthesis_pb2.SynthesisConfig(emotion=common_pb2.EMOTION_CALM, turn_id=turn_id)
        responses = list(stubs.synthesis.StreamingSynthesize(synthesis_stream(request, *TEXT), timeout=CALL_TIMEOUT_S))
        assert abs(check_synthesis_stream(responses) - alone) <= tolerance, turn_id
        assert [r.chunk.text for r in responses] == phrases
        assert {r.audio_format.sample_rate_hz for r in responses} == {rate}
        assert all(r.turn_id == turn_id for r in responses)

    streams = hammer(session)
    print(f"load: {streams} synthesis streams over {SESSIONS} concurrent sessions")
    assert streams >= SESSIONS
    assert_all_serving(stubs.channel)


def test_concurrent_decision_streams_each_get_one_decision_per_turn(stubs: Stubs) -> None:
    emotions = [EMOTION_FIELDS[i % len(EMOTION_FIELDS)] for i in range(TURNS)]

    def session(worker: int, rounds: int) -> None:
        ids = [f"load-{worker}-{rounds}-{turn}" for turn in range(TURNS)]
        config_request = policy_pb2.StreamingDecideRequest(config=policy_pb2.PolicySessionConfig(persona="support"))
        requests = [config_request, *(observation(e, i) for e, i in zip(emotions, ids, strict=True))]
        responses = list(stubs.policy.StreamingDecide(iter(requests), timeout=CALL_TIMEOUT_S))
        assert [r.turn_index for r in responses] == list(range(TURNS))
        assert [r.turn_id for r in responses] == ids
        assert all(1 <= r.decision.emotion <= len(EMOTION_FIELDS) for r in responses)

    streams = hammer(session)
    print(f"load: {streams} decision streams of {TURNS} turns over {SESSIONS} concurrent sessions")
    assert streams >= SESSIONS
    assert_all_serving(stubs.channel)
