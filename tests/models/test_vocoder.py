"""The VITS decoder split off the joe voice decodes in chunks exactly like the whole utterance."""

import dataclasses

import numpy as np
import pytest

from emoloop.models.prosody import prosody_for
from emoloop.models.tts.piper import PiperVoice, default_voice_path
from emoloop.models.vocoder import split_vits

# Chunked decoding with full context was measured at 9e-7 max abs error (float32 noise)
# for audio peaking near 0.45; this bound is ~100x that and far below audibility.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def voice() -> PiperVoice:
    return PiperVoice.load(default_voice_path())


@pytest.fixture(scope="module")
def latents(voice) -> np.ndarray:
    """Sampling noise off, so every run tests the same audio: with it on, the roughness
    of the speech itself at the seam positions varies from run to run (0.7-1.5x)."""
    text = "The weather report says it will rain all afternoon, so bring an umbrella."
    steady = dataclasses.replace(prosody_for("neutral"), noise_scale_ratio=0.0, noise_w_ratio=0.0)
    return voice.latents(text, steady)


def test_graph_splits_at_the_decoders_only_outside_input():
    graphs = split_vits(default_voice_path())
    assert graphs.latent_name == "/Mul_7_output_0"
    assert graphs.latent_channels == 192


def test_hop_and_receptive_field_are_measured(voice):
    assert voice.vocoder.hop_samples == 256
    assert voice.vocoder.context_frames == 10


def test_acoustic_half_gives_latent_frames(latents, voice):
    assert latents.shape[:2] == (1, voice.vocoder.latent_channels)
    assert latents.shape[2] > 100


@pytest.mark.parametrize("first, size", [(16, 64), (8, 8), (5, 37)])
def test_chunked_decoding_matches_whole_decoding(voice, latents, first, size):
    whole = voice.vocoder.decode(latents)
    chunks = list(voice.vocoder.stream(latents, first, size))
    assert chunks[0].size == first * voice.vocoder.hop_samples
    chunked = np.concatenate(chunks)
    assert chunked.size == whole.size == latents.shape[2] * voice.vocoder.hop_samples
    assert np.abs(chunked - whole).max() < TOLERANCE


def _seam_positions(chunks: list[np.ndarray]) -> np.ndarray:
    return np.cumsum([c.size for c in chunks])[:-1]


def _jump_ratio(audio: np.ndarray, seams: np.ndarray) -> float:
    """Largest sample-to-sample jump at a seam over the 99th percentile of jumps nearby."""
    jumps = np.abs(np.diff(audio))
    ratios = [
        jumps[s - 2 : s + 2].max() / np.percentile(jumps[s - 441 : s + 441], 99)
        for s in seams
        if 441 < s < jumps.size - 441
    ]
    return max(ratios)


def test_seams_are_no_rougher_than_the_audio_around_them(voice, latents):
    chunks = list(voice.vocoder.stream(latents, 16, 16))
    assert _jump_ratio(np.concatenate(chunks), _seam_positions(chunks)) < 1.5


def test_without_context_the_seams_break(voice, latents, monkeypatch):
    """Guards the padding: decoding chunks bare differs from the whole utterance and clicks."""
    whole = voice.vocoder.decode(latents)
    monkeypatch.setattr(voice.vocoder, "context_frames", 0)
    chunks = list(voice.vocoder.stream(latents, 16, 16))
    chunked = np.concatenate(chunks)
    assert np.abs(chunked - whole).max() > 100 * TOLERANCE
    assert _jump_ratio(chunked, _seam_positions(chunks)) > 1.5
