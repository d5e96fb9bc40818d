"""Kokoro-82M (int8 ONNX) engine: espeak-ng IPA -> Kokoro tokens -> encoder half -> F0 edit
-> decoder half.

A quality engine for sentence-level use, not for real time: on the 2 target cores it runs at
RTF ~0.7 (one thread; two are slower when other models share the cores), and its decoder
normalises over the whole phrase (AdaIN), so a phrase cannot be decoded in chunks: each
phrase comes out as one AudioChunk once all of it is rendered (~2 s for a 6-word phrase).

Emotion: Kokoro predicts an explicit F0 contour that conditions its decoder, so the graph is
cut there (like Piper's at its latent) and pitch level, range and jitter are edited on that
contour in numpy, before any audio exists; rate is the model's `speed` input; volume a gain.

The model is not downloaded at run time: `python -m emoloop.training.install_kokoro` puts it
in `install_dir()`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx.utils import Extractor

from ..prosody import Prosody, prosody_for
from ..vocoder import session
from . import AudioChunk, VoiceInfo, install_dir_for, stream_phrases
from .espeak_lib import espeak

SAMPLE_RATE_HZ = 24000
LICENSE = "Apache-2.0"
ENV_DIR = "EMOLOOP_KOKORO_DIR"
INSTALL_COMMAND = "python -m emoloop.training.install_kokoro"
MODEL_FILE = "model.onnx"
VOICES_DIR = "voices"
MANIFEST_FILE = "kokoro.json"  # vocab, voice names, provenance; written last by the installer
DEFAULT_VOICE = "af_heart"

# A voice file is one 256-d style vector per phrase length in tokens (0..509), float32.
STYLE_ROWS, STYLE_DIM = 510, 256
STYLE_BYTES = STYLE_ROWS * STYLE_DIM * 4
MAX_TOKENS = STYLE_ROWS  # plus the two pads: the model's 512-token context
RATE_SEARCH_RUNS = 4


@dataclass(frozen=True)
class Language:
    tag: str  # BCP 47, for VoiceInfo
    espeak_voice: str
    # espeak-ng IPA -> the phone set Kokoro was trained on (misaki's): diphthongs and
    # affricates are single symbols, US English has no length marks. Applied in order.
    rewrites: tuple[tuple[str, str], ...]


_SHARED_REWRITES = (
    ("eɪ", "A"),
    ("aɪ", "I"),
    ("aʊ", "W"),
    ("ɔɪ", "Y"),
    ("dʒ", "ʤ"),
    ("tʃ", "ʧ"),
    ("ɚ", "əɹ"),
    ("ɐ", "ə"),
    ("r", "ɹ"),
    ("x", "k"),
    ("ç", "k"),
    ("ɬ", "l"),
    ("ʲ", ""),
)
# Voice names start with a language letter ("af_heart": American English, female).
LANGUAGES = {
    "a": Language(
        "en-US",
        "en-us",
        (*_SHARED_REWRITES, ("oʊ", "O"), ("ɜːɹ", "ɜɹ"), ("ɜː", "ɜɹ"), ("ɪə", "iə"), ("ː", "")),
    ),
    "b": Language("en-GB", "en", (*_SHARED_REWRITES, ("əʊ", "Q"), ("eə", "ɛː"), ("iə", "ɪə"))),
}

# Where the encoder hands over to the decoder in this export (checked at load).
ALIGNED_TEXT, F0, ENERGY = "/encoder/MatMul_1_output_0", "/encoder/Reshape_output_0", "/encoder/Reshape_1_output_0"
# Predicted F0 sits near 7-30 Hz where unvoiced; the decoder's source voices frames above
# ~10 Hz. Pitch edits fade in across this band so unvoiced frames stay unvoiced.
EDIT_FADE_HZ = (25.0, 50.0)
VOICED_HZ = EDIT_FADE_HZ[1]

# Clause punctuation followed by a space or the end ("3.5" stays a number) is a Kokoro
# token that shapes phrasing; everything else goes to espeak-ng.
_CLAUSE_BREAK = re.compile(r"([;:,.!?—…]+)(?=\s|$)")
_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")  # espeak marks foreign words as "(fr)...(en)"


def install_dir() -> Path:
    """Where the installer puts the model and the engine looks for it."""
    return install_dir_for("kokoro", ENV_DIR)


@dataclass(frozen=True)
class KokoroModel:
    """The graph cut at the predicted F0: (tokens, style, speed) -> features; features -> audio."""

    encoder: ort.InferenceSession
    decoder: ort.InferenceSession

    def features(self, tokens: list[int], style: np.ndarray, speed: float) -> tuple[np.ndarray, ...]:
        """(aligned text, F0 [1, frames] in Hz at 80 frames/s, energy) for one phrase's tokens."""
        feeds = {
            "tokens": np.array([[0, *tokens, 0]], np.int64),
            "style": style,
            "speed": np.array([speed], np.float32),
        }
        return tuple(self.encoder.run(None, feeds))

    def decode(self, aligned: np.ndarray, f0: np.ndarray, energy: np.ndarray, style: np.ndarray) -> np.ndarray:
        feeds = {ALIGNED_TEXT: aligned, F0: f0.astype(np.float32), ENERGY: energy, "style": style}
        return self.decoder.run(None, feeds)[0]


def load_model(path: Path | str, threads: int = 1) -> KokoroModel:
    """Split the ONNX file in memory (~0.5 s), so the installed file stays the published one."""
    model = onnx.load(str(path))
    produced = {name for node in model.graph.node for name in node.output}
    missing = [name for name in (ALIGNED_TEXT, F0, ENERGY) if name not in produced]
    if missing:
        raise RuntimeError(f"{path}: not the expected Kokoro export, no tensors {missing}; run `{INSTALL_COMMAND}`")
    extractor = Extractor(model)
    encoder = extractor.extract_model(["tokens", "style", "speed"], [ALIGNED_TEXT, F0, ENERGY])
    decoder = extractor.extract_model([ALIGNED_TEXT, F0, ENERGY, "style"], ["audio"])
    return KokoroModel(session(encoder.SerializeToString(), threads), session(decoder.SerializeToString(), threads))


def edit_f0(f0: np.ndarray, prosody: Prosody, rng: np.random.Generator) -> np.ndarray:
    """Emotional pitch on a predicted contour: semitones around the phrase's median voiced F0
    are scaled by pitch_range_ratio, shifted, and jittered per frame."""
    voiced = f0 > VOICED_HZ
    if not prosody.changes_pitch or not voiced.any():
        return f0
    center = np.median(f0[voiced])
    semitones = 12.0 * np.log2(np.maximum(f0, 1.0) / center)
    target = semitones * prosody.pitch_range_ratio + prosody.pitch_shift_semitones
    if prosody.jitter_semitones:
        target += prosody.jitter_semitones * rng.standard_normal(f0.shape)
    low, high = EDIT_FADE_HZ
    weight = np.clip((f0 - low) / (high - low), 0.0, 1.0)
    return f0 * 2.0 ** (weight * (target - semitones) / 12.0)


class KokoroEngine:
    """Speaks emotional English with Kokoro voices, one AudioChunk per phrase."""

    def __init__(self, directory: Path | str | None = None, threads: int = 1, seed: int | None = None) -> None:
        directory = Path(directory) if directory else install_dir()
        manifest_path = directory / MANIFEST_FILE
        if not manifest_path.is_file():
            raise FileNotFoundError(
                f"Kokoro is not installed in {directory} (no {MANIFEST_FILE}); run `{INSTALL_COMMAND}` or `make kokoro`"
            )
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        self._vocab: dict[str, int] = manifest["vocab"]
        self._styles = {
            name: np.fromfile(directory / VOICES_DIR / f"{name}.bin", np.float32).reshape(STYLE_ROWS, 1, STYLE_DIM)
            for name in manifest["voices"]
        }
        self._model = load_model(directory / MODEL_FILE, threads)
        self._rng = np.random.default_rng(seed)

    def voices(self) -> list[VoiceInfo]:
        return [
            VoiceInfo(name, "kokoro", LANGUAGES[name[0]].tag, SAMPLE_RATE_HZ, LICENSE) for name in sorted(self._styles)
        ]

    def synthesize(
        self,
        text: str | Iterable[str],
        emotion: str = "neutral",
        voice: str | None = None,
        prosody: Prosody | None = None,
    ) -> Iterator[AudioChunk]:
        """Speak `text`; each phrase is rendered whole, so first audio waits for the first phrase."""
        name = voice or DEFAULT_VOICE
        if name not in self._styles:
            raise ValueError(f"unknown kokoro voice {name!r}; installed: {sorted(self._styles)}")
        prosody = prosody or prosody_for(emotion)
        return stream_phrases(text, lambda phrase: self._render(phrase, name, prosody), SAMPLE_RATE_HZ)

    def tokens(self, phrase: str, language: Language) -> list[int]:
        """Kokoro token ids of a phrase (no pads), at most MAX_TOKENS."""
        text = ""
        for index, part in enumerate(_CLAUSE_BREAK.split(phrase)):
            if index % 2:  # a captured punctuation run
                text += part + " "
            elif part.strip():
                text += _LANGUAGE_SWITCH.sub("", espeak().phonemes(part, language.espeak_voice))
        for old, new in language.rewrites:
            text = text.replace(old, new)
        return [self._vocab[symbol] for symbol in text.strip() if symbol in self._vocab][:MAX_TOKENS]

    def _render(self, phrase: str, voice: str, prosody: Prosody) -> Iterator[np.ndarray]:
        tokens = self.tokens(phrase, LANGUAGES[voice[0]])
        if not tokens:
            return
        style = self._styles[voice][min(len(tokens), STYLE_ROWS - 1)]
        aligned, f0, energy = self._features_at_rate(tokens, style, prosody.rate_ratio)
        audio = self._model.decode(aligned, edit_f0(f0, prosody, self._rng), energy, style)
        yield np.clip(audio * prosody.volume_ratio, -1.0, 1.0)

    def _features_at_rate(self, tokens: list[int], style: np.ndarray, rate: float) -> tuple[np.ndarray, ...]:
        """Encoder outputs whose length is closest to 1/rate of the neutral length.

        Kokoro divides each phone's duration by `speed` and then rounds it to whole 25 ms
        frames, so speed=1.1 alone shortens a phrase by only ~3%. A few encoder runs (each
        ~2% of the decoder's time) find the speed that gives the prosody's rate.
        """
        neutral = self._model.features(tokens, style, 1.0)
        if rate == 1.0:
            return neutral
        target = neutral[1].shape[1] / rate
        best, speed = neutral, rate
        for _ in range(RATE_SEARCH_RUNS):
            features = self._model.features(tokens, style, speed)
            frames = features[1].shape[1]
            if abs(frames - target) < abs(best[1].shape[1] - target):
                best = features
            if abs(frames - target) <= 1.0:
                break
            speed *= frames / target
        return best
