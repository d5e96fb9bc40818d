"""Render the demo's sample utterances from a held-out voice and record what the shipped model hears.

    python -m emoloop.training.make_samples --checkpoint models/ser/ser.pt --out samples

For every emotion, a few candidate sentences are spoken by a voice the model never trained on, with the
shipped prosody table and the acted voice quality of `acting.toml` at intensity 1 (no random variation,
no augmentation). The recogniser classifies each candidate;
the kept sample is the candidate it gets right with the highest probability (or, when it gets none right,
the one with the highest probability for the intended emotion), and samples/README.md says which, with
every candidate's result (printed as a Markdown table), so the selection is visible rather than hidden.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import FeatureExtractor
from emoloop.models.prosody import prosody_for
from emoloop.models.ser import SerRecognizer
from emoloop.models.tts import load_engine
from emoloop.training import acting
from emoloop.training.generate_data import SAMPLE_RATE_HZ, read_sentences, render

DURATION_S = (2.0, 4.0)


def candidate_sentences(count: int) -> list[str]:
    """Short sentences (5-9 words); only renderings of 2-4 s are kept (rate differs by emotion and engine)."""
    return [s for s in read_sentences() if 5 <= len(s.split()) <= 9][:count]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m emoloop.training.make_samples", description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", type=Path, default=Path("models/ser/ser.pt"))
    parser.add_argument("--out", type=Path, default=Path("samples"))
    parser.add_argument("--voice", default="kokoro:af_heart", help="engine:voice, a held-out voice")
    parser.add_argument("--candidates", type=int, default=5, help="sentences tried per emotion")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)

    engine_name, voice = args.voice.split(":", 1)
    engine = load_engine(engine_name, **({"seed": args.seed} if engine_name != "espeak" else {}))
    recognizer = SerRecognizer.load(args.checkpoint)
    extractor = FeatureExtractor(recognizer.checkpoint.feature_config)
    args.out.mkdir(parents=True, exist_ok=True)
    print("| file | sentence | s | model says (p of intended) | candidates right: each candidate's answer |")
    print("|---|---|---|---|---|")
    for emotion in EMOTIONS:
        tried = []
        for sentence in candidate_sentences(args.candidates):
            audio = render(engine, sentence, emotion, voice, prosody_for(emotion))
            audio = acting.act(audio, acting.load_table()[0][emotion], np.random.default_rng(args.seed))
            if not DURATION_S[0] <= audio.size / SAMPLE_RATE_HZ <= DURATION_S[1]:
                continue
            result = recognizer.recognize(extractor.extract(audio))
            tried.append((sentence, audio, result))
        if not tried:
            raise SystemExit(f"{emotion}: no candidate lasted {DURATION_S[0]}-{DURATION_S[1]} s; try --candidates")
        right = [t for t in tried if t[2].emotion == emotion]
        target = EMOTIONS.index(emotion)
        sentence, audio, result = max(right or tried, key=lambda t: t[2].probabilities[target])
        soundfile.write(args.out / f"{emotion}.wav", audio, SAMPLE_RATE_HZ, subtype="PCM_16")
        summary = ", ".join(f"{t[2].emotion} {t[2].confidence:.2f}" for t in tried)
        print(
            f"| `{emotion}.wav` | {sentence} | {audio.size / SAMPLE_RATE_HZ:.2f} | **{result.emotion}** "
            f"({result.probabilities[target]:.2f} for {emotion}) | {len(right)}/{len(tried)}: {summary} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
