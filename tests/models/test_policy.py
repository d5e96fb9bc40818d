"""The policy model: it imitates the rule table, holds steady on uncertain input, and validates its files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from emoloop.models.emotions import EMOTIONS
from emoloop.models.policy import (
    DEFAULT_RULES,
    DEFAULT_WEIGHTS,
    Policy,
    PolicyInput,
    RuleTable,
    featurize,
    load_overrides,
)
from emoloop.training.policy_data import make_dataset


def utterance(emotion: str, strength: float, persona: str = "support", previous: str | None = None) -> PolicyInput:
    """An utterance whose mean puts `strength` on one emotion and spreads the rest evenly."""
    mean = np.full(len(EMOTIONS), (1 - strength) / (len(EMOTIONS) - 1))
    mean[EMOTIONS.index(emotion)] = strength
    return PolicyInput(
        mean=mean,
        max=np.minimum(mean * 1.5, 1),
        std=mean * 0.2,
        confidence=float(mean.max()),
        previous_response=previous,
        turn_index=0 if previous is None else 3,
        persona=persona,
    )


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(overrides=None)


def test_trained_mlp_agrees_with_the_rule_table_on_held_out_inputs(policy: Policy) -> None:
    table = RuleTable.load()
    inputs, labels = make_dataset(table, 3000, seed=424242)  # a seed the training never used
    x = np.stack([featurize(i, policy.personas) for i in inputs])
    agreement = np.mean(np.argmax(policy.mlp.logits(x), axis=1) == labels)
    assert agreement >= 0.97


@pytest.mark.parametrize(
    ("persona", "user", "expected"),
    [
        ("support", "angry", "calm"),
        ("support", "happy", "happy"),
        ("support", "sad", "calm"),
        ("mirror", "sad", "sad"),
        ("mirror", "angry", "angry"),
        ("cheerful", "neutral", "happy"),
    ],
)
def test_a_clear_utterance_gets_the_personas_answer(policy: Policy, persona: str, user: str, expected: str) -> None:
    assert policy.decide(utterance(user, 0.9, persona, previous="neutral")).emotion == expected


def test_one_uncertain_utterance_does_not_flip_the_answer(policy: Policy) -> None:
    # Happy barely ahead of the rest: the previous answer (calm) is kept rather than switching to happy.
    shaky = utterance("happy", 0.3, "support", previous="calm")
    assert policy.decide(shaky).emotion == "calm"
    assert policy.decide(utterance("happy", 0.9, "support", previous="calm")).emotion == "happy"


def test_override_replaces_the_model_choice_and_says_which_rule() -> None:
    policy = Policy.load()  # with the shipped overrides
    decision = policy.decide(utterance("fearful", 0.95, "mirror", previous="neutral"))
    assert (decision.emotion, decision.reason, decision.rule) == (
        "calm",
        "rule_override",
        "confident-fear-gets-calm",
    )
    assert policy.decide(utterance("sad", 0.95, "mirror", previous="neutral")).reason == "model"


def test_probabilities_are_a_distribution(policy: Policy) -> None:
    p = policy.decide(utterance("angry", 0.7)).probabilities
    assert p.shape == (6,) and np.isclose(p.sum(), 1.0) and np.all(p >= 0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[rule]]\nname = "x"\nrespond = "joyful"\n', "rule[0].respond: unknown emotion 'joyful'"),
        ('[[rule]]\nname = "x"\nrespond = "calm"\nwhen_usr = ["sad"]\n', "rule[0].when_usr: unknown key"),
        ('[[rule]]\nrespond = "calm"\n', "rule[0].name: required"),
        ('[[rule]]\nname = "x"\nrespond = "calm"\npersonas = ["pirate"]\n', "unknown persona 'pirate'"),
        ('[[rule]]\nname = "x"\nrespond = "calm"\nmin_confidence = 2\n', "rule[0].min_confidence"),
    ],
)
def test_bad_override_files_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "overrides.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_overrides(path, ["support", "mirror"])


def test_weights_trained_for_other_personas_are_refused(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(DEFAULT_RULES.read_text().replace("[personas.mirror]", "[personas.echo]"))
    with pytest.raises(ValueError, match="make train-policy"):
        Policy.load(DEFAULT_WEIGHTS, rules, None)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("mean", np.full(6, 0.5), "statistics.mean: must sum to 1"),
        ("max", np.array([np.nan, 0, 0, 0, 0, 0]), "statistics.max"),
        ("std", np.zeros(5), "statistics.std: expected 6 scores"),
        ("confidence", 1.5, "statistics.confidence"),
        ("previous_response", "bored", "unknown emotion 'bored'"),
        ("turn_index", -1, "context.turn_index"),
    ],
)
def test_invalid_policy_inputs_name_the_field(field: str, value: object, message: str) -> None:
    fields = dict(utterance("calm", 0.8).__dict__)
    fields[field] = value
    with pytest.raises(ValueError, match=message):
        PolicyInput(**fields)


def test_the_policy_service_never_imports_torch() -> None:
    code = (
        "import sys, emoloop.services.policy.__main__, emoloop.models.policy as p; p.Policy.load();"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
