"""Generate acted-emotion training speech from the project's own offline voices.

    python -m emoloop.training.generate_data --out /tmp/emoloop-data [--sentences 12] [--seed 7]

No emotional-speech corpus and no SER weights can be downloaded here, so emoloop makes its own data: every
voice it has (espeak-ng languages with voice variants, the Piper joe voice, a subset of Kokoro's English
voices, flite's four 16 kHz voices, festival's three English voices, SVOX Pico's two, Gnuspeech's three)
speaks neutral-content sentences (`sentences.txt`) in all six emotions through the engines' own
`synthesize(text, emotion, voice, prosody=...)`.
The words never carry the label: each chosen sentence is spoken in every emotion by the same voice.

Acting varies, so every utterance gets its own prosody drawn around the table entry (`models/prosody.toml`):
an *intensity* k ~ U(0.7, 1.3) scales the entry's distance from neutral (semitones for pitch, log-ratios for
the ratios, jitter times k), then independent noise is added (SD 0.6 semitone of pitch level; log-SD 0.10 of
pitch range, 0.05 of rate, 0.10 of volume and of the VITS noise scales) and values are clipped to sensible
bounds (`BOUNDS`). Neutral gets the noise only. Neighbouring emotions (happy/angry, calm/sad) therefore
overlap, as real acting does. The same intensity scales the take's voice quality (`acting.toml`: spectral
tilt, breathiness, tremor, harshness; see acting.py), added to the rendering: gain augmentation erases
loudness, and pitch level means little for an unknown voice, but voice quality survives both.

A share of the training renderings (--world-pitch-probability, default 0.3) takes the Piper engine's route to
emotional pitch: the engine speaks with the take's rate, volume and noise but a flat pitch, and the take's pitch
level, range and jitter are then put on the audio by the WORLD editor (models/pitch.py), around the rendering's
own median F0. So WORLD's colouring is heard with every emotion, in every voice, and is no cue to any of them;
and what WORLD-edited pitch sounds like is learnt on the training voices, not met first on an unseen one.
Another share (--world-round-trip-probability, default 0.3) is spoken by the engine as usual and then sent
through an unedited WORLD analysis-synthesis round trip, so WORLD's colouring is also heard over the engines' own
intonation. Held-out voices always take their engine's own route: they stand for what the engines say.

Each rendering (resampled to 16 kHz mono) is written `--copies` times: copy 0 with only a random gain, the
others through random augmentation: gain U(-6, +6) dB, speed x U(0.95, 1.05) (half of them), light
reverberation (40 %: exponentially decaying noise impulse response, RT60 U(0.15, 0.6) s, direct-to-reverberant
ratio 5 dB), and white or pink noise at an SNR drawn from clean, 20, 15, 10, 5 dB (signal power over noise
power of the whole clip, as evaluate_ser's --noise-snr-db measures it).

Held-out TEST voices (never trained or validated on) are chosen explicitly (`TEST_VOICES`, or --test-voices)
and written to `test_speakers.txt` for `train_ser --test-speakers`. Written to --out: wav/<speaker>/*.wav,
manifest.csv (path,emotion,speaker,corpus,duration_s + engine, voice, split, sentence id, augmentation,
prosody and voice quality used, pitch route), test-voices/manifest.csv and test-<engine>/manifest.csv
(the held-out clips only, for evaluate_ser), test_speakers.txt and generation.json (the settings).
`--jobs N` renders N voices at a time in worker processes; every voice has its own random generator, so what
is acted and how each copy is augmented do not depend on N (espeak-ng's output can differ by a few samples
with the voice it spoke before).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile
from scipy.signal import fftconvolve, resample_poly
from tqdm import tqdm

from emoloop.models.audio import resample
from emoloop.models.emotions import EMOTIONS
from emoloop.models.pitch import F0Edit, estimate_f0, resynthesize
from emoloop.models.prosody import Prosody, prosody_for
from emoloop.models.tts import ENGINES, TtsEngine, festival, flite, gnuspeech, load_engine, pico
from emoloop.training import acting

SAMPLE_RATE_HZ = 16000
SENTENCES_FILE = Path(__file__).with_name("sentences.txt")
CORPUS = "emoloop-tts"

# espeak-ng: five accents x eight voice variants for training and validation; the test voices use an
# accent and a variant that no training voice has. ("en-gb" itself is listed by espeak-ng but not
# accepted by espeak_SetVoiceByName, so it is left out.)
ESPEAK_ACCENTS = ("en-us", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us-nyc")
ESPEAK_VARIANTS = ("m1", "m2", "m3", "m4", "m7", "f1", "f2", "f3")
KOKORO_VOICES = (
    *("af_alloy", "af_aoede", "af_bella", "af_jessica", "af_kore", "af_nicole", "af_nova", "af_river", "af_sarah"),
    *("af_sky", "am_adam", "am_echo", "am_eric", "am_fenrir", "am_liam", "am_michael", "am_onyx", "am_puck"),
    *("am_santa", "bf_alice", "bf_emma", "bf_isabella", "bf_lily", "bm_daniel", "bm_fable", "bm_george"),
)
PIPER_VOICE = "piper:en_US-joe-medium"
TEST_VOICES = ("espeak:en-gb-scotland+f4", "espeak:en-029+m6", "kokoro:af_heart", "kokoro:bm_lewis", PIPER_VOICE)
DEFAULT_VOICES = (
    *(f"espeak:{accent}+{variant}" for accent in ESPEAK_ACCENTS for variant in ESPEAK_VARIANTS),
    *(f"kokoro:{name}" for name in KOKORO_VOICES),
    # The program engines (system programs) add families of synthesis beside formants and the neural voices:
    # flite's diphone and clustergen voices, festival's LPC diphone and HTS voices; all they offer. And
    # SVOX Pico's two English HMM voices (a Python package) and Gnuspeech's three adult articulatory voices.
    *(f"flite:{name}" for name in flite.VOICES),
    *(f"festival:{name}" for name in festival.VOICES),
    *(f"pico:{name}" for name in pico.VOICES),
    *(f"gnuspeech:{name}" for name in gnuspeech.VOICES),
    *TEST_VOICES,
)

# Per-utterance acting variation (see the module docstring).
INTENSITY = (0.7, 1.3)
PITCH_SD_SEMITONES = 0.6
LOG_SD = {"pitch_range_ratio": 0.10, "rate_ratio": 0.05, "volume_ratio": 0.10, "noise_scale_ratio": 0.10}
LOG_SD["noise_w_ratio"] = LOG_SD["noise_scale_ratio"]
BOUNDS = {
    "pitch_shift_semitones": (-6.0, 8.0),
    "pitch_range_ratio": (0.4, 2.2),
    "rate_ratio": (0.7, 1.4),
    "volume_ratio": (0.4, 1.8),
    "jitter_semitones": (0.0, 0.8),
    "noise_scale_ratio": (0.5, 1.6),
    "noise_w_ratio": (0.5, 1.8),
}

WORLD_PITCH_PROBABILITY = 0.3  # default share of training renderings whose pitch WORLD puts on
WORLD_ROUND_TRIP_PROBABILITY = 0.3  # default share sent through WORLD with their pitch unchanged

# Augmentation of copies 1.. (copy 0 gets the gain only).
GAIN_DB = (-6.0, 6.0)
SPEED = (0.95, 1.05)
SPEED_PROBABILITY = 0.5
REVERB_PROBABILITY = 0.4
RT60_S = (0.15, 0.6)
DIRECT_TO_REVERB_DB = 5.0
SNRS_DB = (None, 20.0, 15.0, 10.0, 5.0)  # None: clean
PEAK = 0.99


@dataclass(frozen=True)
class Augmentation:
    """What was done to one copy of a rendering; every field is written to the manifest."""

    gain_db: float = 0.0
    speed: float = 1.0
    rt60_s: float = 0.0  # 0: dry
    snr_db: float | None = None  # None: clean
    noise: str = ""  # "white" or "pink" when snr_db is set

    @property
    def label(self) -> str:
        parts = ["gain"]
        parts += ["speed"] if self.speed != 1.0 else []
        parts += ["reverb"] if self.rt60_s else []
        parts += [f"{self.noise}-noise"] if self.snr_db is not None else []
        return "+".join(parts)


def read_sentences(path: Path = SENTENCES_FILE) -> list[str]:
    """Non-empty, non-comment lines of the sentence file."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def vary_prosody(entry: Prosody, k: float, rng: np.random.Generator) -> Prosody:
    """One actor's take on a table entry: distance from neutral scaled by intensity `k`, plus independent noise."""
    neutral = prosody_for("neutral")
    values = {}
    for field in dataclasses.fields(Prosody):
        name, base, centre = field.name, getattr(entry, field.name), getattr(neutral, field.name)
        if name == "pitch_shift_semitones":
            value = centre + k * (base - centre) + rng.normal(0.0, PITCH_SD_SEMITONES)
        elif name == "jitter_semitones":
            value = k * base
        else:
            value = centre * (base / centre) ** k * np.exp(rng.normal(0.0, LOG_SD[name]))
        values[name] = float(np.clip(value, *BOUNDS[name]))
    return Prosody(**values)


def draw_augmentation(rng: np.random.Generator, clean: bool) -> Augmentation:
    """Random settings for one copy; a `clean` copy only gets a gain."""
    gain = float(rng.uniform(*GAIN_DB))
    if clean:
        return Augmentation(gain_db=gain)
    speed = float(rng.uniform(*SPEED)) if rng.random() < SPEED_PROBABILITY else 1.0
    rt60 = float(rng.uniform(*RT60_S)) if rng.random() < REVERB_PROBABILITY else 0.0
    snr = SNRS_DB[rng.integers(len(SNRS_DB))]
    noise = str(rng.choice(["white", "pink"])) if snr is not None else ""
    return Augmentation(gain, speed, rt60, snr, noise)


def change_speed(audio: np.ndarray, factor: float) -> np.ndarray:
    """Play `factor` times faster (tempo and pitch together, like a tape), by resampling."""
    ratio = Fraction(factor).limit_denominator(100)
    return resample_poly(audio, ratio.denominator, ratio.numerator).astype(np.float32)


def reverberate(audio: np.ndarray, rt60_s: float, rng: np.random.Generator) -> np.ndarray:
    """Light room: a direct path plus exponentially decaying noise (60 dB down after rt60_s), same RMS."""
    t = np.arange(int(rt60_s * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    tail = rng.standard_normal(t.size) * np.exp(-np.log(1000.0) * t / rt60_s)
    tail *= np.sqrt(10 ** (-DIRECT_TO_REVERB_DB / 10) / max(np.sum(tail**2), 1e-12))
    impulse = np.concatenate([[1.0], tail[1:]])
    wet = fftconvolve(audio, impulse)[: audio.size]
    return (wet * np.sqrt(np.mean(audio**2) / max(np.mean(wet**2), 1e-12))).astype(np.float32)


def noise_like(size: int, color: str, rng: np.random.Generator) -> np.ndarray:
    """White noise, or pink (power falling as 1/f) shaped in the frequency domain."""
    white = rng.standard_normal(size)
    if color == "white":
        return white
    spectrum = np.fft.rfft(white)
    spectrum[1:] /= np.sqrt(np.arange(1, spectrum.size))
    return np.fft.irfft(spectrum, size)


def add_noise(audio: np.ndarray, snr_db: float, color: str, rng: np.random.Generator) -> np.ndarray:
    """Add noise so that mean signal power / mean noise power over the clip is `snr_db`."""
    noise = noise_like(audio.size, color, rng)
    scale = np.sqrt(np.mean(audio**2) / (10 ** (snr_db / 10)) / max(np.mean(noise**2), 1e-12))
    return (audio + scale * noise).astype(np.float32)


def augment(audio: np.ndarray, settings: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """Speed, reverberation, gain, noise, in that order; scaled down (SNR kept) if it would clip."""
    out = audio
    if settings.speed != 1.0:
        out = change_speed(out, settings.speed)
    if settings.rt60_s:
        out = reverberate(out, settings.rt60_s, rng)
    out = out * 10 ** (settings.gain_db / 20)
    if settings.snr_db is not None:
        out = add_noise(out, settings.snr_db, settings.noise, rng)
    peak = float(np.max(np.abs(out), initial=0.0))
    return (out * (PEAK / peak) if peak > PEAK else out).astype(np.float32)


def render(engine: TtsEngine, text: str, emotion: str, voice: str, prosody: Prosody) -> np.ndarray:
    """One utterance through the engine with an overriding prosody, as 16 kHz mono float32."""
    chunks = list(engine.synthesize(text, emotion, voice, prosody=prosody))
    audio = np.concatenate([c.samples for c in chunks]) if chunks else np.zeros(0, np.float32)
    rate = chunks[0].sample_rate_hz if chunks else SAMPLE_RATE_HZ
    return resample(audio.astype(np.float32), rate, SAMPLE_RATE_HZ) if rate != SAMPLE_RATE_HZ else audio


def flat_pitch(prosody: Prosody) -> Prosody:
    """The take without its pitch edits, for an engine that is to speak it at its own pitch."""
    return dataclasses.replace(prosody, pitch_shift_semitones=0.0, pitch_range_ratio=1.0, jitter_semitones=0.0)


def pitch_in_world(audio: np.ndarray, prosody: Prosody, rng: np.random.Generator) -> np.ndarray:
    """The take's pitch level, range and jitter put on a flat rendering by WORLD, as the Piper engine does; the
    pivot is the rendering's median voiced F0 (Piper's is its voice's)."""
    f0 = estimate_f0(audio, SAMPLE_RATE_HZ)
    center = float(np.median(f0[f0 > 0])) if np.any(f0 > 0) else 100.0  # nothing voiced: nothing to edit
    return resynthesize(audio, SAMPLE_RATE_HZ, F0Edit.for_prosody(center, prosody), rng, f0)


def draw_route(u: float, args: argparse.Namespace) -> str:
    """The pitch route of a training rendering from one uniform draw, so the shares add up and setting one to 0
    leaves the other's renderings as they were."""
    if u < args.world_pitch_probability:
        return "world"
    if u < args.world_pitch_probability + args.world_round_trip_probability:
        return "round-trip"
    return "engine"


def speaker_rng(seed: int, speaker: str) -> np.random.Generator:
    """A generator per voice, so adding or removing a voice leaves every other voice's data unchanged."""
    return np.random.default_rng([seed, zlib.crc32(speaker.encode())])


@dataclass(frozen=True)
class Take:
    """What was acted in one clip: the label, the sentence, the copy and the acting drawn for it."""

    emotion: str
    sentence_id: int
    copy: int
    intensity: float
    prosody: Prosody
    quality: acting.VoiceQuality
    pitch_route: str  # "engine", "world" (pitch put on by WORLD) or "round-trip" (engine pitch, through WORLD)


_ENGINES: dict[str, TtsEngine] = {}


def engine_for(name: str, seed: int) -> TtsEngine:
    """The engine in this (worker) process, loaded once: each worker renders whole voices."""
    if name not in _ENGINES:
        options = {
            "piper": {"seed": seed},
            "kokoro": {"seed": seed, "threads": 1},
            "espeak": {},
            "flite": {"seed": seed},
            "festival": {"seed": seed},
            "pico": {"seed": seed},
            "gnuspeech": {"seed": seed},
        }
        _ENGINES[name] = load_engine(name, **options[name])
    return _ENGINES[name]


def sentence_counts(args: argparse.Namespace) -> dict[str, int]:
    return {
        "espeak": args.sentences,
        "piper": args.piper_sentences,
        "kokoro": args.kokoro_sentences,
        "flite": args.flite_sentences,
        "festival": args.festival_sentences,
        "pico": args.pico_sentences,
        "gnuspeech": args.gnuspeech_sentences,
    }


def render_voice(speaker: str, sentences: list[str], count: int, args: argparse.Namespace) -> list[dict[str, object]]:
    """Every chosen sentence x emotion x copy of one voice; its own generator makes it independent of the rest."""
    engine_name, voice = speaker.split(":", 1)
    engine = engine_for(engine_name, args.seed)
    rng = speaker_rng(args.seed, speaker)
    held_out = speaker in args.test_voices
    chosen = rng.choice(len(sentences), size=min(count, len(sentences)), replace=False)
    folder = args.out / "wav" / speaker.replace(":", "_")
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for sentence_id in sorted(int(i) for i in chosen):
        for emotion in EMOTIONS:
            intensity = rng.uniform(*INTENSITY)
            prosody = vary_prosody(prosody_for(emotion), intensity, rng)
            quality = acting.vary(emotion, intensity, rng)
            route = "engine" if held_out else draw_route(rng.random(), args)
            # Noise whose length follows the audio draws from a child generator, so that the takes and
            # augmentations drawn from `rng` do not depend on how long the engine's rendering came out.
            if route == "world":
                flat = render(engine, sentences[sentence_id], emotion, voice, flat_pitch(prosody))
                audio = pitch_in_world(flat, prosody, rng.spawn(1)[0])
            else:
                audio = render(engine, sentences[sentence_id], emotion, voice, prosody)
                if route == "round-trip":
                    audio = pitch_in_world(audio, flat_pitch(prosody), rng.spawn(1)[0])  # no edit, all WORLD
            audio = acting.act(audio, quality, rng.spawn(1)[0])
            for copy in range(args.copies):
                settings = draw_augmentation(rng, clean=copy == 0)
                path = folder / f"{emotion}_s{sentence_id:03d}_c{copy}.wav"
                clip = augment(audio, settings, rng.spawn(1)[0])
                soundfile.write(path, clip, SAMPLE_RATE_HZ, subtype="PCM_16")
                take = Take(emotion, sentence_id, copy, intensity, prosody, quality, route)
                rows.append(manifest_row(path, args.out, speaker, take, settings, args))
    return rows


def generate(args: argparse.Namespace) -> list[dict[str, object]]:
    """Render every voice (in --jobs worker processes); returns the manifest rows in voice order."""
    sentences = read_sentences(args.sentences_file)
    voices = [v for v in args.voices if v.split(":")[0] in args.engines]
    counts = sentence_counts(args)
    per_voice = {v: min(counts[v.split(":")[0]], len(sentences)) * len(EMOTIONS) for v in voices}
    progress = tqdm(total=sum(per_voice.values()), desc="render", unit="utt")
    results: dict[str, list[dict[str, object]]] = {}
    if args.jobs == 1:
        for v in voices:
            results[v] = render_voice(v, sentences, counts[v.split(":")[0]], args)
            progress.update(per_voice[v])
    else:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(args.jobs, mp_context=context) as pool:
            futures = {pool.submit(render_voice, v, sentences, counts[v.split(":")[0]], args): v for v in voices}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                progress.update(per_voice[futures[future]])
    progress.close()
    return [row for v in voices for row in results[v]]


def manifest_row(
    path: Path, root: Path, speaker: str, take: Take, settings: Augmentation, args: argparse.Namespace
) -> dict[str, object]:
    engine, voice = speaker.split(":", 1)
    return {
        "path": str(path.relative_to(root)),
        "emotion": take.emotion,
        "speaker": speaker,
        "corpus": CORPUS,
        "duration_s": f"{soundfile.info(path).duration:.3f}",
        "engine": engine,
        "voice": voice,
        "split": "test" if speaker in args.test_voices else "train/val",
        "sentence_id": take.sentence_id,
        "copy": take.copy,
        "augmentation": settings.label,
        "snr_db": "" if settings.snr_db is None else f"{settings.snr_db:g}",
        "gain_db": f"{settings.gain_db:.2f}",
        "speed": f"{settings.speed:.4f}",
        "rt60_s": f"{settings.rt60_s:.3f}",
        "intensity": f"{take.intensity:.3f}",
        **{f"prosody_{k}": f"{v:.3f}" for k, v in dataclasses.asdict(take.prosody).items()},
        **{f"acting_{k}": f"{v:.3f}" for k, v in dataclasses.asdict(take.quality).items()},
        "pitch_route": take.pitch_route,
    }


def write_csv(rows: list[dict[str, object]], path: Path, prefix: str = "") -> None:
    """A manifest; `prefix` is prepended to every path (subset manifests point back up to wav/)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "path": prefix + str(row["path"])})


def write_outputs(rows: list[dict[str, object]], args: argparse.Namespace, seconds: float) -> None:
    """The main manifest, held-out subset manifests, the test-speaker list and the settings."""
    write_csv(rows, args.out / "manifest.csv")
    test_rows = [r for r in rows if r["split"] == "test"]
    if test_rows:
        write_csv(test_rows, args.out / "test-voices" / "manifest.csv", prefix="../")
        for engine in sorted({str(r["engine"]) for r in test_rows}):
            subset = [r for r in test_rows if r["engine"] == engine]
            write_csv(subset, args.out / f"test-{engine}" / "manifest.csv", prefix="../")
    present = sorted({str(r["speaker"]) for r in rows})
    test_speakers = [s for s in present if s in args.test_voices]
    (args.out / "test_speakers.txt").write_text(",".join(test_speakers) + "\n")
    settings = {
        "seed": args.seed,
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "copies": args.copies,
        "sentences_per_voice": sentence_counts(args),
        "voices": present,
        "test_voices": test_speakers,
        "clips": len(rows),
        "hours": round(sum(float(r["duration_s"]) for r in rows) / 3600, 3),
        "wall_time_s": round(seconds, 1),
        "prosody_variation": {"intensity": INTENSITY, "pitch_sd_semitones": PITCH_SD_SEMITONES, "log_sd": LOG_SD},
        "acting": {name: dataclasses.asdict(q) for name, q in acting.load_table()[0].items()},
        "acting_variation": dataclasses.asdict(acting.load_table()[1]),
        "world_pitch_probability": args.world_pitch_probability,
        "world_round_trip_probability": args.world_round_trip_probability,
        "bounds": BOUNDS,
        "augmentation": {
            "gain_db": GAIN_DB,
            "speed": SPEED,
            "speed_probability": SPEED_PROBABILITY,
            "reverb_probability": REVERB_PROBABILITY,
            "rt60_s": RT60_S,
            "direct_to_reverb_db": DIRECT_TO_REVERB_DB,
            "snrs_db": SNRS_DB,
        },
    }
    (args.out / "generation.json").write_text(json.dumps(settings, indent=2) + "\n")


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m emoloop.training.generate_data",
        description="Render acted-emotion speech from emoloop's offline voices, with augmentation and a manifest.",
    )
    parser.add_argument("--out", type=Path, required=True, help="output directory (created)")
    parser.add_argument("--sentences", type=int, default=10, help="sentences per espeak voice (default 10)")
    parser.add_argument("--piper-sentences", type=int, default=24, help="sentences for the Piper voice (default 24)")
    parser.add_argument("--kokoro-sentences", type=int, default=8, help="sentences per Kokoro voice (default 8)")
    parser.add_argument("--flite-sentences", type=int, default=24, help="sentences per flite voice (default 24)")
    parser.add_argument("--festival-sentences", type=int, default=24, help="sentences per festival voice (default 24)")
    parser.add_argument("--pico-sentences", type=int, default=40, help="sentences per Pico voice (default 40)")
    parser.add_argument(
        "--gnuspeech-sentences", type=int, default=40, help="sentences per Gnuspeech voice (default 40)"
    )
    parser.add_argument("--copies", type=int, default=2, help="copies per rendering: 1 clean + augmented (default 2)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=1, help="worker processes, one voice each at a time (default 1)")
    parser.add_argument("--engines", type=_names, default=list(ENGINES), help="comma-separated")
    parser.add_argument("--voices", type=_names, default=list(DEFAULT_VOICES), help="comma-separated engine:voice")
    parser.add_argument("--test-voices", type=_names, default=list(TEST_VOICES), help="held-out engine:voice list")
    parser.add_argument("--sentences-file", type=Path, default=SENTENCES_FILE)
    parser.add_argument(
        "--world-pitch-probability",
        type=float,
        default=WORLD_PITCH_PROBABILITY,
        help=f"share of training renderings whose pitch the WORLD editor puts on (default {WORLD_PITCH_PROBABILITY})",
    )
    parser.add_argument(
        "--world-round-trip-probability",
        type=float,
        default=WORLD_ROUND_TRIP_PROBABILITY,
        help="share of training renderings sent through WORLD with their pitch unchanged "
        f"(default {WORLD_ROUND_TRIP_PROBABILITY})",
    )
    args = parser.parse_args(argv)
    for name in ("world_pitch_probability", "world_round_trip_probability"):
        if not 0.0 <= getattr(args, name) <= 1.0:
            parser.error(f"--{name.replace('_', '-')} must be between 0 and 1")
    if args.world_pitch_probability + args.world_round_trip_probability > 1.0:
        parser.error("--world-pitch-probability and --world-round-trip-probability add up to more than 1")
    if args.copies < 1:
        parser.error("--copies must be at least 1")
    if args.jobs < 1:
        parser.error("--jobs must be at least 1")
    unknown = [v for v in args.voices if ":" not in v or v.split(":")[0] not in ENGINES]
    if unknown:
        parser.error(f"--voices: not engine:voice with a known engine: {unknown}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    rows = generate(args)
    if not rows:
        raise SystemExit("no clips generated: check --engines and --voices")
    write_outputs(rows, args, time.perf_counter() - start)
    hours = sum(float(r["duration_s"]) for r in rows) / 3600
    test = (args.out / "test_speakers.txt").read_text().strip()
    print(f"{len(rows)} clips, {hours:.2f} h, {len({r['speaker'] for r in rows})} voices in {args.out}")
    print(f"train with: --test-speakers {test}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
