"""``lifecycle.residue.settle``, a plain function on a simulated memory reading (no processes, no
sleeping): an unload's residue is judged once the reading stops rising."""

from __future__ import annotations

from edge_asr.lifecycle import residue

MB = 2**20


class LazyKernel:
    """Available memory as this development VM shows it after a 300 MB worker exits: nothing for
    1.5 s, then ~15 MB/s with pauses of up to 2 s, on a clock the test moves."""

    def __init__(self, gives_back: int, pause_until: float = 1.5, rate: float = 15 * MB, leak: int = 0):
        self.now, self.gives_back, self.pause_until, self.rate, self.leak = 0.0, gives_back, pause_until, rate, leak

    def available(self) -> int:
        back = max(0.0, self.now - self.pause_until) * self.rate
        if 6 < self.now < 8:  # a pause in the middle
            back = (6 - self.pause_until) * self.rate
        elif self.now >= 8:
            back -= 2 * self.rate
        return 1000 * MB + int(min(back, self.gives_back - self.leak))

    def sleep(self, seconds: float) -> None:
        self.now += seconds

    def clock(self) -> float:
        return self.now


def settle(kernel: LazyKernel, held: int, disturbed=lambda: False):
    return residue.settle(kernel.available, 1000 * MB, held, disturbed, kernel.sleep, kernel.clock)


def test_memory_that_comes_back_lazily_is_not_residue():
    kernel = LazyKernel(gives_back=300 * MB)
    reclaimed, took = settle(kernel, held=300 * MB)
    assert 300 * MB - reclaimed <= residue.SLACK and 20 < took < 30  # followed through the pauses


def test_memory_that_never_comes_back_is_residue_once_the_reading_is_quiet():
    kernel = LazyKernel(gives_back=300 * MB, leak=80 * MB)  # a driver keeps 80 MB
    reclaimed, took = settle(kernel, held=300 * MB)
    assert abs(300 * MB - reclaimed - 80 * MB) <= residue.SLACK and took < residue.BOUND


def test_the_judgement_is_bounded_and_given_up_when_another_move_disturbs_it():
    slow = LazyKernel(gives_back=3000 * MB, rate=20 * MB)
    _, took = settle(slow, held=3000 * MB)
    assert took <= residue.BOUND + residue.POLL
    assert settle(LazyKernel(gives_back=300 * MB), 300 * MB, disturbed=lambda: True) is None


def test_a_slow_return_is_followed_too():
    """4 MB a poll or less never looked like a rise to a poll-by-poll comparison."""
    kernel = LazyKernel(gives_back=200 * MB, rate=5 * MB)
    reclaimed, _ = settle(kernel, held=200 * MB)
    assert 200 * MB - reclaimed <= residue.SLACK + 20 * MB  # the bound cuts the slowest last part
