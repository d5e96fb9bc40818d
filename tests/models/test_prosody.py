"""The emotion -> prosody table: its directions follow the literature, and bad tables are refused."""

import dataclasses
import tomllib

import pytest

from emoloop.models.prosody import (
    DEFAULT_TABLE,
    EMOTIONS,
    Prosody,
    default_prosody,
    load_prosody,
    parse_prosody,
    prosody_for,
)


@pytest.fixture
def raw_table() -> dict:
    with open(DEFAULT_TABLE, "rb") as file:
        return tomllib.load(file)


def test_table_has_exactly_the_six_emotions():
    assert tuple(default_prosody()) == EMOTIONS
    assert set(EMOTIONS) == {"neutral", "calm", "happy", "sad", "angry", "fearful"}


def test_neutral_changes_nothing():
    neutral = prosody_for("neutral")
    assert not neutral.changes_pitch
    assert (neutral.rate_ratio, neutral.volume_ratio, neutral.duration_ratio) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize("emotion", ["angry", "happy"])
def test_anger_and_happiness_raise_pitch_widen_range_and_speed_up(emotion):
    p = prosody_for(emotion)
    assert p.pitch_shift_semitones > 0 and p.pitch_range_ratio > 1 and p.rate_ratio > 1
    assert p.volume_ratio > 1


def test_sadness_is_lower_narrower_slower_and_softer():
    p = prosody_for("sad")
    assert p.pitch_shift_semitones < 0 and p.pitch_range_ratio < 1
    assert p.rate_ratio < 1 and p.volume_ratio < 1


def test_fear_is_higher_faster_and_irregular():
    p = prosody_for("fearful")
    assert p.pitch_shift_semitones > 0 and p.rate_ratio > 1
    assert p.jitter_semitones > 0 and p.noise_w_ratio > 1
    others = [prosody_for(e).jitter_semitones for e in EMOTIONS if e != "fearful"]
    assert max(others) < p.jitter_semitones


def test_calm_is_slower_softer_and_narrower():
    p = prosody_for("calm")
    assert p.rate_ratio < 1 and p.volume_ratio < 1 and p.pitch_range_ratio < 1


def test_entries_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        prosody_for("happy").rate_ratio = 2.0  # type: ignore[misc]


def test_unknown_emotion_lookup_raises():
    with pytest.raises(ValueError, match="bored"):
        prosody_for("bored")


def test_unknown_emotion_in_table_is_named(raw_table):
    raw_table["bored"] = raw_table["neutral"]
    with pytest.raises(ValueError, match="bored"):
        parse_prosody(raw_table)


def test_missing_emotion_is_named(raw_table):
    del raw_table["calm"]
    with pytest.raises(ValueError, match="calm"):
        parse_prosody(raw_table)


def test_unknown_key_is_named(raw_table):
    raw_table["sad"]["pitch_shfit_semitones"] = 1.0
    with pytest.raises(ValueError, match="pitch_shfit_semitones"):
        parse_prosody(raw_table)


def test_missing_key_is_named(raw_table):
    del raw_table["angry"]["volume_ratio"]
    with pytest.raises(ValueError, match="volume_ratio"):
        parse_prosody(raw_table)


@pytest.mark.parametrize("key, value", [("rate_ratio", 0.0), ("jitter_semitones", -0.1), ("volume_ratio", "loud")])
def test_bad_values_are_refused_with_their_key(raw_table, key, value):
    raw_table["happy"][key] = value
    with pytest.raises(ValueError, match=key):
        parse_prosody(raw_table)


def test_a_table_file_loads_by_path(tmp_path, raw_table):
    lines = []
    for emotion, entry in raw_table.items():
        lines.append(f"[{emotion}]")
        lines += [f"{key} = {float(value)}" for key, value in entry.items()]
    lines[lines.index("[sad]") + 1] = "pitch_shift_semitones = -4.0"
    path = tmp_path / "prosody.toml"
    path.write_text("\n".join(lines))
    table = load_prosody(path)
    assert isinstance(table["sad"], Prosody)
    assert table["sad"].pitch_shift_semitones == -4.0
