"""Each model's footprint: what it takes from the system when loaded and serving, learnt from
measurements, predicted before the first one, persisted in the state directory."""

from __future__ import annotations

from edge_asr.manifest import ModelSpec
from edge_asr.state import StateStore
from edge_asr.workers.runners import files_loaded

FILES_TO_FOOTPRINT = 3  # before any measurement: 3x the model's files (see ``predict``)


class Footprints:
    """Learnt only under the manager's lifecycle lock (one load or unload at a time), so the
    change in available memory around each is the model's own."""

    def __init__(self, store: StateStore):
        self._store = store
        self._known = store.footprints()

    def known(self) -> dict[str, int]:
        return dict(self._known)

    def get(self, model_id: str) -> int | None:
        return self._known.get(model_id)

    def predict(self, spec: ModelSpec) -> int:
        """The footprint measured last or, before any load, 3x the files a load reads (weights,
        runtime arenas and a request's working memory: the measured peaks on ONNX Runtime CPU are
        a little under 3x their files, ``bench/RESULTS.md``); which files a load reads is the
        runner's to say."""
        if spec.id in self._known:
            return self._known[spec.id]
        return FILES_TO_FOOTPRINT * sum((spec.directory / f).stat().st_size for f in files_loaded(spec))

    def learn(self, model_id: str, measured: int) -> None:
        """Keep the peak: an idle worker holds on to what its largest request took (it idles well
        above what it loaded at after a long clip), and admission must count that.
        Persisting may fail (a full disk): the store logs it and the figure stays in memory."""
        self._known[model_id] = max(measured, self._known.get(model_id, 0))
        self._store.save_footprints(dict(self._known))
