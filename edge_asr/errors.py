"""Errors a client can act on. Each carries its HTTP status and OpenAI error ``type``/``code``;
the server turns them into ``{"error": {"message", "type", "code"}}``."""

from __future__ import annotations


class RequestError(ValueError):
    """Raised by model code inside a worker for a request it cannot serve as asked (a bad field,
    unusable audio, a prompt longer than the context): the client's 400 ``invalid_request``. Any
    other exception there is the model's own failure (or ours), a logged 500."""


class Unrecoverable(RuntimeError):
    """Raised by model code inside a worker when the process can serve nothing more: its GPU
    context hit a sticky CUDA error (an illegal address, a failed launch), which every later call
    in that context repeats. The worker exits at once (``protocol.EXIT_UNRECOVERABLE``); the
    manager reports the crash and the next request gets a fresh worker."""


class ServiceError(Exception):
    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class InvalidRequest(ServiceError):
    status, type, code = 400, "invalid_request_error", "invalid_request"


class Unauthorized(ServiceError):
    status, type, code = 401, "authentication_error", "invalid_api_key"


class Forbidden(ServiceError):
    status, type, code = 403, "permission_error", "forbidden"


class ModelNotFound(ServiceError):
    status, type, code = 404, "invalid_request_error", "model_not_found"


class SpeakerNotFound(ServiceError):
    status, type, code = 404, "invalid_request_error", "speaker_not_found"


class ModelBusy(ServiceError):
    """An unload was asked of a model that is serving requests (or is loading)."""

    status, type, code = 409, "conflict_error", "model_busy"


class PayloadTooLarge(ServiceError):
    status, type, code = 413, "invalid_request_error", "payload_too_large"


class ModelUnavailable(ServiceError):
    """The model cannot serve now (loading, unloading, backing off after crashes); retry later."""

    status, type, code = 503, "server_error", "model_unavailable"


class Draining(ServiceError):
    """The unit is drained (an upgrade): it finishes the requests it has and takes no new ones, so
    that a router sends them to another unit (``/api/system/drain``)."""

    status, type, code = 503, "server_error", "draining"


class BackingOff(ModelUnavailable):
    """The model failed to load or crashed twice or more in a row: it waits before the next try."""

    code = "backing_off"


class ShuttingDown(ModelUnavailable):
    code = "shutting_down"


class InsufficientMemory(ServiceError):
    status, type, code = 503, "server_error", "insufficient_memory"


class WorkerCrashed(ServiceError):
    """The model's worker process died while serving the request."""

    status, type, code = 503, "server_error", "worker_crashed"


class StorageFull(ServiceError):
    """The state directory could not be written (full, read-only); nothing stored was changed."""

    status, type, code = 507, "server_error", "insufficient_storage"


class QueueFull(ServiceError):
    """More requests wait for a model (or for memory to hold their audio) than the unit allows."""

    status, type, code = 503, "server_error", "queue_full"


class ModelLoadFailed(ServiceError):
    status, type, code = 500, "server_error", "model_load_failed"
