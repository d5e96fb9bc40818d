"""The VITS decoder (HiFi-GAN generator) split off a Piper voice graph, run in chunks.

A Piper voice is one ONNX graph: text ids -> latent frames z [1, C, T] -> PCM. Decoding
all of z at once delays the first sample by the whole utterance, so the graph is cut at
z: the acoustic half runs per phrase, and the decoder runs on chunks of z padded with
`context_frames` real neighbouring frames on each side (its receptive field), whose
audio is cropped. Chunked output then equals whole-utterance output to float precision.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

DECODER_PREFIX = "/dec/"  # node-name scope of the generator in Piper's VITS exports


@dataclass(frozen=True)
class VitsGraphs:
    """The two halves of a voice graph, serialised for onnxruntime."""

    acoustic: bytes  # (input, input_lengths, scales) -> latent
    decoder: bytes  # latent -> output
    latent_name: str
    latent_channels: int


def split_vits(model_path: Path | str) -> VitsGraphs:
    """Cut a Piper VITS graph at the decoder's only outside input.

    Done in memory at load (about 0.5 s for a 63 MB voice) so no cache can go stale.
    """
    import onnx  # only here (run in a child process by split_vits_isolated): the onnx package costs ~10 MB
    from onnx.utils import Extractor

    model = onnx.load(str(model_path))
    graph = model.graph
    produced_inside = {out for node in graph.node if node.name.startswith(DECODER_PREFIX) for out in node.output}
    weights = {init.name: init for init in graph.initializer}
    outside = {
        name
        for node in graph.node
        if node.name.startswith(DECODER_PREFIX)
        for name in node.input
        if name and name not in produced_inside and name not in weights
    }
    if len(outside) != 1:
        raise ValueError(f"{model_path}: expected one input into the {DECODER_PREFIX} decoder, found {sorted(outside)}")
    (latent,) = outside
    first_conv = next(node for node in graph.node if latent in node.input and node.op_type == "Conv")
    channels = int(weights[first_conv.input[1]].dims[1])
    extractor = Extractor(model)
    inputs = [i.name for i in graph.input]
    outputs = [o.name for o in graph.output]
    return VitsGraphs(
        acoustic=extractor.extract_model(inputs, [latent]).SerializeToString(),
        decoder=extractor.extract_model([latent], outputs).SerializeToString(),
        latent_name=latent,
        latent_channels=channels,
    )


def split_vits_isolated(model_path: Path | str) -> VitsGraphs:
    """split_vits in a short-lived process, so this one never holds the whole graph's protobuf.

    Costs about a second at load; in return the load-time peak of a service with the joe voice drops from about
    420 MB to about 330 MB resident (measured), which is what counts against the memory budget.
    """
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(split_vits, str(model_path)).result()


def session(model: bytes, threads: int = 1) -> ort.InferenceSession:
    """CPU onnxruntime session.

    One thread by default: on a 2-core machine shared with other models, a 2-thread pool
    stalls whenever one of its threads is descheduled (first-chunk p50 rose from ~50 ms
    to ~150 ms under load); 0 lets onnxruntime use every core.
    """
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # No memory arena and no pre-packed weight copies: together ~90 MB less resident for the joe voice, with the
    # same speed (piper first chunk 42-44 ms either way, measured).
    options.enable_cpu_mem_arena = False
    options.add_session_config_entry("session.disable_prepacking", "1")
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


class Vocoder:
    """Latent frames [1, C, T] -> float32 PCM, whole or in overlapping chunks."""

    def __init__(self, decoder: ort.InferenceSession, latent_channels: int) -> None:
        self._session = decoder
        self._input = decoder.get_inputs()[0].name
        self.latent_channels = latent_channels
        self.hop_samples = self._run(np.zeros((1, latent_channels, 4), np.float32)).size // 4
        self.context_frames = self._receptive_field()

    def _run(self, z: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: z})[0].reshape(-1)

    def _receptive_field(self, probe_frames: int = 97) -> int:
        """Frames on each side that influence a frame's audio, found by perturbing one frame.

        Measured rather than assumed so any voice architecture (low/medium/high) works.
        """
        rng = np.random.default_rng(0)
        z = rng.standard_normal((1, self.latent_channels, probe_frames)).astype(np.float32)
        centre = probe_frames // 2
        before = self._run(z)
        z[:, :, centre] += 1.0
        changed = np.abs(self._run(z) - before).reshape(probe_frames, self.hop_samples).max(axis=1)
        frames = np.flatnonzero(changed > 1e-6)
        reach = int(max(centre - frames.min(), frames.max() - centre))
        if reach >= centre:
            raise ValueError(f"decoder receptive field exceeds the {probe_frames}-frame probe")
        return reach

    def decode(self, z: np.ndarray) -> np.ndarray:
        """Whole-utterance decode."""
        return self._run(z.astype(np.float32))

    def stream(self, z: np.ndarray, first_chunk_frames: int = 16, chunk_frames: int = 64) -> Iterator[np.ndarray]:
        """Decode chunk by chunk: a short first chunk for latency, then longer ones, which
        spend less of their time on the padding context."""
        total = z.shape[2]
        start, size = 0, first_chunk_frames
        while start < total:
            stop = min(total, start + size)
            lo = max(0, start - self.context_frames)
            hi = min(total, stop + self.context_frames)
            audio = self._run(np.ascontiguousarray(z[:, :, lo:hi], dtype=np.float32))
            yield audio[(start - lo) * self.hop_samples : (stop - lo) * self.hop_samples]
            start, size = stop, chunk_frames
