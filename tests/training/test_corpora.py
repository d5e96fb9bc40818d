"""Corpus loaders: each layout's names give emotion and speaker; extra classes are dropped and counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

from emoloop.models.features import FeatureConfig
from emoloop.training import corpora
from emoloop.training.corpora import (
    cached_features,
    detect_corpora,
    load_audio,
    load_corpora,
    load_corpus,
    read_manifest,
    write_manifest,
)
from tests.training.synthetic import write_clip


def test_ravdess_names_give_emotion_and_actor_and_extra_classes_are_counted(tmp_path: Path) -> None:
    write_clip(tmp_path / "Actor_12" / "03-01-05-01-02-01-12.wav", "angry", 0, sample_rate_hz=48000)
    write_clip(tmp_path / "Actor_12" / "03-01-02-02-01-01-12.wav", "calm", 1, sample_rate_hz=48000)
    write_clip(tmp_path / "Actor_03" / "03-01-07-01-01-01-03.wav", "angry", 2)  # disgust
    write_clip(tmp_path / "Actor_03" / "03-01-08-01-01-01-03.wav", "angry", 3)  # surprised
    write_clip(tmp_path / "Actor_03" / "03-02-03-01-01-01-03.wav", "happy", 4)  # sung

    scan = load_corpus(tmp_path, "ravdess")

    assert sorted((r.emotion, r.speaker, r.corpus) for r in scan.rows) == [
        ("angry", "ravdess:12", "ravdess"),
        ("calm", "ravdess:12", "ravdess"),
    ]
    assert scan.rows[0].duration_s == pytest.approx(0.5)
    assert scan.dropped == {"ravdess disgust": 1, "ravdess surprised": 1, "ravdess song": 1}
    assert "dropped ravdess disgust: 1" in scan.summary()


def test_crema_d_first_field_is_the_speaker_and_disgust_is_dropped(tmp_path: Path) -> None:
    for name in ("1001_DFA_ANG_XX", "1001_IEO_FEA_HI", "1002_TIE_NEU_XX", "1002_DFA_DIS_XX"):
        write_clip(tmp_path / f"{name}.wav", "neutral", 0)

    scan = load_corpus(tmp_path, "crema-d")

    assert sorted((r.emotion, r.speaker) for r in scan.rows) == [
        ("angry", "crema-d:1001"),
        ("fearful", "crema-d:1001"),
        ("neutral", "crema-d:1002"),
    ]
    assert scan.dropped == {"crema-d DIS": 1}


def test_tess_fear_is_fearful_and_pleasant_surprise_and_disgust_are_dropped(tmp_path: Path) -> None:
    write_clip(tmp_path / "OAF_Fear" / "OAF_back_fear.wav", "fearful", 0, sample_rate_hz=24414)
    write_clip(tmp_path / "YAF_happy" / "YAF_dog_happy.wav", "happy", 1)
    write_clip(tmp_path / "YAF_pleasant_surprised" / "YAF_dog_ps.wav", "happy", 2)
    write_clip(tmp_path / "OAF_disgust" / "OAF_back_disgust.wav", "happy", 3)

    scan = load_corpus(tmp_path, "tess")

    assert sorted((r.emotion, r.speaker) for r in scan.rows) == [("fearful", "tess:OAF"), ("happy", "tess:YAF")]
    assert scan.dropped == {"tess ps": 1, "tess disgust": 1}


def test_generic_manifest_paths_are_relative_to_it_and_unknown_emotions_are_refused(tmp_path: Path) -> None:
    write_clip(tmp_path / "clips" / "a.wav", "sad", 0)
    (tmp_path / "manifest.csv").write_text("path,emotion,speaker\nclips/a.wav,sad,anna\n")

    scan = load_corpus(tmp_path)

    assert [(Path(r.path), r.emotion, r.speaker, r.corpus) for r in scan.rows] == [
        (tmp_path / "clips" / "a.wav", "sad", "anna", "manifest")
    ]
    (tmp_path / "manifest.csv").write_text("path,emotion,speaker\nclips/a.wav,sad,anna\nclips/a.wav,bored,bob\n")
    with pytest.raises(ValueError, match=r"manifest.csv:3: emotion: unknown emotion 'bored'"):
        load_corpus(tmp_path)


def test_several_directories_read_as_one_corpus_with_one_speaker_per_name(tmp_path: Path) -> None:
    for run, emotion in (("first", "sad"), ("second", "happy")):
        write_clip(tmp_path / run / "a.wav", emotion, 0)
        (tmp_path / run / "manifest.csv").write_text(f"path,emotion,speaker\na.wav,{emotion},anna\n")
    write_clip(tmp_path / "ravdess" / "03-01-08-01-01-01-02.wav", "neutral", 0)  # surprised: dropped

    scan = load_corpora([tmp_path / "first", tmp_path / "second", tmp_path / "ravdess"])

    assert [(Path(r.path).parent.name, r.emotion, r.speaker) for r in scan.rows] == [
        ("first", "sad", "anna"),
        ("second", "happy", "anna"),
    ]
    assert scan.dropped == {"ravdess surprised": 1}


def test_written_manifest_reads_back_with_extra_columns_ignored(tmp_path: Path) -> None:
    write_clip(tmp_path / "1001_DFA_ANG_XX.wav", "angry", 0)
    rows = load_corpus(tmp_path).rows

    write_manifest(rows, tmp_path / "out.csv", {"split": ["train"]})

    assert read_manifest(tmp_path / "out.csv").rows == rows


def test_auto_detection_finds_every_layout_present_and_counts_unrecognised_files(tmp_path: Path) -> None:
    write_clip(tmp_path / "ravdess" / "03-01-04-01-01-01-07.wav", "sad", 0)
    write_clip(tmp_path / "crema" / "1003_DFA_HAP_XX.wav", "happy", 1)
    write_clip(tmp_path / "misc" / "hello.wav", "happy", 2)

    assert detect_corpora(tmp_path) == ["ravdess", "crema-d"]
    scan = load_corpus(tmp_path)
    assert sorted(r.emotion for r in scan.rows) == ["happy", "sad"]
    assert scan.dropped == {"unrecognised file name": 1}


def test_a_directory_in_no_known_layout_asks_for_corpus(tmp_path: Path) -> None:
    write_clip(tmp_path / "hello.wav", "happy", 0)
    with pytest.raises(ValueError, match="--corpus"):
        load_corpus(tmp_path)
    with pytest.raises(ValueError, match="unknown corpus 'iemocap'"):
        load_corpus(tmp_path, "iemocap")


def test_audio_is_loaded_as_mono_16k_float32(tmp_path: Path) -> None:
    t = np.arange(48000) / 48000
    stereo = np.stack([0.5 * np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], axis=1)
    soundfile.write(tmp_path / "s.wav", stereo, 48000, subtype="FLOAT")

    audio = load_audio(tmp_path / "s.wav", 16000)

    assert audio.dtype == np.float32 and audio.shape == (16000,)
    assert np.sqrt(np.mean(audio[1000:-1000] ** 2)) == pytest.approx(0.25 / np.sqrt(2), rel=0.01)


def test_features_are_cached_per_file_and_feature_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_clip(tmp_path / "data" / "1001_DFA_ANG_XX.wav", "angry", 0)
    rows = load_corpus(tmp_path / "data").rows
    first = cached_features(rows, FeatureConfig(), tmp_path / "cache")
    assert first[0].shape == (49, 82)

    def no_audio(*_: object) -> None:
        raise AssertionError("a cached clip was decoded again")

    monkeypatch.setattr(corpora, "load_audio", no_audio)
    np.testing.assert_array_equal(cached_features(rows, FeatureConfig(), tmp_path / "cache")[0], first[0])
    with pytest.raises(AssertionError, match="decoded again"):
        cached_features(rows, FeatureConfig(f0_max_hz=500.0), tmp_path / "cache")


def test_the_command_prints_the_summary_and_writes_a_manifest(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_clip(tmp_path / "data" / "1001_DFA_ANG_XX.wav", "angry", 0)
    write_clip(tmp_path / "data" / "1001_DFA_DIS_XX.wav", "angry", 1)

    assert corpora.main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "m.csv")]) == 0

    assert "crema-d: angry 1" in capsys.readouterr().out
    assert [r.emotion for r in read_manifest(tmp_path / "m.csv").rows] == ["angry"]
