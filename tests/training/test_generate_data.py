"""Acted-emotion data generation: the manifest, the audio format, emotions in the intended direction,
and augmentation that does what its manifest columns say."""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile

from emoloop.models.emotions import EMOTIONS
from emoloop.models.pitch import estimate_f0
from emoloop.models.prosody import prosody_for
from emoloop.models.tts import load_engine
from emoloop.training import generate_data
from emoloop.training.corpora import load_corpus
from emoloop.training.generate_data import (
    BOUNDS,
    Augmentation,
    add_noise,
    augment,
    change_speed,
    render,
    reverberate,
    vary_prosody,
)

VOICES = ["espeak:en-us", "espeak:en-us+f2", "espeak:en-gb-x-rp+m3"]
TEST_VOICE = "espeak:en-gb-x-rp+m3"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("data")
    argv = ["--out", str(out), "--sentences", "2", "--engines", "espeak", "--voices", ",".join(VOICES)]
    assert generate_data.main([*argv, "--test-voices", TEST_VOICE, "--seed", "3"]) == 0
    return out


@pytest.fixture(scope="module")
def rows(generated: Path) -> list[dict[str, str]]:
    with open(generated / "manifest.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    prosody = prosody_for("neutral")
    return render(load_engine("espeak"), "The library closes at six on weekdays.", "neutral", "en-us", prosody)


def test_every_voice_speaks_every_sentence_in_all_six_emotions_with_a_clean_and_an_augmented_copy(rows):
    assert len(rows) == len(VOICES) * 2 * len(EMOTIONS) * 2
    assert {"path", "emotion", "speaker", "engine", "sentence_id", "augmentation", "snr_db", "split"} <= set(rows[0])
    by_speaker = defaultdict(list)
    for row in rows:
        by_speaker[row["speaker"]].append(row)
    assert sorted(by_speaker) == sorted(VOICES)
    for speaker_rows in by_speaker.values():
        sentences = {r["sentence_id"] for r in speaker_rows}
        assert len(sentences) == 2
        for sentence in sentences:  # the words never tell the emotion
            assert sorted(r["emotion"] for r in speaker_rows if r["sentence_id"] == sentence) == sorted(EMOTIONS * 2)
        assert {r["augmentation"] for r in speaker_rows if r["copy"] == "0"} == {"gain"}


def test_clips_are_16_khz_mono_16_bit_wavs_of_speech(generated, rows):
    for row in rows:
        info = soundfile.info(generated / row["path"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert 0.5 < info.duration < 8.0 and float(row["duration_s"]) == pytest.approx(info.duration, abs=1e-3)


def test_held_out_voices_are_listed_and_have_their_own_manifest(generated, rows):
    assert (generated / "test_speakers.txt").read_text().strip() == TEST_VOICE
    assert {r["speaker"] for r in rows if r["split"] == "test"} == {TEST_VOICE}
    held_out = load_corpus(generated / "test-voices").rows
    assert {r.speaker for r in held_out} == {TEST_VOICE} and all(Path(r.path).is_file() for r in held_out)
    assert len(load_corpus(generated).rows) == len(rows)


def test_emotions_differ_in_the_intended_direction(generated, rows):
    f0 = defaultdict(list)
    duration = defaultdict(list)
    for row in rows:
        if row["copy"] == "0":
            audio, rate = soundfile.read(generated / row["path"], dtype="float32")
            track = estimate_f0(audio, rate)
            f0[row["emotion"]].append(np.median(track[track > 0]))
            duration[row["emotion"]].append(float(row["duration_s"]))
    mean_f0 = {emotion: np.mean(values) for emotion, values in f0.items()}
    mean_duration = {emotion: np.mean(values) for emotion, values in duration.items()}
    assert mean_f0["happy"] > mean_f0["neutral"] > mean_f0["sad"]
    assert mean_f0["fearful"] > mean_f0["calm"]
    assert mean_duration["sad"] > mean_duration["neutral"] > mean_duration["angry"]


def test_shares_of_training_renderings_go_through_world_and_held_out_ones_never_do(rows):
    routes = defaultdict(set)
    for row in rows:
        routes[row["split"], row["speaker"], row["sentence_id"], row["emotion"]].add(row["pitch_route"])
    assert all(len(route) == 1 for route in routes.values())  # every copy of a rendering agrees
    training = [route.pop() for key, route in routes.items() if key[0] != "test"]
    assert {"engine", "world", "round-trip"} == set(training)  # default shares 0.4 / 0.3 / 0.3 of 24 renderings
    assert all(route == {"engine"} for key, route in routes.items() if key[0] == "test")


def test_the_route_shares_partition_one_draw_so_a_share_of_zero_leaves_the_other_routes_alone():
    args = generate_data.parse_args(["--out", "x", "--world-pitch-probability", "0.2"])
    args.world_round_trip_probability = 0.5
    assert [generate_data.draw_route(u, args) for u in (0.1, 0.3, 0.69, 0.71)] == [
        "world",
        "round-trip",
        "round-trip",
        "engine",
    ]
    args.world_round_trip_probability = 0.0
    assert [generate_data.draw_route(u, args) for u in (0.1, 0.3)] == ["world", "engine"]


def semitones_and_spread(audio: np.ndarray) -> tuple[float, float]:
    """Median voiced F0 in semitones re 100 Hz, and its 10-90 % range."""
    f0 = estimate_f0(audio, 16000)
    semitones = 12 * np.log2(f0[f0 > 0] / 100.0)
    return float(np.median(semitones)), float(np.subtract(*np.percentile(semitones, [90, 10])))


def test_world_puts_the_takes_pitch_on_a_flat_rendering_and_keeps_its_length_and_loudness(speech):
    from emoloop.training.acting import rms

    raised = replace(prosody_for("neutral"), pitch_shift_semitones=4.0, pitch_range_ratio=1.6)
    out = generate_data.pitch_in_world(speech, raised, np.random.default_rng(0))
    same = generate_data.pitch_in_world(speech, generate_data.flat_pitch(raised), np.random.default_rng(0))

    (level, spread), (edited_level, edited_spread) = semitones_and_spread(speech), semitones_and_spread(out)
    assert out.size == speech.size and rms(out) == pytest.approx(rms(speech), rel=1e-3)
    assert edited_level - level == pytest.approx(4.0, abs=0.7)
    assert edited_spread > 1.3 * spread
    assert semitones_and_spread(same)[0] == pytest.approx(level, abs=0.3)
    assert not np.allclose(same, speech, atol=1e-3)  # a flat take still goes through WORLD, not around it


@pytest.mark.parametrize(
    ("options", "named"),
    [
        (["--world-pitch-probability", "1.5"], "--world-pitch-probability"),
        (["--world-round-trip-probability", "-0.1"], "--world-round-trip-probability"),
        (["--world-pitch-probability", "0.6", "--world-round-trip-probability", "0.5"], "add up to more than 1"),
    ],
)
def test_route_shares_that_are_not_probabilities_are_refused(tmp_path, capsys, options, named):
    with pytest.raises(SystemExit):
        generate_data.main(["--out", str(tmp_path), *options])
    assert named in capsys.readouterr().err


def test_acting_varies_around_the_table_within_bounds() -> None:
    rng = np.random.default_rng(0)
    takes = [vary_prosody(prosody_for("happy"), rng.uniform(0.7, 1.3), rng) for _ in range(300)]

    shifts = np.array([t.pitch_shift_semitones for t in takes])
    assert shifts.mean() == pytest.approx(prosody_for("happy").pitch_shift_semitones, abs=0.3)
    assert shifts.std() > 0.5  # takes differ, so neighbouring emotions overlap
    for take in takes:
        for name, (low, high) in BOUNDS.items():
            assert low <= getattr(take, name) <= high


@pytest.mark.parametrize("color", ["white", "pink"])
@pytest.mark.parametrize("snr_db", [20.0, 10.0, 5.0])
def test_noise_is_added_at_the_requested_snr(speech, snr_db, color):
    noisy = add_noise(speech, snr_db, color, np.random.default_rng(1))
    noise = noisy - speech
    assert 10 * np.log10(np.mean(speech**2) / np.mean(noise**2)) == pytest.approx(snr_db, abs=1.0)


def test_the_whole_chain_keeps_the_snr_even_when_it_scales_a_loud_clip_down(speech):
    loud = speech / np.abs(speech).max()
    settings = Augmentation(gain_db=6.0, snr_db=5.0, noise="pink")

    out = augment(loud, settings, np.random.default_rng(2))

    assert np.abs(out).max() <= 0.99 + 1e-6
    scale = np.dot(out, loud) / np.dot(loud, loud)  # the speech's share of the output
    noise = out - scale * loud
    assert 10 * np.log10(np.mean((scale * loud) ** 2) / np.mean(noise**2)) == pytest.approx(5.0, abs=1.0)


def test_speed_gain_and_reverberation(speech):
    assert change_speed(speech, 1.05).size == pytest.approx(speech.size / 1.05, rel=0.01)
    assert change_speed(speech, 0.95).size == pytest.approx(speech.size / 0.95, rel=0.01)
    quieter = augment(speech, Augmentation(gain_db=-6.0), np.random.default_rng(0))
    assert np.sqrt(np.mean(quieter**2) / np.mean(speech**2)) == pytest.approx(10 ** (-6 / 20), rel=1e-3)
    wet = reverberate(speech, 0.4, np.random.default_rng(0))
    assert wet.size == speech.size and np.mean(wet**2) == pytest.approx(np.mean(speech**2), rel=1e-3)
    assert not np.allclose(wet, speech, atol=1e-3)


def test_worker_processes_act_and_augment_exactly_as_one_process(tmp_path):
    argv = ["--sentences", "1", "--engines", "espeak", "--voices", ",".join(VOICES[:2]), "--test-voices", VOICES[1]]
    for jobs in ("1", "2"):
        assert generate_data.main(["--out", str(tmp_path / jobs), "--jobs", jobs, *argv]) == 0
    one, two = (list(csv.DictReader((tmp_path / jobs / "manifest.csv").open())) for jobs in ("1", "2"))
    assert len(one) == len(two) == 2 * 6 * 2
    for a, b in zip(one, two, strict=True):
        assert {k: v for k, v in a.items() if k != "duration_s"} == {k: v for k, v in b.items() if k != "duration_s"}
