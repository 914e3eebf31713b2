"""Every model's lifecycle, in one place (along the lines of Ollama's scheduler):

- ``records``: a model's record, its states and the moves allowed between them;
- ``policy``: the decisions as plain functions (fits, eviction order, keep-alive expiry, pressure
  victims, back-off, queue), no locks, processes or clock;
- ``footprints``: learn, predict, persist what each model takes;
- ``registry``: the records and the one condition that guards them, every state change, and the
  queries the API, the page and the supervisor make;
- ``manager``: the ModelManager, a registry that acts (leases, load, unload, hibernation);
- ``operation``: the lifecycle lock (one load or unload at a time) and what holds it;
- ``lease``: a request's hold on a loaded model, with its worker's typed methods;
- ``status``: a model as the API shows it;
- ``monitor``: the crash watch and the stall killer.
"""

from edge_asr.lifecycle.lease import Lease, result
from edge_asr.lifecycle.manager import ModelManager
from edge_asr.lifecycle.records import ModelRecord, State

__all__ = ["Lease", "ModelManager", "ModelRecord", "State", "result"]
