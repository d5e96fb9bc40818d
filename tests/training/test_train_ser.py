"""Training and evaluation: speaker-independent splits, honest metrics, and a 2-epoch smoke run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import FeatureExtractor
from emoloop.models.ser import SerRecognizer, read_checkpoint
from emoloop.models.speaker import SpeakerReference, SpeakerStatistics
from emoloop.training import evaluate_ser, train_ser
from emoloop.training.corpora import load_audio
from emoloop.training.evaluate_ser import Part, compute_metrics
from emoloop.training.train_ser import class_weights, session_size, split_speakers
from tests.training.synthetic import write_clip

TINY_MODEL = ["--conv-channels", "8", "--lstm-hidden", "8", "--lstm-layers", "1"]


def crema_like_corpus(root: Path, speakers: int = 6, per_class: int = 2) -> Path:
    codes = {"neutral": "NEU", "happy": "HAP", "sad": "SAD", "angry": "ANG", "fearful": "FEA"}
    for s in range(speakers):
        for emotion, code in codes.items():
            for k, sentence in enumerate(("DFA", "IEO", "TIE")[:per_class]):
                write_clip(root / f"{1001 + s}_{sentence}_{code}_XX.wav", emotion, seed=100 * s + 10 * k)
    return root


def test_speaker_split_is_disjoint_complete_and_reproducible() -> None:
    speakers = [f"s{i}" for i in range(20)]

    split = split_speakers(speakers, seed=5, val_fraction=0.15, test_fraction=0.15)

    assert set(split) == set(speakers)
    assert sorted(split.values()).count("test") == 3 and sorted(split.values()).count("val") == 3
    assert split == split_speakers(list(reversed(speakers)), seed=5, val_fraction=0.15, test_fraction=0.15)
    assert split != split_speakers(speakers, seed=6, val_fraction=0.15, test_fraction=0.15)
    with pytest.raises(ValueError, match="at least 3 speakers"):
        split_speakers(["a", "b", "a"], seed=0, val_fraction=0.2, test_fraction=0.2)


def test_named_test_speakers_are_the_whole_test_set_and_never_trained_on() -> None:
    speakers = [f"s{i}" for i in range(20)]

    split = split_speakers(speakers, seed=5, val_fraction=0.15, test_fraction=0.15, test_speakers=["s3", "s17"])

    assert {s for s, part in split.items() if part == "test"} == {"s3", "s17"}
    assert sorted(split.values()).count("val") == 3
    with pytest.raises(ValueError, match="not in the data: nobody"):
        split_speakers(speakers, seed=5, val_fraction=0.15, test_fraction=0.15, test_speakers=["nobody"])


def test_named_validation_speakers_stay_validation_whatever_other_voices_join_the_data() -> None:
    speakers = [f"s{i}" for i in range(20)]

    split = split_speakers(speakers, 5, 0.15, 0.15, test_speakers=["s3"], val_speakers=["s7", "s11"])
    grown = split_speakers([*speakers, "new1", "new2"], 5, 0.15, 0.15, test_speakers=["s3"], val_speakers=["s7", "s11"])

    for parts in (split, grown):
        assert {s for s, part in parts.items() if part == "val"} == {"s7", "s11"}
        assert {s for s, part in parts.items() if part == "test"} == {"s3"}
    assert grown["new1"] == grown["new2"] == "train"
    with pytest.raises(ValueError, match="validation speaker"):
        split_speakers(speakers, 5, 0.15, 0.15, val_speakers=["nobody"])
    with pytest.raises(ValueError, match="both test and validation: s3"):
        split_speakers(speakers, 5, 0.15, 0.15, test_speakers=["s3"], val_speakers=["s3"])


def test_length_batches_cover_every_clip_once_in_batches_of_similar_length() -> None:
    lengths = list(np.random.default_rng(0).integers(80, 400, size=1000))

    batches = train_ser.length_batches(lengths, batch_size=16, rng=np.random.default_rng(1))

    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    spread = np.median([np.ptp([lengths[i] for i in batch]) for batch in batches])
    assert spread < 0.1 * np.ptp(lengths)  # a random batch would span nearly the whole range


def test_class_weights_make_every_present_class_count_the_same() -> None:
    labels = np.array([0, 0, 0, 2])
    weights = class_weights(labels).numpy()
    counts = np.bincount(labels, minlength=len(EMOTIONS))
    assert weights[0] * counts[0] == pytest.approx(weights[2] * counts[2])
    assert weights[[1, 3, 4, 5]].tolist() == [0, 0, 0, 0]


def test_metrics_report_uar_per_class_figures_and_the_majority_baseline() -> None:
    # 4 neutral (3 right), 2 sad (both called neutral): accuracy 3/6, UAR (0.75 + 0) / 2.
    y_true = np.array([0, 0, 0, 0, 3, 3])
    y_pred = np.array([0, 0, 0, 4, 0, 0])

    m = compute_metrics(y_true, y_pred, majority=0)

    assert m["accuracy"] == pytest.approx(0.5) and m["uar"] == pytest.approx(0.375)
    assert m["per_class"]["neutral"] == {"precision": 0.6, "recall": 0.75, "f1": pytest.approx(2 / 3), "support": 4}
    assert m["per_class"]["sad"] == {"precision": None, "recall": 0.0, "f1": 0.0, "support": 2}  # never predicted
    assert m["per_class"]["angry"] == {"precision": 0.0, "recall": None, "f1": None, "support": 0}  # absent: not in UAR
    assert m["majority_baseline"] == {"emotion": "neutral", "accuracy": pytest.approx(4 / 6), "uar": 0.5}
    assert m["confusion"][3][0] == 2


def test_two_epoch_training_writes_checkpoint_report_and_confusion_matrix(tmp_path: Path) -> None:
    data = crema_like_corpus(tmp_path / "data")
    out = tmp_path / "ser"
    args = ["--data", str(data), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "2"]

    assert (
        train_ser.main([*args, *TINY_MODEL, "--threads", "1", "--device", "cpu", "--test-speakers", "crema-d:1001"])
        == 0
    )

    sidecar = json.loads((out / "ser.json").read_text())
    assert sidecar["training"]["seed"] == 13 and len(sidecar["training"]["history"]) == 2
    splits = {name: set(sidecar["data"][name]["speakers"]) for name in ("train", "val", "test")}
    assert splits["test"] == {"crema-d:1001"} and not splits["test"] & (splits["train"] | splits["val"])
    assert sidecar["data"]["train"]["emotions"]["calm"] == 0
    assert set(sidecar["metrics"]) >= {"uar", "macro_f1", "accuracy", "per_class", "majority_baseline"}
    assert sidecar["metrics"]["cold_start"]["n"] == sidecar["metrics"]["n"]  # the test set judged clip by clip too
    assert sidecar["speaker_adaptation"]["prior_frames"] == 300.0
    report = json.loads((out / "report.json").read_text())
    assert report["n"] == sum(sidecar["data"]["test"]["emotions"].values())
    assert "| angry |" in (out / "report.md").read_text() and "Cold start" in (out / "report.md").read_text()
    assert (out / "confusion.png").read_bytes().startswith(b"\x89PNG")
    with open(out / "manifest.csv") as handle:
        manifest = list(csv.DictReader(handle))
    assert {r["speaker"] for r in manifest if r["split"] == "test"} == splits["test"]
    assert read_checkpoint(out / "ser.pt").config.lstm_hidden == 8

    other = crema_like_corpus(tmp_path / "other", speakers=2, per_class=1)
    evaluate_args = ["--checkpoint", str(out / "ser.pt"), "--data", str(other), "--out", str(tmp_path / "ev")]
    assert evaluate_ser.main([*evaluate_args, "--cache", str(tmp_path / "cache")]) == 0
    evaluation = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert evaluation["n"] == 10 and evaluation["majority_baseline"]["emotion"] == sidecar["data"]["majority_emotion"]
    assert (tmp_path / "ev" / "confusion.png").is_file()

    assert evaluate_ser.main([*evaluate_args, "--noise-snr-db", "10", "--out", str(tmp_path / "noisy")]) == 0
    assert "white noise at 10 dB SNR" in json.loads((tmp_path / "noisy" / "report.json").read_text())["title"]

    features = FeatureExtractor().extract(load_audio(write_clip(tmp_path / "x.wav", "sad", seed=7), 16000))
    by_onnx = SerRecognizer.load(out / "ser.pt", backend="onnx").recognize(features)
    by_torch = SerRecognizer.load(out / "ser.pt", backend="torch", device="cpu").recognize(features)
    np.testing.assert_allclose(by_onnx.probabilities, by_torch.probabilities, atol=1e-4)


def test_a_time_limit_stops_before_an_epoch_that_would_overrun_it(tmp_path: Path) -> None:
    data = crema_like_corpus(tmp_path / "data", speakers=3, per_class=1)
    args = ["--data", str(data), "--out", str(tmp_path / "ser"), "--cache", str(tmp_path / "cache"), "--epochs", "5"]
    limit = ["--time-limit-min", "1e-6", "--patience", "5", "--threads", "1", "--device", "cpu"]

    assert train_ser.main([*args, *TINY_MODEL, *limit, "--test-speakers", "crema-d:1001"]) == 0

    history = json.loads((tmp_path / "ser" / "ser.json").read_text())["training"]["history"]
    assert len(history) == 1


def test_the_f0_tracker_trained_with_is_stored_with_the_checkpoint(tmp_path: Path) -> None:
    data = crema_like_corpus(tmp_path / "data", speakers=3, per_class=1)
    args = ["--data", str(data), "--out", str(tmp_path / "ser"), "--cache", str(tmp_path / "cache"), "--epochs", "1"]
    options = ["--f0-tracker", "swift-f0", "--threads", "1", "--device", "cpu", "--test-speakers", "crema-d:1001"]

    assert train_ser.main([*args, *TINY_MODEL, *options]) == 0

    assert read_checkpoint(tmp_path / "ser" / "ser.pt").feature_config.f0_tracker == "swift-f0"


def test_averaging_the_last_epochs_keeps_their_mean_weights_and_writes_the_best_epoch_beside_it(tmp_path: Path) -> None:
    data = crema_like_corpus(tmp_path / "data", speakers=4, per_class=1)
    out = tmp_path / "ser"
    args = ["--data", str(data), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "3"]
    options = ["--average-epochs", "2", "--patience", "5", "--threads", "1", "--device", "cpu"]

    assert train_ser.main([*args, *TINY_MODEL, *options, "--test-speakers", "crema-d:1001"]) == 0

    history = json.loads((out / "ser.json").read_text())["training"]["history"]
    assert [h.get("epoch") for h in history] == [1, 2, 3, None] and history[-1]["averaged_epochs"] == 2
    averaged, best = torch.load(out / "ser.pt"), torch.load(out / "best-epoch" / "ser.pt")
    assert read_checkpoint(out / "best-epoch" / "ser.pt").sidecar["metrics"]["n"] > 0
    assert (out / "best-epoch" / "report.md").is_file() and (out / "best-epoch" / "confusion.png").is_file()
    assert not torch.allclose(averaged["head.weight"], best["head.weight"])


def test_training_from_a_checkpoint_starts_from_its_weights_normaliser_and_architecture(tmp_path: Path) -> None:
    data = crema_like_corpus(tmp_path / "data", speakers=4, per_class=1)
    common = ["--cache", str(tmp_path / "cache"), "--epochs", "1", "--threads", "1", "--device", "cpu"]
    common += ["--test-speakers", "crema-d:1001"]
    assert train_ser.main([*common, *TINY_MODEL, "--data", str(data), "--out", str(tmp_path / "first")]) == 0
    more = crema_like_corpus(tmp_path / "more", speakers=4, per_class=2)  # fresh data, other statistics

    # A zero learning rate leaves the starting point untouched, so what is written is what was loaded.
    options = ["--init", str(tmp_path / "first" / "ser.pt"), "--lr", "0", "--data", str(more)]
    assert train_ser.main([*common, *options, "--out", str(tmp_path / "again")]) == 0

    first, again = read_checkpoint(tmp_path / "first" / "ser.pt"), read_checkpoint(tmp_path / "again" / "ser.pt")
    assert again.config == first.config and again.config.lstm_hidden == 8  # no model flags given the second time
    assert again.sidecar["normalizer"] == first.sidecar["normalizer"]
    assert again.sidecar["speaker_adaptation"] == first.sidecar["speaker_adaptation"]
    assert again.sidecar["training"]["init"]["onnx_sha256"] == first.sidecar["onnx_sha256"]
    for name, weights in torch.load(first.path).items():
        torch.testing.assert_close(torch.load(again.path)[name], weights)


@pytest.mark.parametrize("name", ["missing.pt", "ser.onnx"])
def test_a_wrong_starting_checkpoint_is_a_usage_error_naming_the_option(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = crema_like_corpus(tmp_path / "data", speakers=3, per_class=1)
    args = ["--data", str(data), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "first"), "--epochs", "1"]
    assert train_ser.main([*args, *TINY_MODEL, "--threads", "1", "--device", "cpu"]) == 0

    with pytest.raises(SystemExit) as stopped:
        train_ser.main([*args, "--init", str(tmp_path / "first" / name)])

    assert stopped.value.code == 2 and "--init:" in capsys.readouterr().err


def test_averaged_states_are_the_element_wise_mean() -> None:
    states = [
        {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0)},
        {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(1.0)},
    ]

    mean = train_ser.average_states(states)

    assert mean["w"].tolist() == [2.0, 4.0] and mean["b"].item() == 0.5


def test_a_voice_change_shifts_voiced_pitch_and_stretches_the_mel_axis_only() -> None:
    from emoloop.models.features import F0_COLUMN

    rows = np.full((4, 82), -10.0, dtype=np.float32)
    rows[:, 40] = 0.0  # a spectral peak at mel band 40
    rows[:, F0_COLUMN] = [np.log(120.0), 0.0, np.log(200.0), 0.0]  # voiced, unvoiced, voiced, unvoiced

    changed = train_ser.change_voice(rows, semitones=-2.0, warp=1.08)

    assert 12 * (changed[0, F0_COLUMN] - rows[0, F0_COLUMN]) / np.log(2) == pytest.approx(-2.0, abs=1e-5)
    assert changed[2, F0_COLUMN] - rows[2, F0_COLUMN] == pytest.approx(-2 * np.log(2) / 12, abs=1e-5)
    assert changed[1, F0_COLUMN] == 0 and changed[3, F0_COLUMN] == 0  # unvoiced stays unvoiced
    assert int(np.argmax(changed[0, :F0_COLUMN])) == 43  # band 40 stretched by 8 % (40 * 1.08 = 43.2)
    np.testing.assert_array_equal(changed[:, 81], rows[:, 81])  # energy untouched
    np.testing.assert_array_equal(train_ser.change_voice(rows, 0.0, 1.0), rows)


def test_spec_augment_hides_mel_bands_and_frames_but_never_pitch_or_energy() -> None:
    from emoloop.models.features import F0_COLUMN

    rows = np.ones((200, 82), dtype=np.float32)
    config = train_ser.TrainConfig(mel_masks=2, mel_mask_bins=10, time_masks=2, time_mask_frames=20)

    masked = [train_ser.spec_augment(rows, config, np.random.default_rng(seed)) for seed in range(50)]

    kept = [~(m == 0).all(axis=1) for m in masked]  # frames outside the time masks
    hidden_frames = [int((~k).sum()) for k in kept]
    assert all(n <= 40 for n in hidden_frames) and max(hidden_frames) > 0
    hidden_bins = [int((m[k, :F0_COLUMN] == 0).sum(axis=1).max()) for m, k in zip(masked, kept, strict=True)]
    assert all(n <= 20 for n in hidden_bins) and max(hidden_bins) > 0
    assert all((m[k, F0_COLUMN:] == 1).all() for m, k in zip(masked, kept, strict=True))  # pitch and energy stay
    np.testing.assert_array_equal(rows, 1)  # the input is left alone
    off = train_ser.TrainConfig(mel_masks=0, time_masks=0)
    np.testing.assert_array_equal(train_ser.spec_augment(rows, off, np.random.default_rng(0)), rows)


def test_a_session_holds_the_clip_and_other_clips_of_its_speaker_only() -> None:
    """Clip i of speaker s has every row equal to 10 * s + i, so a session's mean tells which clips it holds."""
    speakers = ["a", "a", "a", "b", "b"]
    features = [np.full((10, 82), 10.0 * (s == "b") + i, dtype=np.float32) for i, s in enumerate(speakers)]
    part = Part(features, np.zeros(5, dtype=int), speakers)
    rng = np.random.default_rng(0)

    assert part.sessions.session(0, 0, rng).mean()[0] == 0.0  # the clip alone
    assert part.sessions.session(0, 5, rng).mean()[0] == pytest.approx((0 + 1 + 2) / 3)  # all of a, never b
    assert part.sessions.session(3, 5, rng).mean()[0] == pytest.approx((13 + 14) / 2)
    assert part.sessions.session(0, 1, rng).frames == 20


def test_cold_start_adaptation_judges_each_clip_against_itself() -> None:
    reference = SpeakerReference(np.zeros(82), prior_frames=10.0)
    features = [np.random.default_rng(i).normal(i, 1.0, (30, 82)).astype(np.float32) for i in range(3)]
    part = Part(features, np.zeros(3, dtype=int), ["a", "a", "a"])

    cold = part.adapted(reference, session_clips=0, seed=0)

    for rows, adapted in zip(features, cold, strict=True):
        np.testing.assert_allclose(adapted, SpeakerStatistics.of([rows]).apply(rows, reference))
    assert part.adapted(None, session_clips=8, seed=0) is features  # a model trained without adaptation


def test_training_sessions_range_from_a_cold_start_to_many_clips() -> None:
    rng = np.random.default_rng(0)
    assert {session_size(rng, 16) for _ in range(500)} == {0, 1, 2, 4, 8, 16}
