"""Speech emotion recognition: a CNN-BiLSTM over feature frames, its checkpoint, streaming use and export.

The model reads normalised [T, 82] feature rows (see features.py) at 100 frames/s and keeps that rate: a
few 1-D convolutions over time (the 82 features are the channels) give each frame ±2 frames of context per
block, a 2-layer BiLSTM gives it the utterance, and a linear head gives every frame six emotion logits plus
one salience score. The utterance decision is *attention pooling over the frame logits*: a softmax of the
salience scores over the valid frames weights the frame logits (`pool`). Emotion is carried by a few
salient stretches (a stressed word, a laugh), which a plain mean dilutes; pooling the frame logits rather
than hidden states keeps frame and utterance outputs in the same space, so the interim per-frame
posteriors a stream shows are the very numbers the utterance result is made of. Training adds a
frame-level loss so that those frame posteriors are meaningful on their own (the policy uses their
mean, max and spread).

A checkpoint is a state-dict file plus a JSON sidecar beside it (labels, sample rate, feature config,
normaliser statistics, model config, training config, data description, metrics); loading refuses a
sidecar whose labels or feature parameters differ from this build's, naming the field.

Run time: `SerRecognizer` wraps a checkpoint and a backend (torch, ONNX Runtime, or Core ML on macOS);
`SerStream` is one audio stream's state. It runs the model on a sliding window of at most
`window_frames` frames, so the cost of a block does not grow with the stream, and keeps at most
`max_utterance_frames` frames for the utterance result. This module never imports gRPC or training code.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import itertools
import json
import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import FeatureConfig, FeatureNormalizer

SIDECAR_FORMAT = 1
ONNX_OPSET = 17


DEFAULT_CHECKPOINT = Path(__file__).parent / "ser" / "ser.pt"
"""The shipped model, trained by `make train-ser` on emoloop's generated acted-emotion data (see README)."""


@dataclass(frozen=True)
class SerConfig:
    """Shape of a SerModel; stored in the checkpoint sidecar. The defaults give about 3.2 M parameters."""

    n_features: int = 82
    n_classes: int = len(EMOTIONS)
    conv_channels: tuple[int, ...] = (128, 256, 256)
    conv_kernel: int = 5
    lstm_hidden: int = 256
    lstm_layers: int = 2
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.conv_kernel % 2 != 1:
            raise ValueError("conv_kernel must be odd, so a frame's output stays centred on it")
        if not self.conv_channels:
            raise ValueError("conv_channels must name at least one convolution block")

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "conv_channels": list(self.conv_channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SerConfig:
        """Build from a stored dict; unknown keys are refused rather than silently dropped."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"model_config: unknown SerConfig field(s): {', '.join(unknown)}")
        values = dict(data)
        if "conv_channels" in values:
            values["conv_channels"] = tuple(values["conv_channels"])
        return cls(**values)


def frame_mask(lengths: torch.Tensor, n_frames: int) -> torch.Tensor:
    """[B, T] bool, True on the first lengths[b] frames of row b."""
    return torch.arange(n_frames, device=lengths.device)[None, :] < lengths[:, None]


class _ConvBlock(nn.Module):
    """Conv1d over time (same length, centred), ReLU, LayerNorm over channels, dropout."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel, padding=kernel // 2)
        self.norm = nn.LayerNorm(out_channels)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C_in] -> [B, T, C_out]
        y = torch.relu(self.conv(x.transpose(1, 2))).transpose(1, 2)
        return self.dropout(self.norm(y))


class SerModel(nn.Module):
    """CNN front end + BiLSTM + linear head: frame logits at the feature frame rate."""

    def __init__(self, config: SerConfig | None = None) -> None:
        super().__init__()
        self.config = config or SerConfig()
        c = self.config
        widths = (c.n_features, *c.conv_channels)
        self.convs = nn.ModuleList(_ConvBlock(i, o, c.conv_kernel, c.dropout) for i, o in itertools.pairwise(widths))
        self.lstm = nn.LSTM(
            c.conv_channels[-1],
            c.lstm_hidden,
            num_layers=c.lstm_layers,
            batch_first=True,
            bidirectional=True,
            dropout=c.dropout if c.lstm_layers > 1 else 0.0,
        )
        self.dropout = nn.Dropout(c.dropout)
        # n_classes logits plus one salience score per frame, the latter used only by `pool`.
        self.head = nn.Linear(2 * c.lstm_hidden, c.n_classes + 1)

    def frame_outputs(
        self, features: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame logits [B, T, n_classes] and salience scores [B, T] for normalised features [B, T, F].

        With `lengths`, frames past each row's length are padding: they are zeroed between blocks and
        the LSTM runs packed, so valid frames get exactly the outputs they would get unpadded.
        """
        mask = None if lengths is None else frame_mask(lengths, features.shape[1])[..., None].to(features.dtype)
        x = features
        for block in self.convs:
            x = block(x if mask is None else x * mask)
        if mask is not None:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            x = pad_packed_sequence(self.lstm(packed)[0], batch_first=True, total_length=features.shape[1])[0]
        else:
            x = self.lstm(x)[0]
        out = self.head(self.dropout(x))
        return out[..., :-1], out[..., -1]

    def forward(self, features: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Frame logits [B, T, n_classes]."""
        return self.frame_outputs(features, lengths)[0]


def pool(frame_logits: torch.Tensor, scores: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Utterance logits [B, C]: frame logits weighted by a softmax of the salience scores over valid frames."""
    if lengths is not None:
        scores = scores.masked_fill(~frame_mask(lengths, scores.shape[1]), float("-inf"))
    weights = torch.softmax(scores, dim=1)
    return (weights[..., None] * frame_logits).sum(dim=1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def select_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; an explicit device that is not available is an error."""
    available = {
        "cuda": torch.cuda.is_available(),
        "mps": torch.backends.mps.is_available(),
        "cpu": True,
    }
    if name == "auto":
        return torch.device(next(d for d in ("cuda", "mps", "cpu") if available[d]))
    if name not in available:
        raise ValueError(f"device: unknown device {name!r}; expected auto, cpu, cuda or mps")
    if not available[name]:
        raise ValueError(f"device: {name} is not available on this machine")
    return torch.device(name)


# --- checkpoint -------------------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded model with everything needed to feed it: feature config and normaliser."""

    model: SerModel
    feature_config: FeatureConfig
    normalizer: FeatureNormalizer
    sidecar: dict[str, Any]
    device: torch.device


def sidecar_path(checkpoint_path: Path) -> Path:
    return Path(checkpoint_path).with_suffix(".json")


def save_checkpoint(
    path: Path,
    model: SerModel,
    normalizer: FeatureNormalizer,
    feature_config: FeatureConfig,
    training: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> Path:
    """Write the state dict to `path` and the sidecar to `path` with a .json suffix; returns the sidecar."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    sidecar = {
        "format": SIDECAR_FORMAT,
        "labels": list(EMOTIONS),
        "sample_rate_hz": feature_config.sample_rate_hz,
        "feature_config": feature_config.to_dict(),
        "normalizer": normalizer.to_dict(),
        "model_config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "training": training or {},
        "data": data or {},
        "metrics": metrics or {},
    }
    out = sidecar_path(path)
    out.write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


def check_sidecar(sidecar: dict[str, Any], feature_config: FeatureConfig | None = None) -> None:
    """Raise ValueError naming the field when the sidecar does not fit this build (and these features)."""
    for field in ("labels", "sample_rate_hz", "feature_config", "normalizer", "model_config"):
        if field not in sidecar:
            raise ValueError(f"{field}: missing from the checkpoint sidecar")
    if sidecar.get("format") != SIDECAR_FORMAT:
        raise ValueError(f"format: sidecar format {sidecar.get('format')!r}, this build reads {SIDECAR_FORMAT}")
    if list(sidecar["labels"]) != list(EMOTIONS):
        raise ValueError(f"labels: checkpoint has {sidecar['labels']}, this build uses {list(EMOTIONS)}")
    try:
        stored = FeatureConfig.from_dict(sidecar["feature_config"])
        (feature_config or FeatureConfig()).check_compatible(stored)
    except (TypeError, ValueError) as error:
        raise ValueError(f"feature_config: {error}") from None
    if sidecar["sample_rate_hz"] != stored.sample_rate_hz:
        raise ValueError("sample_rate_hz: differs from feature_config.sample_rate_hz in the sidecar")
    config = SerConfig.from_dict(sidecar["model_config"])
    if config.n_features != stored.n_features:
        raise ValueError(f"model_config.n_features: {config.n_features} != {stored.n_features} feature columns")
    if config.n_classes != len(EMOTIONS):
        raise ValueError(f"model_config.n_classes: {config.n_classes} != {len(EMOTIONS)} labels")


def load_checkpoint(path: Path, device: str = "auto", feature_config: FeatureConfig | None = None) -> Checkpoint:
    """Load a checkpoint after checking its sidecar against this build and `feature_config` (default: defaults)."""
    path = Path(path)
    sidecar = json.loads(sidecar_path(path).read_text())
    check_sidecar(sidecar, feature_config)
    target = select_device(device)
    model = SerModel(SerConfig.from_dict(sidecar["model_config"]))
    model.load_state_dict(torch.load(path, map_location=target, weights_only=True))
    model.to(target).eval()
    return Checkpoint(
        model=model,
        feature_config=FeatureConfig.from_dict(sidecar["feature_config"]),
        normalizer=FeatureNormalizer.from_dict(sidecar["normalizer"]),
        sidecar=sidecar,
        device=target,
    )


# --- export -----------------------------------------------------------------------------------------


class _Exportable(nn.Module):
    """The unpadded inference path (no lengths) of a CPU copy in eval mode: features -> (logits, scores)."""

    def __init__(self, model: SerModel) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).cpu()
        self.eval()

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.frame_outputs(features)


def export_onnx(model: SerModel, path: Path | io.BytesIO) -> None:
    """ONNX graph `features [batch, time, 82] -> frame_logits [batch, time, 6], scores [batch, time]`.

    Uses the TorchScript exporter (`dynamo=False`, deprecated but working in torch 2.13): the torch.export
    exporter (with onnxscript) fixes the outputs' time axis to the example's length for this LSTM. Its
    warnings are silenced because none applies: an LSTM exported this way failing at other batch sizes (the
    initial states are zeros shaped from the input; the tests run batch 3), the tracer freezing the LSTM's
    input-size checks (the feature size is fixed), and the exporter's own deprecation notices.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(
            _Exportable(model),
            (torch.zeros(1, 50, model.config.n_features),),
            path,
            input_names=["features"],
            output_names=["frame_logits", "scores"],
            dynamic_axes={
                "features": {0: "batch", 1: "time"},
                "frame_logits": {0: "batch", 1: "time"},
                "scores": {0: "batch", 1: "time"},
            },
            opset_version=ONNX_OPSET,
            dynamo=False,
        )


def export_coreml(model: SerModel, path: Path | None = None, max_frames: int = 2000) -> Any:
    """Convert to a Core ML ML Program (time axis 1..max_frames); save it as .mlpackage when `path` is given.

    Conversion runs anywhere coremltools installs; prediction needs macOS.
    """
    import coremltools as ct

    traced = torch.jit.trace(_Exportable(model), torch.zeros(1, 50, model.config.n_features))
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="features", shape=(1, ct.RangeDim(1, max_frames), model.config.n_features))],
        outputs=[ct.TensorType(name="frame_logits"), ct.TensorType(name="scores")],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.macOS13,
        compute_precision=ct.precision.FLOAT32,
    )
    if path is not None:
        mlmodel.save(str(path))
    return mlmodel


# --- run time ---------------------------------------------------------------------------------------

FrameFunction = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Normalised features [T, F] float32 -> (frame logits [T, C], salience scores [T]) as numpy."""


def _torch_backend(checkpoint: Checkpoint, num_threads: int) -> FrameFunction:
    torch.set_num_threads(num_threads)  # per process: the SER service runs one model
    model, device = checkpoint.model.eval(), checkpoint.device

    def run(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with torch.inference_mode():
            logits, scores = model.frame_outputs(torch.from_numpy(features)[None].to(device))
        return logits[0].cpu().numpy(), scores[0].cpu().numpy()

    return run


def _onnx_backend(checkpoint: Checkpoint, num_threads: int) -> FrameFunction:
    """An ONNX Runtime session on the model exported in memory, so it can never be stale."""
    import onnxruntime as ort

    buffer = io.BytesIO()
    export_onnx(checkpoint.model, buffer)
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, scores = session.run(None, {"features": features[None]})
        return logits[0], scores[0]

    return run


def _coreml_backend(checkpoint: Checkpoint, num_threads: int) -> FrameFunction:
    """Core ML schedules its own threads (and may use the GPU or Neural Engine), so num_threads is unused."""
    if platform.system() != "Darwin":
        raise ValueError("backend: coreml runs predictions only on macOS; use torch or onnx here")
    mlmodel = export_coreml(checkpoint.model)

    def run(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = mlmodel.predict({"features": features[None]})
        return np.asarray(out["frame_logits"])[0], np.asarray(out["scores"])[0]

    return run


BACKENDS: dict[str, Callable[[Checkpoint, int], FrameFunction]] = {
    "torch": _torch_backend,
    "onnx": _onnx_backend,
    "coreml": _coreml_backend,
}


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


@dataclass(frozen=True)
class UtteranceResult:
    """One utterance's emotion. Arrays are in EMOTIONS order.

    `probabilities` is the pooled (utterance) posterior and `confidence` its largest value; `frame_mean`,
    `frame_max` and `frame_std` summarise the per-frame posteriors over the utterance, as the policy wants.
    """

    emotion: str
    probabilities: np.ndarray
    confidence: float
    frame_mean: np.ndarray
    frame_max: np.ndarray
    frame_std: np.ndarray
    n_frames: int


@dataclass(frozen=True)
class FramePosteriors:
    """Posteriors [n, C] of the frames start_frame .. start_frame + n - 1 (counted from the stream's start)."""

    start_frame: int
    probabilities: np.ndarray


class SerRecognizer:
    """A checkpoint plus a backend; makes per-stream `SerStream`s and classifies whole clips.

    The default backend is ONNX Runtime: on a 2-core laptop CPU it runs the 1 s streaming window about 1.3x
    faster than torch with a steadier p95. `num_threads` bounds the threads a model call uses (torch's
    intra-op pool, which is per process, or the ONNX Runtime session's); keep 1 on a small shared CPU:
    with 2 threads competing for 2 busy cores, single calls took up to seconds.
    """

    def __init__(self, checkpoint: Checkpoint, backend: str = "onnx", num_threads: int = 1) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"backend: unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        self.checkpoint = checkpoint
        self.backend = backend
        self.frame_function = BACKENDS[backend](checkpoint, num_threads)

    @classmethod
    def load(cls, path: Path, backend: str = "onnx", device: str = "auto", num_threads: int = 1) -> SerRecognizer:
        """Load a checkpoint (ONNX Runtime and Core ML run on the CPU copy of the model)."""
        return cls(load_checkpoint(path, device="cpu" if backend != "torch" else device), backend, num_threads)

    def normalize(self, features: np.ndarray) -> np.ndarray:
        return self.checkpoint.normalizer.apply(features)

    def classify(self, normalized: np.ndarray) -> UtteranceResult:
        """The utterance result for normalised features [T, F] (T > 0), in one model run."""
        logits, scores = self.frame_function(np.ascontiguousarray(normalized, dtype=np.float32))
        weights = softmax(scores)
        probabilities = softmax(weights @ logits)
        frames = softmax(logits)
        return UtteranceResult(
            emotion=EMOTIONS[int(np.argmax(probabilities))],
            probabilities=probabilities,
            confidence=float(probabilities.max()),
            frame_mean=frames.mean(axis=0),
            frame_max=frames.max(axis=0),
            frame_std=frames.std(axis=0),
            n_frames=len(frames),
        )

    def recognize(self, features: np.ndarray) -> UtteranceResult:
        """Classify raw feature rows [T, 82] (as FeatureExtractor gives them) of one whole utterance."""
        if len(features) == 0:
            raise ValueError("features: an utterance needs at least one frame")
        return self.classify(self.normalize(features))

    def stream(
        self, window_frames: int = 100, run_every_frames: int = 6, max_utterance_frames: int = 1500
    ) -> SerStream:
        return SerStream(self, window_frames, run_every_frames, max_utterance_frames)


class SerStream:
    """One audio stream's recogniser state, fed with FeatureExtractor rows block by block.

    Every time `run_every_frames` new frames have arrived, the model runs on the newest `window_frames`
    frames (bounded look-back: the cost per run does not grow with the stream) and `push` returns the
    posteriors of the frames that arrived since the last run (the newest `window_frames` of them, should
    more arrive at once); otherwise it returns None. The newest frames
    are seen without future context, so their posteriors are provisional. `finish` classifies the current
    utterance — every frame since the last `finish`/`reset`, up to the newest `max_utterance_frames` (15 s
    by default; longer utterances are judged on their end) — in one run, exactly as `recognize` would.
    That run's cost grows with the utterance (about 6-8 ms per second of speech on one core), so lower
    `max_utterance_frames` to bound the time from endpoint to result.
    """

    def __init__(
        self, recognizer: SerRecognizer, window_frames: int, run_every_frames: int, max_utterance_frames: int
    ) -> None:
        if not 0 < run_every_frames <= window_frames <= max_utterance_frames:
            raise ValueError("need 0 < run_every_frames <= window_frames <= max_utterance_frames")
        self.recognizer = recognizer
        self.window_frames = window_frames
        self.run_every_frames = run_every_frames
        self.max_utterance_frames = max_utterance_frames
        self._n_features = recognizer.checkpoint.model.config.n_features
        self._frames_seen = 0  # since the stream began, across utterances
        self.reset()

    def reset(self) -> None:
        """Start a new utterance: forget the buffered frames (stream time keeps counting)."""
        self._utterance = np.zeros((0, self._n_features), dtype=np.float32)
        self._pending = 0  # frames not yet returned by push

    def push(self, rows: np.ndarray) -> FramePosteriors | None:
        """Add raw feature rows [n, 82]; return new frame posteriors when the model ran, else None."""
        if rows.ndim != 2 or rows.shape[1] != self._n_features:
            raise ValueError(f"rows: expected [n, {self._n_features}] features, got shape {rows.shape}")
        if len(rows):
            normalized = self.recognizer.normalize(rows)
            self._utterance = np.concatenate([self._utterance, normalized])[-self.max_utterance_frames :]
            self._pending += len(rows)
            self._frames_seen += len(rows)
        if self._pending < self.run_every_frames:
            return None
        logits, _ = self.recognizer.frame_function(self._utterance[-self.window_frames :])
        newest = min(self._pending, len(logits))
        self._pending = 0
        return FramePosteriors(start_frame=self._frames_seen - newest, probabilities=softmax(logits[-newest:]))

    def finish(self, start_frame: int | None = None, end_frame: int | None = None) -> UtteranceResult | None:
        """Classify the current utterance (None if it has no frames), then start the next one.

        With stream frame indices, only frames start_frame .. end_frame - 1 that are still buffered count (an
        endpointer's utterance bounds), and frames after end_frame stay buffered for the next utterance.
        """
        first = self._frames_seen - len(self._utterance)  # stream index of the oldest buffered frame
        start = 0 if start_frame is None else max(0, start_frame - first)
        end = len(self._utterance) if end_frame is None else max(0, min(len(self._utterance), end_frame - first))
        frames, rest = self._utterance[start:end], self._utterance[end:]
        self.reset()
        self._utterance = rest
        return self.recognizer.classify(frames) if len(frames) else None

    @property
    def frames_seen(self) -> int:
        """Frames pushed since the stream began (stream time in hops)."""
        return self._frames_seen
