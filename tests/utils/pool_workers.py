"""Module-level worker functions for tests/utils/test_pool.py (spawned workers import them by name)."""
import os
import signal


def init(fail: bool = False) -> None:
    if fail:
        raise RuntimeError('initializer broke')


def square(x: int) -> int:
    if x == 3:
        raise ValueError('three is refused')
    if x == 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x
