"""Synthetic utterances for training and testing the policy MLP.

Each sample imitates what the SER service reports for one utterance: per-frame posteriors drawn around a
true emotion with a random clarity (clear, mixed or near-uniform), summarised as mean, max and spread,
plus a random conversation context. The label is the rule table's answer, so the MLP learns the table,
hysteresis included.
"""

from __future__ import annotations

import numpy as np

from emoloop.models.emotions import EMOTIONS
from emoloop.models.policy import PolicyInput, RuleTable


def sample_input(rng: np.random.Generator, personas: list[str]) -> PolicyInput:
    """One random utterance and context."""
    n = len(EMOTIONS)
    true = rng.integers(n)
    clarity = rng.choice([rng.uniform(0.0, 1.0), rng.uniform(1.0, 6.0), rng.uniform(6.0, 20.0)])
    alpha = np.full(n, 0.5)
    alpha[true] += clarity
    if rng.random() < 0.3:  # a second emotion competes (mixed or shifting utterances)
        alpha[rng.integers(n)] += rng.uniform(0.0, clarity)
    frames = rng.dirichlet(alpha, size=int(rng.integers(20, 300)))
    mean = frames.mean(axis=0)
    mean = mean / mean.sum()
    first_turn = rng.random() < 0.25
    return PolicyInput(
        mean=mean,
        max=frames.max(axis=0),
        std=frames.std(axis=0),
        confidence=float(mean.max()),
        previous_response=None if first_turn else EMOTIONS[rng.integers(n)],
        turn_index=0 if first_turn else int(rng.integers(1, 40)),
        persona=personas[rng.integers(len(personas))],
    )


def make_dataset(table: RuleTable, n: int, seed: int) -> tuple[list[PolicyInput], np.ndarray]:
    """n inputs and the table's answer (an emotion index) for each."""
    rng = np.random.default_rng(seed)
    personas = list(table.personas)
    inputs = [sample_input(rng, personas) for _ in range(n)]
    labels = np.array([EMOTIONS.index(table.respond(x)) for x in inputs])
    return inputs, labels
