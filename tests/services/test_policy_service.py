"""PolicyService over real gRPC: decisions, conversations, and a precise INVALID_ARGUMENT for bad input."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import pytest

from emoloop.v1 import common_pb2, policy_pb2, policy_pb2_grpc

E = common_pb2


def stats(emotion: str, strength: float) -> common_pb2.EmotionStatistics:
    """Statistics of an utterance that puts `strength` on one emotion."""
    names = ["neutral", "calm", "happy", "sad", "angry", "fearful"]
    rest = (1 - strength) / 5
    mean = {n: (strength if n == emotion else rest) for n in names}
    return common_pb2.EmotionStatistics(
        mean=common_pb2.EmotionScores(**mean),
        max=common_pb2.EmotionScores(**{n: min(1.0, v * 1.3) for n, v in mean.items()}),
        std=common_pb2.EmotionScores(**{n: v * 0.2 for n, v in mean.items()}),
        confidence=strength,
        frame_count=120,
    )


@pytest.fixture
def stub(policy_channel: grpc.Channel) -> policy_pb2_grpc.PolicyServiceStub:
    return policy_pb2_grpc.PolicyServiceStub(policy_channel)


def test_decide_answers_an_angry_user_calmly_with_the_default_persona(
    stub: policy_pb2_grpc.PolicyServiceStub,
) -> None:
    response = stub.Decide(policy_pb2.DecideRequest(statistics=stats("angry", 0.9), turn_id="t1"), timeout=5)
    assert response.decision.emotion == E.EMOTION_CALM
    assert response.decision.persona == "support"
    assert response.decision.reason == policy_pb2.DECISION_REASON_MODEL
    assert response.turn_id == "t1"
    scores = response.decision.scores
    assert math.isclose(
        sum(getattr(scores, n) for n in ("neutral", "calm", "happy", "sad", "angry", "fearful")),
        1,
        rel_tol=1e-4,
    )


def test_decide_reports_a_rule_override(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    request = policy_pb2.DecideRequest(
        statistics=stats("fearful", 0.95), context=policy_pb2.PolicyContext(persona="mirror", turn_index=2)
    )
    decision = stub.Decide(request, timeout=5).decision
    assert decision.reason == policy_pb2.DECISION_REASON_RULE_OVERRIDE
    assert decision.rule == "confident-fear-gets-calm"
    assert decision.emotion == E.EMOTION_CALM


def conversation(
    persona: str, *observations: common_pb2.EmotionStatistics
) -> Iterator[policy_pb2.StreamingDecideRequest]:
    yield policy_pb2.StreamingDecideRequest(config=policy_pb2.PolicySessionConfig(persona=persona))
    for i, observation in enumerate(observations):
        yield policy_pb2.StreamingDecideRequest(
            observation=policy_pb2.TurnObservation(statistics=observation, turn_id=f"turn-{i}")
        )


def test_streaming_decide_keeps_the_context_across_turns(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    turns = [stats("sad", 0.9), stats("happy", 0.3), stats("happy", 0.9)]
    responses = list(stub.StreamingDecide(conversation("mirror", *turns), timeout=5))
    assert [r.turn_index for r in responses] == [0, 1, 2]
    assert [r.turn_id for r in responses] == ["turn-0", "turn-1", "turn-2"]
    # The ambiguous second turn keeps the previous answer (sad) instead of flipping to happy.
    assert [r.decision.emotion for r in responses] == [E.EMOTION_SAD, E.EMOTION_SAD, E.EMOTION_HAPPY]


def test_list_personas_names_the_default_first(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    response = stub.ListPersonas(policy_pb2.ListPersonasRequest(), timeout=5)
    assert response.default_persona == "support"
    assert [p.name for p in response.personas] == ["support", "mirror", "cheerful"]
    assert all(p.description for p in response.personas)


def bad_mean() -> common_pb2.EmotionStatistics:
    s = stats("calm", 0.9)
    s.mean.calm = 3.0
    return s


def nan_max() -> common_pb2.EmotionStatistics:
    s = stats("calm", 0.9)
    s.max.sad = float("nan")
    return s


@pytest.mark.parametrize(
    ("request_", "field"),
    [
        (policy_pb2.DecideRequest(), "statistics"),
        (
            policy_pb2.DecideRequest(statistics=common_pb2.EmotionStatistics(confidence=0.5)),
            "statistics.mean",
        ),
        (policy_pb2.DecideRequest(statistics=bad_mean()), "statistics.mean"),
        (policy_pb2.DecideRequest(statistics=nan_max()), "statistics.max"),
        (
            policy_pb2.DecideRequest(statistics=stats("sad", 0.8), context=policy_pb2.PolicyContext(persona="pirate")),
            "context.persona",
        ),
        (
            policy_pb2.DecideRequest(
                statistics=stats("sad", 0.8), context=policy_pb2.PolicyContext(previous_response_emotion=42)
            ),
            "context.previous_response_emotion",
        ),
        (
            policy_pb2.DecideRequest(statistics=stats("sad", 0.8), context=policy_pb2.PolicyContext(turn_index=-3)),
            "context.turn_index",
        ),
        (policy_pb2.DecideRequest(statistics=stats("sad", 0.8), turn_id="a\x00b"), "turn_id"),
        (policy_pb2.DecideRequest(statistics=stats("sad", 0.8), turn_id="x" * 1000), "turn_id"),
    ],
)
def test_bad_decide_requests_get_invalid_argument_naming_the_field(
    stub: policy_pb2_grpc.PolicyServiceStub, request_: policy_pb2.DecideRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.Decide(request_, timeout=5)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")
    # ... and the service lives on.
    assert stub.Decide(policy_pb2.DecideRequest(statistics=stats("happy", 0.9)), timeout=5).decision.emotion


def test_a_stream_whose_first_message_is_not_a_config_is_rejected(
    stub: policy_pb2_grpc.PolicyServiceStub,
) -> None:
    requests = iter(
        [policy_pb2.StreamingDecideRequest(observation=policy_pb2.TurnObservation(statistics=stats("sad", 0.9)))]
    )
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamingDecide(requests, timeout=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("config:")


def test_a_second_config_in_a_stream_is_rejected(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    config = policy_pb2.StreamingDecideRequest(config=policy_pb2.PolicySessionConfig())
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamingDecide(iter([config, config]), timeout=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("observation:")


def test_an_empty_stream_is_rejected(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.StreamingDecide(iter([]), timeout=5))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_an_oversized_message_is_refused(stub: policy_pb2_grpc.PolicyServiceStub) -> None:
    huge = policy_pb2.DecideRequest(statistics=stats("sad", 0.8), turn_id="x" * (5 * 1024 * 1024))
    with pytest.raises(grpc.RpcError) as caught:
        stub.Decide(huge, timeout=5)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
