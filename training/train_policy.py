"""Train the policy MLP to imitate the rule table (`make train-policy`).

Plain numpy (softmax cross-entropy, Adam, mini-batches): the model is tiny, and the policy stays free of
torch at run time and at training time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from tqdm import tqdm

from emoloop.models.emotions import EMOTIONS
from emoloop.models.policy import DEFAULT_RULES, DEFAULT_WEIGHTS, Mlp, RuleTable, featurize, save_weights
from emoloop.training.policy_data import make_dataset


def train(x: np.ndarray, y: np.ndarray, hidden: int, epochs: int, seed: int, lr: float = 3e-3, batch: int = 256) -> Mlp:
    """Fit a 2-layer MLP with Adam; returns the trained weights."""
    rng = np.random.default_rng(seed)
    n_in, n_out = x.shape[1], len(EMOTIONS)
    params = {
        "w1": rng.normal(0, np.sqrt(2 / n_in), (n_in, hidden)),
        "b1": np.zeros(hidden),
        "w2": rng.normal(0, np.sqrt(1 / hidden), (hidden, n_out)),
        "b2": np.zeros(n_out),
    }
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v = {k: np.zeros_like(p) for k, p in params.items()}
    onehot = np.eye(n_out)[y]
    step = 0
    for _ in tqdm(range(epochs), desc="train policy", unit="epoch"):
        for idx in np.array_split(rng.permutation(len(x)), max(1, len(x) // batch)):
            xb, tb = x[idx], onehot[idx]
            pre = xb @ params["w1"] + params["b1"]
            hid = np.maximum(pre, 0)
            z = hid @ params["w2"] + params["b2"]
            p = np.exp(z - z.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            dz = (p - tb) / len(xb)
            dhid = dz @ params["w2"].T * (pre > 0)
            grads = {"w2": hid.T @ dz, "b2": dz.sum(0), "w1": xb.T @ dhid, "b1": dhid.sum(0)}
            step += 1
            for k in params:
                m[k] = 0.9 * m[k] + 0.1 * grads[k]
                v[k] = 0.999 * v[k] + 0.001 * grads[k] ** 2
                mhat, vhat = m[k] / (1 - 0.9**step), v[k] / (1 - 0.999**step)
                params[k] -= lr * mhat / (np.sqrt(vhat) + 1e-8)
    return Mlp(**{k: p.astype(np.float32) for k, p in params.items()})


def agreement(mlp: Mlp, x: np.ndarray, y: np.ndarray) -> float:
    """Share of inputs on which the MLP's top choice is the table's answer."""
    return float(np.mean(np.argmax(mlp.logits(x), axis=1) == y))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.training.train_policy",
        description="Train the policy MLP on synthetic utterances labelled by the rule table.",
    )
    parser.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="rule table (TOML)")
    parser.add_argument("--out", type=Path, default=DEFAULT_WEIGHTS, help="weights file to write (.npz)")
    parser.add_argument("--samples", type=int, default=100000, help="training utterances")
    parser.add_argument("--hidden", type=int, default=64, help="hidden units")
    parser.add_argument("--epochs", type=int, default=150)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    table = RuleTable.load(args.rules)
    personas = list(table.personas)
    train_in, train_y = make_dataset(table, args.samples, seed=args.seed)
    test_in, test_y = make_dataset(table, 5000, seed=args.seed + 1000)
    x_train = np.stack([featurize(i, personas) for i in train_in])
    x_test = np.stack([featurize(i, personas) for i in test_in])
    mlp = train(x_train, train_y, args.hidden, args.epochs, args.seed)
    held_out = agreement(mlp, x_test, test_y)
    print(f"agreement with the rule table: train {agreement(mlp, x_train, train_y):.4f}, held-out {held_out:.4f}")
    for name in personas:
        mask = np.array([i.persona == name for i in test_in])
        print(f"  {name:<10} held-out {agreement(mlp, x_test[mask], test_y[mask]):.4f}")
    settings = {k: str(v) for k, v in vars(args).items()}
    save_weights(args.out, mlp, personas, {**settings, "held_out_agreement": round(held_out, 4)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
