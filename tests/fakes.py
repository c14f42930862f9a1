"""Test doubles shared by the test modules (time, injected the way the code takes it)."""

from __future__ import annotations


class FakeClock:
    """A clock whose `sleep` advances it: pass it as `clock=` and its `.sleep` as `sleep=`."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
