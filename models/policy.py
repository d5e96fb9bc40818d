"""The response policy: a 2-layer MLP over an utterance's emotion statistics and the conversation context.

Inference is plain numpy so the policy process never imports torch (its budget is 1 ms and 30 MB). The
MLP is trained by `make train-policy` to imitate the rule table in policy_rules.toml; overrides from
policy_overrides.toml are applied on top of its choice.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .emotions import EMOTIONS, emotion_index

HERE = Path(__file__).parent
DEFAULT_RULES = HERE / "policy_rules.toml"
DEFAULT_OVERRIDES = HERE / "policy_overrides.toml"
DEFAULT_WEIGHTS = HERE / "policy_weights.npz"

MAX_TURN = 20
"""Turn indices are clipped here before scaling: after a few turns the index carries no new signal."""


@dataclass(frozen=True)
class PolicyInput:
    """One utterance as the policy sees it: frame statistics plus where the conversation stands."""

    mean: np.ndarray
    max: np.ndarray
    std: np.ndarray
    confidence: float
    previous_response: str | None
    turn_index: int
    persona: str

    def __post_init__(self) -> None:
        for name in ("mean", "max", "std"):
            value = np.asarray(getattr(self, name), dtype=np.float64)
            if value.shape != (len(EMOTIONS),):
                raise ValueError(f"statistics.{name}: expected {len(EMOTIONS)} scores, got {value.shape}")
            if not np.all(np.isfinite(value)) or np.any(value < 0) or np.any(value > 1):
                raise ValueError(f"statistics.{name}: every score must be a number in [0, 1]")
            object.__setattr__(self, name, value)
        if abs(float(self.mean.sum()) - 1.0) > 0.02:
            raise ValueError(f"statistics.mean: must sum to 1, sums to {float(self.mean.sum()):.3f}")
        if not (np.isfinite(self.confidence) and 0.0 <= self.confidence <= 1.0):
            raise ValueError("statistics.confidence: must be in [0, 1]")
        if self.previous_response is not None:
            emotion_index(self.previous_response)
        if self.turn_index < 0:
            raise ValueError("context.turn_index: must be >= 0")

    @property
    def user_emotion(self) -> str:
        """The dominant emotion of the utterance."""
        return EMOTIONS[int(np.argmax(self.mean))]

    @property
    def margin(self) -> float:
        """How far the top emotion is ahead of the second: small means the utterance is ambiguous."""
        top2 = np.sort(self.mean)[-2:]
        return float(top2[1] - top2[0])


@dataclass(frozen=True)
class RuleTable:
    """The per-persona answer table with hysteresis: the teacher the MLP learns from."""

    personas: dict[str, dict[str, str]]
    descriptions: dict[str, str]
    min_confidence: float
    min_margin: float

    @classmethod
    def load(cls, path: Path = DEFAULT_RULES) -> RuleTable:
        """Read and validate a rules file; errors name the offending key."""
        data = tomllib.loads(Path(path).read_text())
        hysteresis = data.get("hysteresis", {})
        personas: dict[str, dict[str, str]] = {}
        descriptions: dict[str, str] = {}
        for name, table in data.get("personas", {}).items():
            descriptions[name] = str(table.get("description", ""))
            answers = {k: v for k, v in table.items() if k != "description"}
            if sorted(answers) != sorted(EMOTIONS):
                raise ValueError(f"personas.{name}: must map exactly {', '.join(EMOTIONS)}")
            for user, response in answers.items():
                try:
                    emotion_index(response)
                except ValueError as error:
                    raise ValueError(f"personas.{name}.{user}: {error}") from None
            personas[name] = answers
        if not personas:
            raise ValueError(f"{path}: defines no personas")
        return cls(
            personas=personas,
            descriptions=descriptions,
            min_confidence=float(hysteresis.get("min_confidence", 0.0)),
            min_margin=float(hysteresis.get("min_margin", 0.0)),
        )

    @property
    def default_persona(self) -> str:
        """The first persona in the file."""
        return next(iter(self.personas))

    def respond(self, inp: PolicyInput) -> str:
        """The table's answer: the persona's mapping, or the previous answer when the input is uncertain."""
        table = self.personas[inp.persona]
        uncertain = inp.confidence < self.min_confidence or inp.margin < self.min_margin
        if uncertain:
            return inp.previous_response or table["neutral"]
        return table[inp.user_emotion]


def featurize(inp: PolicyInput, personas: list[str]) -> np.ndarray:
    """The MLP's input vector; its layout is fixed by the persona list stored with the weights."""
    previous = np.zeros(len(EMOTIONS) + 1)
    previous[0 if inp.previous_response is None else emotion_index(inp.previous_response) + 1] = 1.0
    persona = np.zeros(len(personas))
    persona[personas.index(inp.persona)] = 1.0
    turn = [min(inp.turn_index, MAX_TURN) / MAX_TURN, float(inp.turn_index == 0)]
    return np.concatenate([inp.mean, inp.max, inp.std, [inp.confidence], previous, turn, persona])


def feature_size(personas: list[str]) -> int:
    """Length of the featurize() vector."""
    return 3 * len(EMOTIONS) + 1 + len(EMOTIONS) + 1 + 2 + len(personas)


@dataclass(frozen=True)
class Mlp:
    """Two dense layers with a ReLU between them and a softmax out."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Logits for a batch [N, F] (or one vector [F])."""
        hidden = np.maximum(x @ self.w1 + self.b1, 0.0)
        return hidden @ self.w2 + self.b2

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax of the logits along the last axis."""
        z = self.logits(x)
        z = z - z.max(axis=-1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=-1, keepdims=True)


def save_weights(path: Path, mlp: Mlp, personas: list[str], training: dict[str, Any]) -> None:
    """Write the weights with the metadata Policy.load checks (personas, emotions) and how they were made."""
    meta = {"personas": personas, "emotions": list(EMOTIONS), "training": training}
    np.savez(path, w1=mlp.w1, b1=mlp.b1, w2=mlp.w2, b2=mlp.b2, meta=np.array(json.dumps(meta)))


@dataclass(frozen=True)
class OverrideRule:
    """A rule that replaces the MLP's choice when all of its conditions hold."""

    name: str
    respond: str
    personas: tuple[str, ...] = ()
    when_user: tuple[str, ...] = ()
    when_response: tuple[str, ...] = ()
    min_confidence: float = 0.0

    def matches(self, inp: PolicyInput, model_choice: str) -> bool:
        """Whether every condition given holds for this input and MLP choice."""
        return (
            (not self.personas or inp.persona in self.personas)
            and (not self.when_user or inp.user_emotion in self.when_user)
            and (not self.when_response or model_choice in self.when_response)
            and inp.confidence >= self.min_confidence
        )


_RULE_KEYS = {"name", "respond", "personas", "when_user", "when_response", "min_confidence"}


def load_overrides(path: Path, personas: list[str]) -> list[OverrideRule]:
    """Read and validate an overrides file, so a typo stops the service at start, naming the key."""
    data = tomllib.loads(Path(path).read_text())
    unknown_top = set(data) - {"rule"}
    if unknown_top:
        raise ValueError(f"{path}: unknown key {sorted(unknown_top)[0]!r}; expected [[rule]] tables")
    rules = []
    for i, raw in enumerate(data.get("rule", [])):
        where = f"{path}: rule[{i}]"
        unknown = set(raw) - _RULE_KEYS
        if unknown:
            raise ValueError(f"{where}.{sorted(unknown)[0]}: unknown key; allowed: {', '.join(sorted(_RULE_KEYS))}")
        for key in ("name", "respond"):
            if not isinstance(raw.get(key), str) or not raw[key]:
                raise ValueError(f"{where}.{key}: required string")
        for key in ("respond", "when_user", "when_response"):
            values = raw.get(key, [])
            for value in [values] if isinstance(values, str) else values:
                try:
                    emotion_index(value)
                except ValueError as error:
                    raise ValueError(f"{where}.{key}: {error}") from None
        for persona in raw.get("personas", []):
            if persona not in personas:
                raise ValueError(f"{where}.personas: unknown persona {persona!r}; known: {', '.join(personas)}")
        confidence = raw.get("min_confidence", 0.0)
        if not isinstance(confidence, int | float) or not 0.0 <= confidence <= 1.0:
            raise ValueError(f"{where}.min_confidence: must be a number in [0, 1]")
        rules.append(
            OverrideRule(
                name=raw["name"],
                respond=raw["respond"],
                personas=tuple(raw.get("personas", [])),
                when_user=tuple(raw.get("when_user", [])),
                when_response=tuple(raw.get("when_response", [])),
                min_confidence=float(confidence),
            )
        )
    return rules


@dataclass(frozen=True)
class Decision:
    """The policy's answer: an emotion, the MLP's distribution, and why."""

    emotion: str
    probabilities: np.ndarray
    reason: str  # "model" or "rule_override"
    rule: str = ""
    persona: str = ""


@dataclass(frozen=True)
class Policy:
    """The trained MLP, the personas it was trained for, and the override rules."""

    mlp: Mlp
    personas: list[str]
    descriptions: dict[str, str]
    overrides: list[OverrideRule] = field(default_factory=list)

    @property
    def default_persona(self) -> str:
        """The persona used when a caller names none."""
        return self.personas[0]

    @classmethod
    def load(
        cls,
        weights: Path = DEFAULT_WEIGHTS,
        rules: Path = DEFAULT_RULES,
        overrides: Path | None = DEFAULT_OVERRIDES,
    ) -> Policy:
        """Load weights and check they were trained for the personas the rules file defines."""
        table = RuleTable.load(rules)
        with np.load(weights) as archive:
            meta = json.loads(str(archive["meta"]))
            mlp = Mlp(*(archive[k] for k in ("w1", "b1", "w2", "b2")))
        if meta["personas"] != list(table.personas) or meta["emotions"] != list(EMOTIONS):
            raise ValueError(
                f"{weights}: trained for personas {meta['personas']}, but {rules} defines "
                f"{list(table.personas)}; run `make train-policy`"
            )
        if mlp.w1.shape[0] != feature_size(meta["personas"]):
            raise ValueError(f"{weights}: input size {mlp.w1.shape[0]} does not match the featurisation")
        rules_list = load_overrides(overrides, meta["personas"]) if overrides else []
        return cls(mlp, meta["personas"], table.descriptions, rules_list)

    def decide(self, inp: PolicyInput) -> Decision:
        """Choose the response emotion for one utterance."""
        if inp.persona not in self.personas:
            raise ValueError(f"context.persona: unknown persona {inp.persona!r}; known: {', '.join(self.personas)}")
        probabilities = self.mlp.probabilities(featurize(inp, self.personas))
        choice = EMOTIONS[int(np.argmax(probabilities))]
        for rule in self.overrides:
            if rule.matches(inp, choice):
                return Decision(rule.respond, probabilities, "rule_override", rule.name, inp.persona)
        return Decision(choice, probabilities, "model", "", inp.persona)
