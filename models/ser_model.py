"""The SER network in torch: CNN front end + BiLSTM + attention pooling, its checkpoint files and exports.

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

A checkpoint is three files side by side: the state dict (`ser.pt`), its ONNX export (`ser.onnx`, what the
service runs by default, without torch) and a JSON sidecar (`ser.json`: labels, sample rate, feature config,
normaliser statistics, model config, the ONNX file's SHA-256, training config, data description, metrics).
Run-time use without torch lives in ser.py; this module is for training, export and the torch backend.
"""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import FeatureConfig, FeatureNormalizer
from emoloop.models.ser import SIDECAR_FORMAT, Checkpoint, SerConfig, onnx_path, sidecar_path
from emoloop.models.speaker import SpeakerReference

ONNX_OPSET = 17


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


def save_checkpoint(
    path: Path,
    model: SerModel,
    normalizer: FeatureNormalizer,
    feature_config: FeatureConfig,
    training: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    speaker: SpeakerReference | None = None,
) -> Path:
    """Write the state dict to `path`, its ONNX export (.onnx) and the sidecar (.json); returns the sidecar.

    `speaker` is the speaker adaptation the model was trained with (None: trained without it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, path)
    export_onnx(model, onnx_path(path))
    sidecar = {
        "format": SIDECAR_FORMAT,
        "labels": list(EMOTIONS),
        "sample_rate_hz": feature_config.sample_rate_hz,
        "feature_config": feature_config.to_dict(),
        "normalizer": normalizer.to_dict(),
        "speaker_adaptation": None if speaker is None else speaker.to_dict(),
        "model_config": model.config.to_dict(),
        "parameters": count_parameters(model),
        "onnx_sha256": hashlib.sha256(onnx_path(path).read_bytes()).hexdigest(),
        "training": training or {},
        "data": data or {},
        "metrics": metrics or {},
    }
    out = sidecar_path(path)
    out.write_text(json.dumps(sidecar, indent=2) + "\n")
    return out


def load_model(checkpoint: Checkpoint, device: str = "auto") -> SerModel:
    """The checkpoint's torch model on `device` (see select_device), in eval mode."""
    target = select_device(device)
    model = SerModel(checkpoint.config)
    model.load_state_dict(torch.load(checkpoint.path, map_location=target, weights_only=True))
    return model.to(target).eval()


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
