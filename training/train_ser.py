"""Train the SER model on a corpus with speaker-independent splits.

    python -m emoloop.training.train_ser --data DIR --out models/ser/

Steps: scan the corpus (corpora.py) -> split by speaker (test and validation speakers are never trained
on; the seed is saved) -> features with FeatureExtractor (cached) -> normaliser fitted on the training
clips only -> train with AdamW and early stopping on validation UAR -> evaluate the best weights on the
test speakers. Written to --out: ser.pt + ser.json (the checkpoint and its sidecar), report.md,
report.json, confusion.png and manifest.csv (every clip with its split).

With --average-epochs K the model is instead the mean of the weights at the end of the last K epochs
(stochastic weight averaging, Izmailov et al. 2018; SWAD, Cha et al. 2021, found such flat averages carry
better to unseen domains, which the held-out voices are); the best single epoch is then also written, to
--out/best-epoch/, with its own report, so the two can be compared.

With --init CHECKPOINT training starts from that checkpoint instead of from random weights: its weights, and
also its architecture, feature layout, normaliser and speaker reference, so that the inputs the model learnt
on keep their meaning. This is how a model goes on learning from fresh data when the data it was trained on
is gone (each run of the generator draws new takes), or is fine-tuned on a real corpus.

The loss is class-balanced cross-entropy on the pooled utterance logits plus, weighted by
--frame-loss-weight, on every valid frame's logits: the frame posteriors are what a stream shows
between utterances and what the policy's statistics are made of, so they are trained to be right too.
Training clips are randomly cropped to --max-frames, which bounds memory and acts as augmentation, and
each crop is heard as if another voice had said it (`change_voice`: F0 shifted up to ±3 semitones, mel
axis stretched up to ±8 %). Batches
hold clips of similar length, all cropped to the batch's shortest (at most --max-frames): on CPU the packed
BiLSTM runs about 6x faster on equal lengths than on ragged ones (measured, 2 cores), and the crop loses little.
"""

from __future__ import annotations

import argparse
import copy
import pickle
import random
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import F0_COLUMN, F0_TRACKERS, FeatureConfig, FeatureNormalizer, voiced_frames
from emoloop.models.ser import SerConfig, read_checkpoint
from emoloop.models.ser_model import (
    SerModel,
    count_parameters,
    frame_mask,
    load_model,
    pool,
    save_checkpoint,
    select_device,
)
from emoloop.models.speaker import SpeakerReference
from emoloop.training.corpora import (
    ManifestRow,
    add_cache_argument,
    add_corpus_arguments,
    cached_features,
    load_corpora,
    write_manifest,
)
from emoloop.training.evaluate_ser import Part, compute_metrics, pad_batch, predict, write_report

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings; saved in the sidecar."""

    epochs: int = 40
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-2
    patience: int = 6
    max_frames: int = 400
    frame_loss_weight: float = 0.3
    time_limit_min: float = 0.0  # stop starting new epochs after this many minutes (0: no limit)
    voice_pitch_semitones: float = 3.0  # random voice change per training crop: F0 shift up to ± this (0: off)
    voice_warp: float = 0.08  # ... and mel-axis stretch up to ± this fraction (vocal tract length; 0: off)
    speaker_prior_frames: float = 300.0  # speaker adaptation's prior weight in frames (see models/speaker.py; 0: off)
    speaker_max_clips: int = 16  # a training session: the clip plus 0, 1, 2, 4, ... up to this many others
    session_clips: int = 8  # validation and test sessions: the clip plus this many of its speaker's others
    cosine_lr: bool = True  # anneal the learning rate to 0 over --epochs
    average_epochs: int = 0  # the model is the mean weights of the last this many epochs (0: the best epoch)
    mel_masks: int = 2  # SpecAugment: this many random bands of mel bins hidden per training crop (0: off)
    mel_mask_bins: int = 10  # ... each up to this many of the 80 bins wide
    time_masks: int = 2  # ... and this many random stretches of frames
    time_mask_frames: int = 20  # ... each up to this many frames (10 ms) long
    grad_clip: float = 5.0
    seed: int = 13
    val_fraction: float = 0.15
    test_fraction: float = 0.15


def split_speakers(
    speakers: list[str],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    test_speakers: Sequence[str] = (),
    val_speakers: Sequence[str] = (),
) -> dict[str, str]:
    """Speaker -> train/val/test, at least one speaker in each; the same seed gives the same split.

    `test_speakers`, when given, are the test set (chosen by whoever made the data, e.g. held-out voices);
    validation speakers are then drawn from the others, `val_fraction` of all speakers. `val_speakers`, when
    given, are the validation set instead of a draw: a model fine-tuned on data with new voices keeps the
    validation voices it was never trained on, and trains on none of them.
    """
    unique = sorted(set(speakers))
    if len(unique) < 3:
        raise ValueError(f"need at least 3 speakers for train/val/test splits by speaker, found {len(unique)}")
    for kind, named in (("test", test_speakers), ("validation", val_speakers)):
        unknown = sorted(set(named) - set(unique))
        if unknown:
            raise ValueError(f"{kind} speaker(s) not in the data: {', '.join(unknown)}")
    both = sorted(set(test_speakers) & set(val_speakers))
    if both:
        raise ValueError(f"speaker(s) named for both test and validation: {', '.join(both)}")
    fixed = sorted(set(test_speakers))
    rest = [s for s in unique if s not in fixed]
    random.Random(seed).shuffle(rest)
    n_test = len(fixed) if fixed else max(1, round(test_fraction * len(unique)))
    named_val = sorted(set(val_speakers))
    if named_val:
        rest = named_val + [s for s in rest if s not in named_val]
    n_val = len(named_val) if named_val else max(1, round(val_fraction * len(unique)))
    if n_test + n_val >= len(unique):
        raise ValueError(f"{len(unique)} speakers leave none for training with these fractions")
    order = fixed + rest if fixed else rest
    return {s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(order)}


def speaker_list(value: str) -> list[str]:
    """A comma-separated list of speakers, as --test-speakers and --val-speakers take it."""
    return [s for s in value.split(",") if s]


def class_weights(labels: np.ndarray) -> torch.Tensor:
    """Inverse-frequency weights (mean 1 over present classes), so rare emotions count as much as common."""
    counts = np.bincount(labels, minlength=len(EMOTIONS)).astype(np.float64)
    weights = np.where(counts > 0, counts.sum() / np.maximum(counts, 1) / np.count_nonzero(counts), 0.0)
    return torch.tensor(weights, dtype=torch.float32)


def random_crop(features: np.ndarray, max_frames: int, rng: np.random.Generator) -> np.ndarray:
    if len(features) <= max_frames:
        return features
    start = int(rng.integers(0, len(features) - max_frames + 1))
    return features[start : start + max_frames]


def length_batches(lengths: list[int], batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random batches of similar-length clips: shuffle, sort by length within pools of 16 batches, shuffle."""
    order = rng.permutation(len(lengths))
    pool_size = 16 * batch_size
    batches = []
    for start in range(0, len(order), pool_size):
        chunk = order[start : start + pool_size]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")]
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def change_voice(features: np.ndarray, semitones: float, warp: float) -> np.ndarray:
    """Raw feature rows as if another voice had spoken: voiced F0 shifted, mel bands stretched by `warp` (VTLP-like).

    A model that has heard few voices reads a low, dark voice as sad or calm and a high one as fearful: pitch
    level and timbre are mostly the speaker's, not the emotion's. Random voice changes make it rely on what is
    relative to the voice (pitch range, tilt, breath, tremor, rate) more than on its absolute pitch and timbre.
    """
    out = features.copy()
    if semitones:
        out[voiced_frames(out), F0_COLUMN] += semitones * np.log(2) / 12
    if warp != 1.0:
        source = np.clip(np.arange(F0_COLUMN) / warp, 0, F0_COLUMN - 1)
        low = np.floor(source).astype(int)
        high, weight = np.minimum(low + 1, F0_COLUMN - 1), (source - low).astype(np.float32)
        out[:, :F0_COLUMN] = out[:, low] * (1 - weight) + out[:, high] * weight
    return out


def spec_augment(rows: np.ndarray, config: TrainConfig, rng: np.random.Generator) -> np.ndarray:
    """Normalised rows with random mel bands and time stretches set to 0, the training mean (SpecAugment).

    Each engine colours the spectrum its own way; hiding bands makes the model read emotion from several
    places (pitch, energy, the rest of the spectrum) rather than from one engine's timbre. F0 and energy are
    never hidden: they carry most of what the acting rules change.
    """
    out = rows.copy()
    for _ in range(config.mel_masks):
        width = int(rng.integers(0, config.mel_mask_bins + 1))
        start = int(rng.integers(0, F0_COLUMN - width + 1))
        out[:, start : start + width] = 0.0
    for _ in range(config.time_masks):
        width = int(rng.integers(0, min(config.time_mask_frames, len(out) // 4) + 1))
        start = int(rng.integers(0, len(out) - width + 1))
        out[start : start + width] = 0.0
    return out


def session_size(rng: np.random.Generator, max_clips: int) -> int:
    """How many other clips of the speaker a training session holds: 0 or a power of two up to max_clips."""
    sizes = [0] + [2**i for i in range(max_clips.bit_length()) if 2**i <= max_clips]
    return int(rng.choice(sizes))


def train_epoch(
    model: SerModel,
    optimizer: torch.optim.Optimizer,
    train: Part,
    normalizer: FeatureNormalizer,
    reference: SpeakerReference | None,
    weights: torch.Tensor,
    config: TrainConfig,
    rng: np.random.Generator,
    device: torch.device,
) -> float:
    """One pass over the raw training clips in random order.

    Each crop is voice-changed, then (with a reference) adapted to its speaker's statistics over a random
    session of the clip and some of the speaker's other clips, voice-changed alike, then normalised and masked.
    """
    model.train()
    utterance_loss = nn.CrossEntropyLoss(weight=weights.to(device))
    frame_loss = nn.CrossEntropyLoss(weight=weights.to(device), reduction="none")
    batches = length_batches([len(f) for f in train.features], config.batch_size, rng)
    total = 0.0
    progress = tqdm(batches, desc="train", unit="batch", leave=False)
    for idx in progress:
        crop = min(config.max_frames, min(len(train.features[i]) for i in idx))
        rows = []
        for i in idx:
            pitch, warp = config.voice_pitch_semitones, config.voice_warp
            semitones = rng.uniform(-pitch, pitch) if pitch else 0.0
            stretch = rng.uniform(1 - warp, 1 + warp) if warp else 1.0
            changed = change_voice(random_crop(train.features[i], crop, rng), semitones, stretch)
            if reference is not None:
                stats = train.sessions.session(i, session_size(rng, config.speaker_max_clips), rng)
                stats = stats.with_mean(change_voice(stats.mean()[None], semitones, stretch)[0])
                changed = stats.apply(changed, reference)
            rows.append(spec_augment(normalizer.apply(changed), config, rng))
        batch, lengths = pad_batch(rows)
        batch, lengths, target = batch.to(device), lengths.to(device), torch.from_numpy(train.labels[idx]).to(device)
        logits, scores = model.frame_outputs(batch, lengths)
        loss = utterance_loss(pool(logits, scores, lengths), target)
        if config.frame_loss_weight > 0:
            mask = frame_mask(lengths, batch.shape[1])
            per_frame = frame_loss(logits.transpose(1, 2), target[:, None].expand(-1, batch.shape[1]))
            loss = loss + config.frame_loss_weight * (per_frame * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        total += loss.item() * len(idx)
        progress.set_postfix(loss=f"{loss.item():.3f}")
    return total / len(train.features)


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of state dicts of one architecture (the model has no batch statistics to redo)."""
    return {
        name: torch.stack([s[name].float() for s in states]).mean(0).to(states[0][name].dtype) for name in states[0]
    }


@dataclass
class Fitted:
    """What training produced: the model to keep, the best single epoch when that is not it, and the history."""

    model: SerModel
    best_epoch: SerModel | None
    history: list[dict[str, float]]


def fit(
    model: SerModel,
    normalizer: FeatureNormalizer,
    reference: SpeakerReference | None,
    train: Part,
    val: Part,
    config: TrainConfig,
    device: torch.device,
) -> Fitted:
    """Train with early stopping on validation UAR; keeps the best epoch, or the average of the last ones."""
    rng = np.random.default_rng(config.seed)
    weights = class_weights(train.labels)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs) if config.cosine_lr else None
    val_features = val.adapted(reference, config.session_clips, config.seed)

    def val_uar() -> float:
        predicted = predict(model, normalizer, val_features).argmax(axis=1)
        return compute_metrics(val.labels, predicted, majority=0)["uar"]

    best_uar, best_state, since_best, history = -1.0, None, 0, []
    recent: deque[dict[str, torch.Tensor]] = deque(maxlen=max(config.average_epochs, 1))
    start = time.monotonic()
    for epoch in range(1, config.epochs + 1):
        loss = train_epoch(model, optimizer, train, normalizer, reference, weights, config, rng, device)
        if schedule is not None:
            schedule.step()
        uar = val_uar()
        history.append({"epoch": epoch, "train_loss": loss, "val_uar": uar})
        if config.average_epochs:
            recent.append(copy.deepcopy(model.state_dict()))
        improved = uar > best_uar
        if improved:
            best_uar, best_state, since_best = uar, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
        print(f"epoch {epoch}: train loss {loss:.4f}, val UAR {uar:.3f}{' (best)' if improved else ''}")
        if since_best >= config.patience:
            print(f"early stop: no better val UAR for {config.patience} epochs")
            break
        minutes = (time.monotonic() - start) / 60
        if config.time_limit_min and minutes * (epoch + 1) / epoch > config.time_limit_min:
            print(f"time limit: another epoch would end after {config.time_limit_min:g} minutes; stopping")
            break
    if not config.average_epochs:
        model.load_state_dict(best_state)
        return Fitted(model, None, history)
    best = copy.deepcopy(model)
    best.load_state_dict(best_state)
    model.load_state_dict(average_states(list(recent)))
    uar = val_uar()
    history.append({"averaged_epochs": len(recent), "val_uar": uar})
    print(f"mean of the last {len(recent)} epochs' weights: val UAR {uar:.3f} (best epoch {best_uar:.3f})")
    return Fitted(model, best, history)


def describe(rows: list[ManifestRow], split: dict[str, str], dropped: Counter[str]) -> dict[str, object]:
    """The data description stored in the sidecar: corpora, speakers and class counts per split."""
    out: dict[str, object] = {"corpora": sorted({r.corpus for r in rows}), "dropped": dict(dropped)}
    for name in SPLITS:
        part = [r for r in rows if split[r.speaker] == name]
        counts = Counter(r.emotion for r in part)
        out[name] = {
            "speakers": sorted({r.speaker for r in part}),
            "clips": len(part),
            "hours": round(sum(r.duration_s for r in part) / 3600, 3),
            "emotions": {e: counts[e] for e in EMOTIONS},
        }
    train_counts = out["train"]["emotions"]
    out["majority_emotion"] = max(EMOTIONS, key=lambda e: train_counts[e])
    return out


def main(argv: list[str] | None = None) -> int:
    defaults = TrainConfig()
    model_defaults = SerConfig()
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.training.train_ser",
        description="Train the CNN-BiLSTM emotion recogniser with speaker-independent splits.",
    )
    add_corpus_arguments(parser)
    parser.add_argument("--out", type=Path, default=Path("models/ser"), help="output directory")
    add_cache_argument(parser)
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument(
        "--init",
        type=Path,
        help="start from this checkpoint (.pt): its weights, architecture, features, normaliser and speaker "
        "reference; the model and feature options below are then ignored",
    )
    parser.add_argument(
        "--test-speakers",
        type=speaker_list,
        default=[],
        help="comma-separated speakers to hold out as the test set (default: drawn by --test-fraction)",
    )
    parser.add_argument(
        "--val-speakers",
        type=speaker_list,
        default=[],
        help="comma-separated validation speakers (default: drawn by --val-fraction); with --init, name the "
        "checkpoint's own (its ser.json data.val.speakers) so that new voices in the data do not move them",
    )
    for name, value in asdict(defaults).items():
        flag, help_text = f"--{name.replace('_', '-')}", f"default {value}"
        if isinstance(value, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=value, help=help_text)
        else:
            parser.add_argument(flag, type=type(value), default=value, help=help_text)
    channels = ",".join(map(str, model_defaults.conv_channels))
    parser.add_argument("--conv-channels", default=channels, help=f"comma-separated conv widths, default {channels}")
    parser.add_argument("--lstm-hidden", type=int, default=model_defaults.lstm_hidden, help="units per direction")
    parser.add_argument("--lstm-layers", type=int, default=model_defaults.lstm_layers)
    parser.add_argument("--dropout", type=float, default=model_defaults.dropout)
    parser.add_argument(
        "--f0-tracker",
        choices=F0_TRACKERS,
        default=FeatureConfig().f0_tracker,
        help="F0 column of the features (stored with the checkpoint), default %(default)s",
    )
    args = parser.parse_args(argv)

    config = TrainConfig(**{name: getattr(args, name) for name in asdict(defaults)})
    model_config = SerConfig(
        conv_channels=tuple(int(c) for c in args.conv_channels.split(",")),
        lstm_hidden=args.lstm_hidden,
        lstm_layers=args.lstm_layers,
        dropout=args.dropout,
    )
    torch.manual_seed(config.seed)
    torch.set_num_threads(args.threads)
    device = select_device(args.device)
    try:  # before the corpus scan, so that a wrong checkpoint fails at once
        start = read_checkpoint(args.init) if args.init else None
        initial = load_model(start, str(device)) if start else None
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as error:
        parser.error(f"--init: {str(error).splitlines()[0]}")

    scan = load_corpora(args.data, args.corpus)
    print(scan.summary())
    rows = scan.rows
    speakers = [r.speaker for r in rows]
    split = split_speakers(
        speakers, config.seed, config.val_fraction, config.test_fraction, args.test_speakers, args.val_speakers
    )
    feature_config = start.feature_config if start else FeatureConfig(f0_tracker=args.f0_tracker)
    features = cached_features(rows, feature_config, args.cache)
    labels = np.array([EMOTIONS.index(r.emotion) for r in rows])
    parts = {}
    for name in SPLITS:
        index = [i for i, r in enumerate(rows) if split[r.speaker] == name]
        parts[name] = Part([features[i] for i in index], labels[index], [rows[i].speaker for i in index])
    if start:
        normalizer, reference = start.normalizer, start.speaker
        model = initial
        print(f"starting from {args.init}")
    else:
        normalizer = FeatureNormalizer.fit(parts["train"].features)
        reference = None
        if config.speaker_prior_frames > 0:
            reference = SpeakerReference.fit(parts["train"].features, config.speaker_prior_frames)
        model = SerModel(model_config).to(device)
    print(f"SerModel: {count_parameters(model):,} parameters on {device}")
    fitted = fit(model, normalizer, reference, parts["train"], parts["val"], config, device)

    data = describe(rows, split, scan.dropped)
    training = {
        **asdict(config),
        "test_speakers": args.test_speakers,
        "val_speakers": args.val_speakers,
        "init": None if start is None else {"path": str(args.init), "onnx_sha256": start.sidecar["onnx_sha256"]},
        "device": str(device),
        "threads": args.threads,
        "history": fitted.history,
    }
    written = [(fitted.model, args.out)]
    if fitted.best_epoch is not None:
        written.append((fitted.best_epoch, args.out / "best-epoch"))
    for trained, out in written:
        metrics = held_out_metrics(trained, normalizer, reference, parts["test"], data, config)
        out.mkdir(parents=True, exist_ok=True)
        save_checkpoint(out / "ser.pt", trained, normalizer, feature_config, training, data, metrics, reference)
        write_held_out_report(metrics, out, data, config, reference is not None)
        print(f"test UAR {metrics['uar']:.3f} (majority baseline {metrics['majority_baseline']['uar']:.3f}); {out}")
    write_manifest(rows, args.out / "manifest.csv", {"split": [split[r.speaker] for r in rows]})
    return 0


def held_out_metrics(
    model: SerModel,
    normalizer: FeatureNormalizer,
    reference: SpeakerReference | None,
    test: Part,
    data: dict[str, object],
    config: TrainConfig,
) -> dict[str, object]:
    """Metrics on the test speakers, each clip judged in a session of its speaker's others and (adapted) alone."""
    majority = EMOTIONS.index(str(data["majority_emotion"]))
    predicted = predict(model, normalizer, test.adapted(reference, config.session_clips, config.seed)).argmax(axis=1)
    metrics = compute_metrics(test.labels, predicted, majority)
    if reference is not None:
        cold = predict(model, normalizer, test.adapted(reference, 0, config.seed)).argmax(axis=1)
        metrics["cold_start"] = compute_metrics(test.labels, cold, majority)
    return metrics


def write_held_out_report(
    metrics: dict[str, object], out: Path, data: dict[str, object], config: TrainConfig, adapted: bool
) -> None:
    """report.md/.json and confusion.png for the test speakers, with the cold-start line when adapted."""
    sessions = f"; each clip judged after {config.session_clips} others of its speaker" if adapted else ""
    write_report(metrics, out, f"SER on test speakers ({', '.join(data['corpora'])}, seed {config.seed}{sessions})")
    if adapted:
        cold = metrics["cold_start"]
        with open(out / "report.md", "a") as report:
            report.write(
                f"Cold start (each clip judged alone, as `emoloop ser FILE` does): macro-F1 {cold['macro_f1']:.3f}, "
                f"accuracy {cold['accuracy']:.3f}, UAR {cold['uar']:.3f}.\n"
            )


if __name__ == "__main__":
    raise SystemExit(main())
