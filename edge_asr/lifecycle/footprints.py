"""Each model's footprint: what it takes when loaded and serving, from its worker's own accounting
(the worker's peak resident memory, plus the GPU memory its load took: ``gpu_bytes``), learnt
at each load and unload, predicted before the first one, persisted in the state directory.

Why the worker's own figures and not the system's: the change in available memory around a load
counts whatever else moved at that moment (another process, the page cache, a VM handing pages
back late), and one noisy reading would inflate admission for good.

Why a decaying peak: admission must count the most a model needed (an idle worker keeps what its
largest request took), so a larger measurement counts at once; but a smaller one pulls the figure
halfway down, so one outlier (a huge request, a noisy load) is gone after a few unloads instead of
evicting models for room they never needed, forever."""

from __future__ import annotations

from typing import Any

from edge_asr.manifest import ModelSpec
from edge_asr.state import StateStore
from edge_asr.workers.runners import files_loaded

FILES_TO_FOOTPRINT = 3  # before any measurement: 3x the model's files (see ``predict``)
DECAY = 0.5  # how far a smaller measurement pulls the learnt peak down
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider", "CUDA")  # ONNX Runtime's; llama.cpp's


def gpu_bytes(load_report: dict[str, Any], system_delta: int) -> int:
    """The device memory a load took: what the worker's runtime measured (TensorRT's CUDA context,
    its free memory before and after), else for a runtime on a GPU provider that measures nothing
    (ONNX Runtime's, onnxruntime-genai's and llama.cpp's CUDA), the part of the system's loss around the load
    that the worker's resident size does not show (on a Jetson, CUDA's allocations are not in a
    process's RSS); 0 on the CPU. The manager keeps it in the load report as ``gpu_bytes``."""
    gpu = load_report.get("gpu") or {}
    if "free_before_load" in gpu and "free_after_load" in gpu:
        return max(0, gpu["free_before_load"] - gpu["free_after_load"])
    if any(provider in GPU_PROVIDERS for provider in load_report.get("providers", [])):
        return max(0, system_delta - load_report["rss_loaded"])
    return 0


def load_footprint(load_report: dict[str, Any]) -> int:
    """A load's figure: resident after the load plus its GPU memory."""
    return load_report["rss_loaded"] + load_report.get("gpu_bytes", 0)


def held_footprint(load_report: dict[str, Any], release_report: dict[str, Any]) -> int | None:
    """What the worker held just before its release (what an unload should give back); None when
    the release could not report."""
    held = release_report.get("rss_before_release")
    return None if held is None else held + load_report.get("gpu_bytes", 0)


def peak_footprint(load_report: dict[str, Any], release_report: dict[str, Any]) -> int | None:
    """An unload's figure: the worker's peak resident memory plus its GPU memory; None when the
    release could not report (a killed worker)."""
    peak = release_report.get("rss_peak")
    return None if peak is None else peak + load_report.get("gpu_bytes", 0)


def decayed_peak(learnt: int | None, measured: int) -> int:
    """The new footprint after ``measured``: up at once, down halfway."""
    if learnt is None or measured >= learnt:
        return measured
    return int(learnt - DECAY * (learnt - measured))


class Footprints:
    def __init__(self, store: StateStore):
        self._store = store
        self._known = store.footprints()

    def known(self) -> dict[str, int]:
        return dict(self._known)

    def get(self, model_id: str) -> int | None:
        return self._known.get(model_id)

    def measured(self, model_id: str) -> bool:
        return model_id in self._known

    def predict(self, spec: ModelSpec) -> int:
        """The footprint learnt or, before any load, 3x the files a load reads (weights, runtime
        arenas and a request's working memory: the measured peaks on ONNX Runtime CPU are a little
        under 3x their files, ``bench/RESULTS.md``); which files a load reads is the runner's to
        say."""
        if spec.id in self._known:
            return self._known[spec.id]
        return FILES_TO_FOOTPRINT * sum((spec.directory / f).stat().st_size for f in files_loaded(spec))

    def loaded(self, model_id: str, footprint: int) -> None:
        """A load's figure (``load_footprint``): a floor for the learnt peak, which only a
        request's peak (``released``) may lower."""
        self._learn(model_id, max(footprint, self._known.get(model_id, 0)))

    def released(self, model_id: str, footprint: int) -> None:
        """An unload's figure (``peak_footprint``), learnt as a decaying peak."""
        self._learn(model_id, decayed_peak(self._known.get(model_id), footprint))

    def _learn(self, model_id: str, footprint: int) -> None:
        """Persisting may fail (a full disk): the store logs it and the figure stays in memory."""
        self._known[model_id] = footprint
        self._store.save_footprints(dict(self._known))
