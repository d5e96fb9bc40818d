"""PolicyService: a thin adapter from the policy protos to models.policy."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc

from emoloop.models.policy import DEFAULT_OVERRIDES, DEFAULT_RULES, DEFAULT_WEIGHTS, Decision, Policy, PolicyInput
from emoloop.services.convert import array_to_scores, check_text, emotion_name, emotion_value, scores_to_array
from emoloop.services.server import InvalidArgument, Unavailable, rpc_errors
from emoloop.v1 import common_pb2, policy_pb2, policy_pb2_grpc

_REASONS = {
    "model": policy_pb2.DECISION_REASON_MODEL,
    "rule_override": policy_pb2.DECISION_REASON_RULE_OVERRIDE,
}
MAX_ID_CHARS = 128


class PolicyServicer(policy_pb2_grpc.PolicyServiceServicer):
    """Decides response emotions; the loaded Policy is shared and stateless, conversations keep context."""

    service_name = policy_pb2.DESCRIPTOR.services_by_name["PolicyService"].full_name

    def __init__(self, weights: Path, rules: Path, overrides: Path | None) -> None:
        self._paths = (weights, rules, overrides)
        self._policy: Policy | None = None

    def register(self, server: grpc.Server) -> None:
        policy_pb2_grpc.add_PolicyServiceServicer_to_server(self, server)

    def load(self) -> None:
        self._policy = Policy.load(*self._paths)

    @property
    def policy(self) -> Policy:
        if self._policy is None:
            raise Unavailable("policy: still loading")
        return self._policy

    def _input(self, stats: common_pb2.EmotionStatistics, previous: int, turn_index: int, persona: str) -> PolicyInput:
        """Validate the wire values and build the model's input; errors name the proto field."""
        if stats.frame_count < 0:
            raise InvalidArgument("statistics.frame_count", "must be >= 0")
        if not stats.HasField("mean"):
            raise InvalidArgument("statistics.mean", "required")
        persona = persona or self.policy.default_persona
        check_text(persona, "context.persona", MAX_ID_CHARS)
        if persona not in self.policy.personas:
            raise InvalidArgument(
                "context.persona", f"unknown persona {persona!r}; known: {', '.join(self.policy.personas)}"
            )
        try:
            return PolicyInput(
                mean=scores_to_array(stats.mean),
                max=scores_to_array(stats.max),
                std=scores_to_array(stats.std),
                confidence=stats.confidence,
                previous_response=emotion_name(previous, "context.previous_response_emotion", allow_unspecified=True),
                turn_index=turn_index,
                persona=persona,
            )
        except ValueError as error:
            field, _, message = str(error).partition(": ")
            raise InvalidArgument(field, message) from None

    @staticmethod
    def _decision(decision: Decision) -> policy_pb2.Decision:
        return policy_pb2.Decision(
            emotion=emotion_value(decision.emotion),
            scores=array_to_scores(decision.probabilities),
            reason=_REASONS[decision.reason],
            rule=decision.rule,
            persona=decision.persona,
        )

    @rpc_errors
    def Decide(self, request: policy_pb2.DecideRequest, context: grpc.ServicerContext) -> policy_pb2.DecideResponse:
        check_text(request.turn_id, "turn_id", MAX_ID_CHARS)
        if not request.HasField("statistics"):
            raise InvalidArgument("statistics", "required")
        ctx = request.context
        inp = self._input(request.statistics, ctx.previous_response_emotion, ctx.turn_index, ctx.persona)
        return policy_pb2.DecideResponse(decision=self._decision(self.policy.decide(inp)), turn_id=request.turn_id)

    @rpc_errors
    def StreamingDecide(
        self, request_iterator: Iterator[policy_pb2.StreamingDecideRequest], context: grpc.ServicerContext
    ) -> Iterator[policy_pb2.StreamingDecideResponse]:
        first = next(request_iterator, None)
        if first is None or first.WhichOneof("streaming_request") != "config":
            raise InvalidArgument("config", "the first message of a stream must be the config")
        persona = first.config.persona
        previous = common_pb2.EMOTION_UNSPECIFIED
        for turn_index, request in enumerate(request_iterator):
            if request.WhichOneof("streaming_request") != "observation":
                raise InvalidArgument("observation", "only the first message may be a config")
            observation = request.observation
            check_text(observation.turn_id, "observation.turn_id", MAX_ID_CHARS)
            if not observation.HasField("statistics"):
                raise InvalidArgument("observation.statistics", "required")
            inp = self._input(observation.statistics, previous, turn_index, persona)
            decision = self._decision(self.policy.decide(inp))
            previous = decision.emotion
            yield policy_pb2.StreamingDecideResponse(
                decision=decision, turn_id=observation.turn_id, turn_index=turn_index
            )

    @rpc_errors
    def ListPersonas(
        self, request: policy_pb2.ListPersonasRequest, context: grpc.ServicerContext
    ) -> policy_pb2.ListPersonasResponse:
        policy = self.policy
        return policy_pb2.ListPersonasResponse(
            personas=[policy_pb2.Persona(name=n, description=policy.descriptions.get(n, "")) for n in policy.personas],
            default_persona=policy.default_persona,
        )


def default_servicer() -> PolicyServicer:
    """The policy with the shipped weights, rules and overrides."""
    return PolicyServicer(DEFAULT_WEIGHTS, DEFAULT_RULES, DEFAULT_OVERRIDES)
