"""Emotional speech corpora as manifest rows (path, emotion, speaker, corpus, duration_s).

Each corpus names its files in its own way and has its own classes; `LABELS` maps every class a corpus
has to one of the six emoloop emotions, or to None where it has no counterpart. Dropped files are counted
per corpus and class in the scan summary, never skipped silently:

| corpus  | neutral | calm | happy | sad | angry | fearful | dropped                               |
|---------|---------|------|-------|-----|-------|---------|---------------------------------------|
| RAVDESS | 01      | 02   | 03    | 04  | 05    | 06      | 07 disgust, 08 surprised, sung files  |
| CREMA-D | NEU     | —    | HAP   | SAD | ANG   | FEA     | DIS disgust                           |
| TESS    | neutral | —    | happy | sad | angry | fear    | disgust, ps (pleasant surprise)       |

RAVDESS's sung files (vocal channel 02) are dropped too: sung emotion is not what a speech loop hears.
Speakers are prefixed with the corpus (`ravdess:12`, `crema-d:1001`, `tess:OAF`) so that two corpora
never share a speaker by accident. A generic `manifest.csv` (`path,emotion,speaker`, optional
`corpus,duration_s`; paths relative to the file) must already use the six emotion names.

    python -m emoloop.training.corpora --data DIR [--corpus auto] [--out manifest.csv]
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import resample_poly
from tqdm import tqdm

from emoloop.models.emotions import EMOTIONS, emotion_index
from emoloop.models.features import FeatureConfig, FeatureExtractor

MANIFEST_NAME = "manifest.csv"
MANIFEST_FIELDS = ("path", "emotion", "speaker", "corpus", "duration_s")

LABELS: dict[str, dict[str, str | None]] = {
    "ravdess": {
        "neutral": "neutral",
        "calm": "calm",
        "happy": "happy",
        "sad": "sad",
        "angry": "angry",
        "fearful": "fearful",
        "disgust": None,
        "surprised": None,
        "song": None,  # vocal channel 02: sung, not spoken
    },
    "crema-d": {"NEU": "neutral", "HAP": "happy", "SAD": "sad", "ANG": "angry", "FEA": "fearful", "DIS": None},
    "tess": {
        "neutral": "neutral",
        "happy": "happy",
        "sad": "sad",
        "angry": "angry",
        "fear": "fearful",
        "disgust": None,
        "ps": None,  # pleasant surprise
    },
}
"""Corpus class -> emoloop emotion, None for dropped classes."""

_RAVDESS_CODES = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}
"""RAVDESS's third name field -> its class name."""
_RAVDESS = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)$")
_CREMA_D = re.compile(r"^(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})$")
_TESS = re.compile(r"^(OAF|YAF)_[A-Za-z0-9]+_([A-Za-z]+)$", re.IGNORECASE)


@dataclass(frozen=True)
class ManifestRow:
    """One labelled clip."""

    path: str
    emotion: str
    speaker: str
    corpus: str
    duration_s: float


@dataclass
class CorpusScan:
    """The usable rows of a scan plus counts of what was left out and why."""

    rows: list[ManifestRow] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # "<corpus> <class>" -> files

    def summary(self) -> str:
        """Rows per corpus and emotion, speakers, and every dropped class with its count."""
        lines = [f"{len(self.rows)} clips, {len({r.speaker for r in self.rows})} speakers"]
        for corpus in sorted({r.corpus for r in self.rows}):
            counts = Counter(r.emotion for r in self.rows if r.corpus == corpus)
            lines.append(f"  {corpus}: " + ", ".join(f"{e} {counts[e]}" for e in EMOTIONS if counts[e]))
        lines += [f"  dropped {key}: {n}" for key, n in sorted(self.dropped.items())]
        return "\n".join(lines)


def _parse_ravdess(stem: str) -> tuple[str, str] | None:
    match = _RAVDESS.match(stem)
    if not match:
        return None
    _modality, channel, code, *_rest, actor = match.groups()
    return ("song" if channel == "02" else _RAVDESS_CODES.get(code, code)), str(int(actor))


def _parse_crema_d(stem: str) -> tuple[str, str] | None:
    match = _CREMA_D.match(stem)
    return (match.group(3), match.group(1)) if match else None


def _parse_tess(stem: str) -> tuple[str, str] | None:
    match = _TESS.match(stem)
    return (match.group(2).lower(), match.group(1).upper()) if match else None


PARSERS: dict[str, Callable[[str], tuple[str, str] | None]] = {
    "ravdess": _parse_ravdess,
    "crema-d": _parse_crema_d,
    "tess": _parse_tess,
}
"""File-name stem -> (corpus class, speaker), or None when the name is not in that corpus's scheme."""

CORPORA = (*PARSERS, "manifest")


def _wav_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() == ".wav" and p.is_file())


def scan_named(root: Path, corpora: list[str]) -> CorpusScan:
    """Rows of every WAV under `root` named in one of the corpora's schemes; other WAVs are counted."""
    scan = CorpusScan()
    for path in _wav_files(root):
        parsed = next(((c, p) for c in corpora if (p := PARSERS[c](path.stem)) is not None), None)
        if parsed is None:
            scan.dropped["unrecognised file name"] += 1
            continue
        corpus, (label, speaker) = parsed
        if label not in LABELS[corpus]:
            scan.dropped[f"{corpus} unknown class {label!r}"] += 1
        elif LABELS[corpus][label] is None:
            scan.dropped[f"{corpus} {label}"] += 1
        else:
            emotion = LABELS[corpus][label]
            duration = soundfile.info(path).duration
            scan.rows.append(ManifestRow(str(path), emotion, f"{corpus}:{speaker}", corpus, duration))
    return scan


def read_manifest(path: Path) -> CorpusScan:
    """Rows of a `path,emotion,speaker[,corpus,duration_s]` CSV; paths are relative to the file."""
    base = Path(path).parent
    scan = CorpusScan()
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "emotion", "speaker"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {', '.join(sorted(missing))}")
        for line, record in enumerate(reader, start=2):
            try:
                emotion_index(record["emotion"])
            except ValueError as error:
                raise ValueError(f"{path}:{line}: emotion: {error}") from None
            clip = base / record["path"]
            duration = record.get("duration_s") or soundfile.info(clip).duration
            corpus = record.get("corpus") or "manifest"
            scan.rows.append(ManifestRow(str(clip), record["emotion"], record["speaker"], corpus, float(duration)))
    return scan


def write_manifest(rows: list[ManifestRow], path: Path, extra: dict[str, list[str]] | None = None) -> None:
    """Write rows as CSV with absolute paths, plus optional extra columns (e.g. the split)."""
    extra = extra or {}
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*MANIFEST_FIELDS, *extra])
        for i, row in enumerate(rows):
            values = [str(Path(row.path).resolve()), row.emotion, row.speaker, row.corpus, f"{row.duration_s:.3f}"]
            writer.writerow(values + [column[i] for column in extra.values()])


def detect_corpora(root: Path) -> list[str]:
    """Which layouts `root` holds: `manifest` if it has a manifest.csv, else every corpus whose names occur."""
    if (Path(root) / MANIFEST_NAME).is_file():
        return ["manifest"]
    stems = [p.stem for p in _wav_files(Path(root))]
    found = [name for name, parse in PARSERS.items() if any(parse(s) is not None for s in stems)]
    if not found:
        raise ValueError(
            f"{root}: no {MANIFEST_NAME} and no WAV named like RAVDESS (03-01-05-01-02-01-12.wav), "
            "CREMA-D (1001_DFA_ANG_XX.wav) or TESS (OAF_back_angry.wav); pass --corpus"
        )
    return found


def load_corpus(root: Path, corpus: str = "auto") -> CorpusScan:
    """Scan `root` as the given corpus, or as every layout `detect_corpora` finds there."""
    root = Path(root)
    if corpus not in ("auto", *CORPORA):
        raise ValueError(f"corpus: unknown corpus {corpus!r}; expected auto or one of {', '.join(CORPORA)}")
    names = detect_corpora(root) if corpus == "auto" else [corpus]
    if names == ["manifest"]:
        return read_manifest(root / MANIFEST_NAME)
    return scan_named(root, names)


def load_corpora(roots: Sequence[Path], corpus: str = "auto") -> CorpusScan:
    """Several directories as one corpus (e.g. a real corpus plus generated speech). Rows keep their speaker
    names, so the same voice generated in two runs stays one speaker and never straddles a split."""
    merged = CorpusScan()
    for root in roots:
        scan = load_corpus(root, corpus)
        merged.rows += scan.rows
        merged.dropped += scan.dropped
    return merged


def load_audio(path: Path, sample_rate_hz: int) -> np.ndarray:
    """A clip as mono float32 at `sample_rate_hz` (channels averaged, polyphase resampling)."""
    audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    mono = audio.mean(axis=1)
    if rate != sample_rate_hz:
        divisor = np.gcd(rate, sample_rate_hz)
        mono = resample_poly(mono, sample_rate_hz // divisor, rate // divisor)
    return np.clip(mono, -1.0, 1.0).astype(np.float32)


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "emoloop" / "ser-features"


def cached_features(rows: list[ManifestRow], config: FeatureConfig, cache_dir: Path) -> list[np.ndarray]:
    """[T, 82] features of every row, computed once and kept as .npy files.

    The cache key covers the file (absolute path, size, modification time) and the whole feature config,
    so an edited clip or a changed feature parameter is never served stale rows.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    extractor = FeatureExtractor(config)
    params = json.dumps(config.to_dict(), sort_keys=True)
    out = []
    for row in tqdm(rows, desc="features", unit="clip", leave=False):
        path = Path(row.path).resolve()
        stat = path.stat()
        key = hashlib.sha256(f"{path}|{stat.st_size}|{stat.st_mtime_ns}|{params}".encode()).hexdigest()[:32]
        cached = cache_dir / f"{key}.npy"
        if cached.is_file():
            out.append(np.load(cached))
            continue
        features = extractor.extract(load_audio(path, config.sample_rate_hz))
        np.save(cached, features)
        out.append(features)
    return out


def add_cache_argument(parser: argparse.ArgumentParser) -> None:
    """--cache, where `cached_features` keeps features between runs: the same in training and evaluation."""
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="feature cache directory")


def add_corpus_arguments(parser: argparse.ArgumentParser) -> None:
    """--data and --corpus, read by `load_corpora(args.data, args.corpus)`: the same in every training command."""
    parser.add_argument(
        "--data", type=Path, nargs="+", required=True, help="corpus directory (several are read as one corpus)"
    )
    parser.add_argument("--corpus", default="auto", choices=["auto", *CORPORA], help="layout (default: detect)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.training.corpora",
        description="Scan emotional speech corpora, print what they hold, optionally write one manifest.",
    )
    add_corpus_arguments(parser)
    parser.add_argument("--out", type=Path, help="manifest CSV to write")
    args = parser.parse_args(argv)
    scan = load_corpora(args.data, args.corpus)
    print(scan.summary())
    if args.out:
        write_manifest(scan.rows, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
