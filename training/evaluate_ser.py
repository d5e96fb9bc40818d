"""Evaluate an SER checkpoint on a corpus, and the metrics and report that training writes too.

    python -m emoloop.training.evaluate_ser --checkpoint models/ser/ser.pt --data DIR [--out DIR]

Reported as the field reports it (SpeechBrain's IEMOCAP recipe, audeering): unweighted average recall
(UAR, the mean of per-class recalls, which an "always sad" model cannot game), per-class precision,
recall and F1, macro-F1, accuracy, the majority-class baseline, and a confusion matrix as a PNG.
`--noise-snr-db` adds white noise at that SNR to every clip to measure robustness (audeering's ser-tests
allow at most a 0.05 drop in UAR).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import torch

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import FeatureExtractor, FeatureNormalizer
from emoloop.models.ser import read_checkpoint
from emoloop.models.ser_model import SerModel, load_model, pool
from emoloop.models.speaker import SpeakerReference, SpeakerStatistics
from emoloop.training.corpora import (
    ManifestRow,
    add_cache_argument,
    add_corpus_arguments,
    cached_features,
    load_audio,
    load_corpora,
)

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # after choosing the headless backend


class SpeakerSessions:
    """Each clip's own speaker statistics; a clip's session is the clip plus some of its speaker's other clips."""

    def __init__(self, features: list[np.ndarray], speakers: list[str]) -> None:
        self.stats = [SpeakerStatistics.of([f]) for f in features]
        groups: dict[str, list[int]] = defaultdict(list)
        for i, speaker in enumerate(speakers):
            groups[speaker].append(i)
        self.others = [[j for j in groups[speaker] if j != i] for i, speaker in enumerate(speakers)]

    def session(self, i: int, n_others: int, rng: np.random.Generator) -> SpeakerStatistics:
        """Statistics over clip i and `n_others` (fewer if the speaker has fewer) random other clips of its speaker."""
        others = self.others[i]
        stats = self.stats[i]
        for j in rng.choice(len(others), size=min(n_others, len(others)), replace=False):
            stats = stats.merged(self.stats[others[j]])
        return stats


@dataclass
class Part:
    """The clips of one split: raw features, labels and speakers."""

    features: list[np.ndarray]
    labels: np.ndarray
    speakers: list[str]
    sessions: SpeakerSessions = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.sessions = SpeakerSessions(self.features, self.speakers)

    def adapted(self, reference: SpeakerReference | None, session_clips: int, seed: int) -> list[np.ndarray]:
        """Raw features adapted to each clip's speaker over a session of the clip and `session_clips` others.

        `session_clips` 0 judges every clip on its own (a cold start); no reference leaves the features as
        they are (a checkpoint trained without speaker adaptation).
        """
        if reference is None:
            return self.features
        rng = np.random.default_rng(seed)
        return [self.sessions.session(i, session_clips, rng).apply(f, reference) for i, f in enumerate(self.features)]


def predict(
    model: SerModel,
    normalizer: FeatureNormalizer,
    features: list[np.ndarray],
    batch_size: int = 16,
) -> np.ndarray:
    """Utterance posteriors [N, C] for raw feature arrays, batched by similar length with padding."""
    order = np.argsort([len(f) for f in features])
    probabilities = np.zeros((len(features), model.config.n_classes), dtype=np.float32)
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch, lengths = pad_batch([normalizer.apply(features[i]) for i in idx])
            logits, scores = model.frame_outputs(batch.to(device), lengths.to(device))
            probabilities[idx] = torch.softmax(pool(logits, scores, lengths.to(device)), dim=1).cpu().numpy()
    return probabilities


def pad_batch(arrays: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-pad [T_i, F] arrays to [B, max T, F]; returns the batch and the lengths."""
    lengths = torch.tensor([len(a) for a in arrays])
    batch = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1])
    for i, a in enumerate(arrays):
        batch[i, : len(a)] = torch.from_numpy(a)
    return batch, lengths


def compute_metrics(y_true: np.ndarray, y_pred: np.ndarray, majority: int) -> dict[str, Any]:
    """Per-class and overall figures; `majority` is the class a majority baseline always answers.

    Classes absent from y_true get recall and F1 None and are left out of UAR and macro-F1; a class never
    predicted gets precision None.
    """
    n = len(EMOTIONS)
    confusion = np.zeros((n, n), dtype=int)
    np.add.at(confusion, (y_true, y_pred), 1)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    per_class = {}
    for i, name in enumerate(EMOTIONS):
        tp = confusion[i, i]
        precision = tp / predicted[i] if predicted[i] else None
        recall = tp / support[i] if support[i] else None
        f1 = None if recall is None else 2 * tp / (support[i] + predicted[i])
        per_class[name] = {
            "precision": None if precision is None else float(precision),
            "recall": None if recall is None else float(recall),
            "f1": None if f1 is None else float(f1),
            "support": int(support[i]),
        }
    present = [name for i, name in enumerate(EMOTIONS) if support[i]]
    return {
        "n": len(y_true),
        "accuracy": float(np.mean(y_true == y_pred)),
        "uar": float(np.mean([per_class[e]["recall"] for e in present])),
        "macro_f1": float(np.mean([per_class[e]["f1"] for e in present])),
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "majority_baseline": {
            "emotion": EMOTIONS[majority],
            "accuracy": float(np.mean(y_true == majority)),
            "uar": 1.0 / len(present),
        },
    }


def write_report(metrics: dict[str, Any], out_dir: Path, title: str) -> None:
    """report.json, report.md and confusion.png in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps({"title": title, **metrics}, indent=2) + "\n")
    base = metrics["majority_baseline"]
    lines = [
        f"# {title}",
        "",
        f"{metrics['n']} clips. UAR **{metrics['uar']:.3f}**, macro-F1 {metrics['macro_f1']:.3f}, "
        f"accuracy {metrics['accuracy']:.3f}.",
        f"Majority-class baseline (always {base['emotion']}): accuracy {base['accuracy']:.3f}, UAR {base['uar']:.3f}.",
        "",
        "| emotion | precision | recall | F1 | support |",
        "|---|---|---|---|---|",
    ]
    for name, m in metrics["per_class"].items():
        figures = ["—" if m[k] is None else f"{m[k]:.3f}" for k in ("precision", "recall", "f1")]
        lines.append(f"| {name} | {' | '.join(figures)} | {m['support']} |")
    lines += ["", "Confusion matrix (rows: true, columns: predicted): `confusion.png`.", ""]
    (out_dir / "report.md").write_text("\n".join(lines))
    plot_confusion(np.asarray(metrics["confusion"]), out_dir / "confusion.png", title)


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    """Row-normalised confusion matrix with the counts written in the cells."""
    rates = confusion / np.maximum(confusion.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(EMOTIONS)), EMOTIONS, rotation=45, ha="right")
    ax.set_yticks(range(len(EMOTIONS)), EMOTIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, label="share of true class")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def noisy_features(rows: list[ManifestRow], extractor: FeatureExtractor, snr_db: float, seed: int) -> list[np.ndarray]:
    """Features of every clip with white noise added at `snr_db` (not cached: the noise is the point)."""
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        audio = load_audio(Path(row.path), extractor.config.sample_rate_hz)
        noise = rng.standard_normal(audio.size)
        scale = np.sqrt(np.mean(audio**2) / (10 ** (snr_db / 10)) / max(np.mean(noise**2), 1e-12))
        out.append(extractor.extract(np.clip(audio + scale * noise, -1, 1).astype(np.float32)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.training.evaluate_ser",
        description="Evaluate an SER checkpoint on a corpus (e.g. one it was not trained on).",
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="state dict with its .json sidecar")
    add_corpus_arguments(parser)
    parser.add_argument("--out", type=Path, help="report directory (default: eval-<data name> beside the checkpoint)")
    add_cache_argument(parser)
    parser.add_argument("--noise-snr-db", type=float, help="add white noise at this SNR (robustness check)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--seed", type=int, default=0, help="noise and session seed")
    parser.add_argument(
        "--session-clips",
        type=int,
        default=8,
        help="speaker adaptation: judge each clip after this many random other clips of its speaker, as in a "
        "session of that many earlier turns (0: each clip alone, as `emoloop ser FILE` does; default 8)",
    )
    args = parser.parse_args(argv)

    checkpoint = read_checkpoint(args.checkpoint)
    model = load_model(checkpoint, args.device)
    scan = load_corpora(args.data, args.corpus)
    print(scan.summary())
    if args.noise_snr_db is None:
        features = cached_features(scan.rows, checkpoint.feature_config, args.cache)
    else:
        features = noisy_features(scan.rows, FeatureExtractor(checkpoint.feature_config), args.noise_snr_db, args.seed)
    y_true = np.array([EMOTIONS.index(r.emotion) for r in scan.rows])
    part = Part(features, y_true, [r.speaker for r in scan.rows])
    adapted = part.adapted(checkpoint.speaker, args.session_clips, args.seed)
    probabilities = predict(model, checkpoint.normalizer, adapted)
    majority = checkpoint.sidecar["data"].get("majority_emotion", EMOTIONS[np.bincount(y_true).argmax()])
    metrics = compute_metrics(y_true, probabilities.argmax(axis=1), EMOTIONS.index(majority))
    noise = "" if args.noise_snr_db is None else f" with white noise at {args.noise_snr_db:g} dB SNR"
    session = "" if checkpoint.speaker is None else f", sessions of {args.session_clips} + 1 clips"
    data_name = "+".join(root.name for root in args.data)
    title = f"{args.checkpoint.name} on {data_name}{noise}{session}"
    out = args.out or args.checkpoint.parent / f"eval-{data_name}"
    write_report(metrics, out, title)
    print(f"UAR {metrics['uar']:.3f}, accuracy {metrics['accuracy']:.3f}; report in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
