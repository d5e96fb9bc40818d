"""The SER model, its checkpoint, the streaming window and the ONNX / Core ML exports."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from emoloop.models.emotions import EMOTIONS
from emoloop.models.features import FeatureConfig, FeatureExtractor, FeatureNormalizer
from emoloop.models.ser import Checkpoint, SerConfig, SerRecognizer, onnx_path, read_checkpoint, sidecar_path
from emoloop.models.ser_model import (
    SerModel,
    count_parameters,
    export_coreml,
    export_onnx,
    load_model,
    pool,
    save_checkpoint,
    select_device,
)
from emoloop.models.speaker import SpeakerReference, SpeakerStatistics

TINY = SerConfig(conv_channels=(16, 16), lstm_hidden=16)
ONNX_TOLERANCE = 1e-4  # max abs difference of frame logits, torch vs ONNX Runtime (float32)


def tiny_model(seed: int = 0) -> SerModel:
    torch.manual_seed(seed)
    return SerModel(TINY).eval()


def fitted_normalizer(seed: int = 0) -> FeatureNormalizer:
    rng = np.random.default_rng(seed)
    return FeatureNormalizer.fit([rng.normal(-5.0, 3.0, (200, 82))])


def tiny_reference() -> SpeakerReference:
    return SpeakerReference(np.full(82, -5.0), prior_frames=100.0)


def save_tiny_checkpoint(
    directory: Path, speaker: SpeakerReference | None = None, feature_config: FeatureConfig | None = None
) -> Path:
    """A tiny untrained model saved as a real checkpoint (state dict, ONNX export, sidecar); returns the .pt.

    It adapts to the speaker like the shipped model, with `tiny_reference()` unless another is given.
    """
    path = directory / "tiny.pt"
    config = feature_config or FeatureConfig()
    save_checkpoint(path, tiny_model(), fitted_normalizer(), config, speaker=speaker or tiny_reference())
    return path


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return read_checkpoint(save_tiny_checkpoint(tmp_path_factory.mktemp("tiny")))


def raw_features(n_frames: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(-5.0, 3.0, (n_frames, 82)).astype(np.float32)


def test_default_model_has_about_three_million_parameters() -> None:
    assert 2.8e6 <= count_parameters(SerModel()) <= 3.4e6


def test_frame_logits_keep_the_frame_rate() -> None:
    model = tiny_model()
    for n_frames in (1, 2, 37):
        assert model(torch.zeros(3, n_frames, 82)).shape == (3, n_frames, len(EMOTIONS))


def test_padding_changes_neither_valid_frames_nor_the_pooled_result() -> None:
    model = tiny_model()
    short, long = torch.randn(1, 20, 82), torch.randn(1, 35, 82)
    batch = torch.cat([torch.nn.functional.pad(short, (0, 0, 0, 15), value=7.0), long])
    logits, scores = model.frame_outputs(batch, torch.tensor([20, 35]))
    alone_logits, alone_scores = model.frame_outputs(short)

    torch.testing.assert_close(logits[0, :20], alone_logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(
        pool(logits, scores, torch.tensor([20, 35]))[0], pool(alone_logits, alone_scores)[0], atol=1e-5, rtol=1e-5
    )


def test_pool_weights_frames_by_salience_and_ignores_padded_frames() -> None:
    logits = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [100.0, 100.0]]])
    equal = torch.zeros(1, 3)
    torch.testing.assert_close(pool(logits, equal, torch.tensor([2])), torch.tensor([[2.0, 1.0]]))
    salient = torch.tensor([[0.0, 50.0, 0.0]])
    torch.testing.assert_close(pool(logits, salient, torch.tensor([2])), torch.tensor([[3.0, 2.0]]))


def test_checkpoint_round_trip_keeps_outputs_and_records_its_context(tmp_path: Path) -> None:
    model, normalizer = tiny_model(), fitted_normalizer()
    sidecar = save_checkpoint(
        tmp_path / "ser.pt", model, normalizer, FeatureConfig(), {"seed": 3}, {"corpora": ["x"]}, {"uar": 0.5}
    )

    loaded = read_checkpoint(tmp_path / "ser.pt")

    x = torch.randn(2, 30, 82)
    torch.testing.assert_close(load_model(loaded, "cpu")(x), model(x))
    np.testing.assert_allclose(loaded.normalizer.mean, normalizer.mean)
    stored = json.loads(sidecar.read_text())
    assert stored["labels"] == list(EMOTIONS) and stored["sample_rate_hz"] == 16000
    assert (stored["training"], stored["data"], stored["metrics"]) == ({"seed": 3}, {"corpora": ["x"]}, {"uar": 0.5})
    assert stored["model_config"]["lstm_hidden"] == TINY.lstm_hidden
    assert stored["parameters"] == count_parameters(model)


@pytest.mark.parametrize(
    ("field", "edit"),
    [
        ("labels", lambda s: s.update(labels=list(reversed(s["labels"])))),
        ("hop_length", lambda s: s["feature_config"].update(hop_length=256)),
        ("sample_rate_hz", lambda s: s.update(sample_rate_hz=22050)),
        ("model_config", lambda s: s["model_config"].update(attention="yes")),
        ("normalizer", lambda s: s.pop("normalizer")),
        ("onnx_sha256", lambda s: s.pop("onnx_sha256")),
        ("speaker_adaptation", lambda s: s.pop("speaker_adaptation")),
        (r"speaker_adaptation\.prior_frames", lambda s: s["speaker_adaptation"].update(prior_frames=0)),
        ("format", lambda s: s.update(format=1)),
    ],
)
def test_a_sidecar_that_does_not_fit_is_refused_naming_the_field(tmp_path: Path, field: str, edit) -> None:
    sidecar = sidecar_path(save_tiny_checkpoint(tmp_path))
    stored = json.loads(sidecar.read_text())
    edit(stored)
    sidecar.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=field):
        read_checkpoint(sidecar.with_suffix(".pt"))


def test_a_checkpoint_is_refused_for_features_computed_differently(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ser.pt", tiny_model(), fitted_normalizer(), FeatureConfig())
    with pytest.raises(ValueError, match=r"feature_config: .*f0_max_hz"):
        read_checkpoint(tmp_path / "ser.pt", feature_config=FeatureConfig(f0_max_hz=500.0))


def test_the_onnx_backend_refuses_a_missing_or_foreign_onnx_file(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "ser.pt", tiny_model(0), fitted_normalizer(), FeatureConfig())
    save_checkpoint(tmp_path / "other.pt", tiny_model(1), fitted_normalizer(), FeatureConfig())
    onnx_path(tmp_path / "other.pt").replace(onnx_path(tmp_path / "ser.pt"))
    with pytest.raises(ValueError, match=r"onnx_sha256: ser\.onnx is not the export"):
        SerRecognizer.load(tmp_path / "ser.pt")
    onnx_path(tmp_path / "ser.pt").unlink()
    with pytest.raises(ValueError, match=r"checkpoint: .*ser\.onnx is missing"):
        SerRecognizer.load(tmp_path / "ser.pt")
    SerRecognizer.load(tmp_path / "ser.pt", backend="torch", device="cpu")  # the state dict alone still serves torch


def test_the_onnx_backend_runs_without_importing_torch(tiny_checkpoint: Checkpoint) -> None:
    code = (
        "import sys; from emoloop.models.ser import SerRecognizer; import numpy as np\n"
        f"r = SerRecognizer.load({str(tiny_checkpoint.path)!r})\n"
        "r.recognize(np.zeros((50, 82), np.float32)); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_device_selection() -> None:
    expected = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == expected
    assert select_device("cpu").type == "cpu"
    for name, available in (("cuda", torch.cuda.is_available()), ("mps", torch.backends.mps.is_available())):
        if not available:
            with pytest.raises(ValueError, match=f"{name} is not available"):
                select_device(name)
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        select_device("tpu")


def test_recognize_gives_a_distribution_and_frame_statistics(tiny_checkpoint: Checkpoint) -> None:
    result = SerRecognizer(tiny_checkpoint).recognize(raw_features(120))

    assert result.emotion == EMOTIONS[int(np.argmax(result.probabilities))]
    assert result.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert result.confidence == pytest.approx(result.probabilities.max())
    assert result.n_frames == 120
    assert result.frame_mean.sum() == pytest.approx(1.0, abs=1e-5)
    assert np.all(result.frame_max >= result.frame_mean) and np.all(result.frame_std >= 0)


def test_stream_work_per_run_is_bounded_and_every_frame_gets_a_posterior(tiny_checkpoint: Checkpoint) -> None:
    recognizer = SerRecognizer(tiny_checkpoint)
    model_inputs: list[int] = []
    run_model = recognizer.frame_function

    def counting(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        model_inputs.append(len(features))
        return run_model(features)

    recognizer.frame_function = counting
    stream = recognizer.stream(window_frames=50, run_every_frames=6, max_utterance_frames=300)
    posteriors = [p for _ in range(1000) if (p := stream.push(raw_features(3))) is not None]

    assert max(model_inputs) == 50 and len(model_inputs) == 3000 // 6
    starts = [p.start_frame for p in posteriors]
    assert starts == list(range(0, 3000, 6))
    assert all(p.probabilities.shape == (6, len(EMOTIONS)) for p in posteriors)
    assert stream.finish().n_frames == 300  # the utterance buffer is bounded too


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_utterance_result_from_the_stream_equals_the_whole_utterance_run(
    backend: str, tiny_checkpoint: Checkpoint
) -> None:
    """Within the look-back the stream's utterance result is the whole-utterance run (tolerance 1e-5)."""
    recognizer = SerRecognizer(tiny_checkpoint, backend=backend)
    audio = np.random.default_rng(0).normal(0, 0.1, 16000 * 2).astype(np.float32)
    extractor, stream = FeatureExtractor(), recognizer.stream(window_frames=100, max_utterance_frames=300)
    for start in range(0, audio.size, 512):
        stream.push(extractor.push(audio[start : start + 512]))
    stream.push(extractor.flush())
    streamed = stream.finish()
    whole = recognizer.recognize(FeatureExtractor().extract(audio))

    assert streamed.n_frames == whole.n_frames == 199
    np.testing.assert_allclose(streamed.probabilities, whole.probabilities, atol=1e-5)
    np.testing.assert_allclose(streamed.frame_std, whole.frame_std, atol=1e-5)
    assert stream.finish() is None  # finish starts a new, empty utterance


def test_a_long_utterance_is_judged_on_its_last_max_utterance_frames(tiny_checkpoint: Checkpoint) -> None:
    recognizer = SerRecognizer(tiny_checkpoint)
    features = raw_features(500)
    stream = recognizer.stream(window_frames=100, max_utterance_frames=300)
    stream.push(features)

    result = stream.finish()

    assert result.n_frames == 300
    np.testing.assert_allclose(result.probabilities, recognizer.recognize(features[-300:]).probabilities, atol=1e-6)


def test_finish_with_endpointer_bounds_judges_only_those_frames_and_keeps_the_rest(tiny_checkpoint: Checkpoint) -> None:
    recognizer = SerRecognizer(tiny_checkpoint)
    features = raw_features(300)
    stream = recognizer.stream(window_frames=100, max_utterance_frames=1000)
    stream.push(features)

    result = stream.finish(start_frame=50, end_frame=200)

    assert result.n_frames == 150
    np.testing.assert_allclose(result.probabilities, recognizer.recognize(features[50:200]).probabilities, atol=1e-6)
    following = stream.finish(start_frame=200)  # frames after the end stay for the next utterance
    assert following.n_frames == 100


def test_a_stream_judges_each_utterance_against_the_speaker_heard_so_far(tiny_checkpoint: Checkpoint) -> None:
    recognizer = SerRecognizer(tiny_checkpoint)
    first, second = raw_features(200, seed=1) + 2.0, raw_features(150, seed=2) + 2.0  # a voice off the reference
    stream = recognizer.stream(window_frames=100, max_utterance_frames=1000)
    stream.push(first)
    stream.finish()
    stream.push(second)

    result = stream.finish()

    session = SpeakerStatistics.of([first, second])
    expected = recognizer.classify(recognizer.prepare(second, session))
    np.testing.assert_allclose(result.probabilities, expected.probabilities, atol=1e-6)
    cold = recognizer.recognize(second)  # the utterance alone: less of the voice to judge it against
    assert np.abs(result.probabilities - cold.probabilities).max() > 1e-4


def test_a_model_trained_without_speaker_adaptation_sees_the_features_unshifted(tmp_path: Path) -> None:
    path = tmp_path / "plain.pt"
    save_checkpoint(path, tiny_model(), fitted_normalizer(), FeatureConfig())
    recognizer = SerRecognizer(read_checkpoint(path))
    features = raw_features(120) + 2.0

    prepared = recognizer.prepare(features, SpeakerStatistics.of([features]))

    assert recognizer.checkpoint.speaker is None
    np.testing.assert_array_equal(prepared, recognizer.checkpoint.normalizer.apply(features))


def test_onnx_export_has_dynamic_batch_and_time_and_matches_torch(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model = tiny_model()
    export_onnx(model, tmp_path / "ser.onnx")
    session = ort.InferenceSession(str(tmp_path / "ser.onnx"), providers=["CPUExecutionProvider"])
    for shape in ((1, 7, 82), (3, 123, 82)):
        x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
        logits, scores = session.run(None, {"features": x})
        expected_logits, expected_scores = model.frame_outputs(torch.from_numpy(x))
        np.testing.assert_allclose(logits, expected_logits.detach().numpy(), atol=ONNX_TOLERANCE)
        np.testing.assert_allclose(scores, expected_scores.detach().numpy(), atol=ONNX_TOLERANCE)


def test_onnx_backend_gives_the_torch_result(tiny_checkpoint: Checkpoint) -> None:
    pytest.importorskip("onnxruntime")
    features = raw_features(150)
    by_torch = SerRecognizer(tiny_checkpoint, backend="torch").recognize(features)
    by_onnx = SerRecognizer(tiny_checkpoint, backend="onnx").recognize(features)
    np.testing.assert_allclose(by_onnx.probabilities, by_torch.probabilities, atol=ONNX_TOLERANCE)
    np.testing.assert_allclose(by_onnx.frame_mean, by_torch.frame_mean, atol=ONNX_TOLERANCE)


def test_unknown_backend_is_refused(tiny_checkpoint: Checkpoint) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tflite'"):
        SerRecognizer(tiny_checkpoint, backend="tflite")


def test_core_ml_conversion_gives_a_package_with_the_named_inputs_and_outputs(tmp_path: Path) -> None:
    pytest.importorskip("coremltools", reason="coremltools is not installed on this platform")
    mlmodel = export_coreml(tiny_model(), tmp_path / "ser.mlpackage")
    spec = mlmodel.get_spec()
    assert [i.name for i in spec.description.input] == ["features"]
    assert [o.name for o in spec.description.output] == ["frame_logits", "scores"]
    assert (tmp_path / "ser.mlpackage").is_dir()


@pytest.mark.skipif(platform.system() == "Darwin", reason="Core ML predicts on macOS; tested by the next test there")
def test_core_ml_backend_is_refused_off_macos(tiny_checkpoint: Checkpoint) -> None:
    with pytest.raises(ValueError, match="only on macOS"):
        SerRecognizer(tiny_checkpoint, backend="coreml")


@pytest.mark.skipif(platform.system() != "Darwin", reason="Core ML prediction needs macOS")
def test_core_ml_backend_gives_the_torch_result(tiny_checkpoint: Checkpoint) -> None:
    pytest.importorskip("coremltools")
    features = raw_features(80)
    by_torch = SerRecognizer(tiny_checkpoint, backend="torch").recognize(features)
    by_coreml = SerRecognizer(tiny_checkpoint, backend="coreml").recognize(features)
    np.testing.assert_allclose(by_coreml.probabilities, by_torch.probabilities, atol=1e-3)
