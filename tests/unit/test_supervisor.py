"""supervisor's decisions of when a run is done, with plain values."""

from __future__ import annotations

from s5jtransfer.supervisor import nothing_to_do, only_set_aside_left


def test_a_run_over_earlier_work_has_nothing_to_do_only_when_complete_and_nothing_staged_to_free():
    assert nothing_to_do(True, 0, True)
    assert not nothing_to_do(False, 0, True)
    # staged copies left by a run cut short after its last upload: the destination side frees them
    assert not nothing_to_do(True, 3, True)
    # ... unless staged copies are kept (delete_staging_data: false)
    assert nothing_to_do(True, 3, False)


def test_a_once_run_ends_when_only_objects_set_aside_are_left():
    aside = {"a": "checksum differs 5 times", "b": "upload refused 5 times"}
    assert only_set_aside_left(0, aside)  # every object left is one of those set aside
    assert only_set_aside_left(0, {"a": "why"})


def test_another_round_when_anything_left_was_not_set_aside():
    assert not only_set_aside_left(1, {"a": "why"})  # 'c' is left and was not set aside
    assert not only_set_aside_left(0, {})  # nothing set aside: move what is left again
