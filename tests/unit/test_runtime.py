"""runtime.interruptible: a read-only step that a stop does not wait for."""

from __future__ import annotations

import threading

import pytest

from s5jtransfer import runtime


def test_interruptible_returns_the_value_and_raises_the_error():
    stopper = runtime.Stopper()
    assert runtime.interruptible(lambda: 42, stopper) == 42

    def boom():
        raise KeyError("x")

    with pytest.raises(KeyError):
        runtime.interruptible(boom, stopper)


def test_interruptible_is_given_up_when_a_stop_is_asked_for():
    stopper = runtime.Stopper()
    release = threading.Event()
    threading.Timer(0.2, stopper.event.set).start()  # the stop, while the step still waits
    try:
        with pytest.raises(runtime.Interrupted):
            runtime.interruptible(lambda: release.wait(30), stopper)
    finally:
        release.set()
