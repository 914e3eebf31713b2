"""A model's lifecycle record: its state, the moves allowed between states, and what the
manager knows about it. Times are ``time.monotonic()`` seconds (a clock step on a unit without an
RTC battery must not move a deadline); the API converts them to wall-clock times."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

from edge_asr.manifest import ModelSpec

if TYPE_CHECKING:  # a record holds its worker; it never calls it
    from edge_asr.workers.handle import WorkerHandle


class State(str, enum.Enum):
    UNLOADED = "unloaded"
    LOADING = "loading"
    READY = "ready"
    UNLOADING = "unloading"
    FAILED = "failed"


SETTLED = frozenset({State.UNLOADED, State.READY, State.FAILED})  # no lifecycle operation under way
MOVES: dict[State, frozenset[State]] = {
    State.UNLOADED: frozenset({State.LOADING}),
    State.FAILED: frozenset({State.LOADING}),
    # UNLOADED/FAILED: admission found no room and the model goes back where it was
    State.LOADING: frozenset({State.READY, State.FAILED, State.UNLOADED}),
    State.READY: frozenset({State.UNLOADING, State.FAILED}),  # FAILED: the worker crashed or stalled
    State.UNLOADING: frozenset({State.UNLOADED, State.FAILED}),
}


class IllegalMove(AssertionError):
    """A lifecycle bug: a state change the contract does not allow."""


@dataclass
class ModelRecord:
    spec: ModelSpec
    state: State = State.UNLOADED
    reason: str = "not loaded since start"
    origin: State = State.UNLOADED  # the settled state the operation under way started from
    worker: WorkerHandle | None = None
    in_flight: int = 0  # requests holding a lease (one runs in the worker, the others queue on it)
    waiting: int = 0  # requests waiting for the model to load
    draining: bool = False  # an unload waits for the leases to come back: no new ones
    loaded_at: float | None = None
    last_used: float | None = None
    last_unload_reason: str | None = None
    unloaded_at: float | None = None
    thrashes: int = 0  # reloads soon after a pressure hibernation: memory is too tight for the work
    keep_alive: float | None = None  # the last request's keep_alive, overriding the setting until the next
    failures: int = 0  # crashes and failed loads in a row
    retry_at: float = 0.0

    @property
    def queued(self) -> int:
        """Requests this model has accepted and not yet answered."""
        return self.in_flight + self.waiting

    def move(self, to: State, reason: str) -> State:
        """Set the state (the manager's ``transition`` calls this, under its lock); returns the
        settled state the move started from, for the event."""
        if to not in MOVES[self.state]:
            raise IllegalMove(f"model {self.spec.id}: {self.state.value} -> {to.value} is not a lifecycle move")
        origin = self.state if self.state in SETTLED else self.origin
        self.state, self.reason, self.origin = to, reason, to if to in SETTLED else origin
        return origin

    def drop_worker(self, why: str, now: float) -> None:
        """The worker is gone: unloaded, or crashed."""
        self.worker, self.loaded_at = None, None
        self.last_unload_reason, self.unloaded_at = why, now
