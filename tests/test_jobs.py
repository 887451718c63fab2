"""Long work lives as long as someone waits for it: the line of jobs (`interpret.jobs`) runs one at a time, joins
identical work, tells each follower its place, and stops a job (cleaning up) within 2 s of its last follower
leaving, whether the follower closed its stream or just stopped asking."""
from __future__ import annotations

import threading
import time

import pytest

from interpret.errors import InterpretError
from interpret.jobs import STALE_S, JobBar, JobLine, checkpoint


def units_of_work(seconds_each: float, count: int, log: list, name: str = "work"):
    """A job's work: `count` units, each `seconds_each` long, through `JobBar` (as the builds' loops are)."""
    def work(job) -> str:
        for unit in JobBar(range(count), desc=name, disable=True):
            time.sleep(seconds_each)
            log.append((name, unit))
        return f"{name} done"
    return work


def finish(line: JobLine, job) -> list:
    return list(line.follow(job))


def test_a_followed_job_runs_to_its_outcome_with_its_stage_and_units():
    line, log = JobLine(), []
    job = line.submit(("a",), "A", units_of_work(0.05, 20, log, "stage one"))
    states = finish(line, job)
    assert states[-1].phase == "done" and states[-1].outcome == "stage one done" and len(log) == 20
    running = [state for state in states if state.phase == "running"]
    assert running and all(state.stage in ("", "stage one") for state in running)
    assert any(state.total == 20 and 0 < state.done <= 20 for state in running)


@pytest.mark.parametrize("leave", ["close", "stop asking"])
def test_a_job_stops_within_two_seconds_of_its_last_follower_leaving_and_cleans_up(leave):
    line, log, cleaned = JobLine(), [], threading.Event()
    job = line.submit(("slow",), "Slow", units_of_work(0.1, 10_000, log), cleanup=cleaned.set)
    follower = line.follow(job)
    for state in follower:
        if state.phase == "running" and log:
            break
    left = time.monotonic()
    if leave == "close":
        follower.close()  # what Gradio does when the visitor's stream ends
    # else: kept, never closed, never asked again (a client that vanished without a word)
    assert cleaned.wait(STALE_S + 2.0)
    units = len(log)
    time.sleep(0.5)
    assert time.monotonic() - left < 2.0 + STALE_S and len(log) == units  # stopped, and stays stopped
    assert job.state().phase == "cancelled" and not line.jobs()  # the line is free again
    after = line.submit(("next",), "Next", units_of_work(0.01, 3, []))
    assert finish(line, after)[-1].phase == "done"
    follower.close()


def test_identical_work_is_done_once_and_every_follower_sees_its_outcome():
    line, log = JobLine(), []
    first = line.submit(("same", "model", 1), "Same", units_of_work(0.05, 10, log))
    second = line.submit(("same", "model", 1), "Same", units_of_work(0.05, 10, log))
    assert second is first
    outcomes = []
    threads = [threading.Thread(target=lambda: outcomes.append(finish(line, first)[-1])) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(20)
    assert [state.outcome for state in outcomes] == ["work done"] * 3 and len(log) == 10  # run once


def test_one_job_runs_at_a_time_and_the_next_is_told_its_place_and_when_it_starts():
    line, log = JobLine(), []
    first = line.submit(("1",), "First", units_of_work(0.05, 20, log, "first"), estimate_s=1.0)
    second = line.submit(("2",), "Second", units_of_work(0.01, 5, log, "second"))
    watcher = threading.Thread(target=finish, args=(line, first))
    watcher.start()
    while not log:
        time.sleep(0.01)
    states = finish(line, second)
    waiting = [state for state in states if state.phase == "waiting"]
    assert waiting and waiting[0].place == 1 and 0 < waiting[0].starts_in_s <= 1.0
    assert "next in line" in waiting[0].line()
    assert states[-1].phase == "done"
    assert [name for name, _ in log] == ["first"] * 20 + ["second"] * 5  # never at once
    watcher.join(10)


def test_a_visitor_with_long_work_in_line_is_told_to_wait_for_it():
    line = JobLine()
    job = line.submit(("mine", 1), "Mine", units_of_work(0.05, 40, []), owner="visitor")
    follower = line.follow(job)
    next(follower)
    with pytest.raises(InterpretError, match="You have asked for other long work already"):
        line.submit(("mine", 2), "Another", units_of_work(0.05, 1, []), owner="visitor")
    assert line.submit(("mine", 1), "Mine", units_of_work(0.05, 1, []), owner="visitor") is job  # the same: joined
    follower.close()


def test_a_failing_job_says_why_and_cleans_up():
    line, cleaned = JobLine(), threading.Event()

    def broken(job):
        checkpoint("reading")
        raise InterpretError("None of the images could be read.")

    states = finish(line, line.submit(("broken",), "Broken", broken, cleanup=cleaned.set))
    assert states[-1].phase == "failed" and "None of the images" in states[-1].outcome and cleaned.is_set()


def test_outside_a_job_the_bar_is_tqdm_and_checkpoints_do_nothing():
    assert list(JobBar(range(3), disable=True)) == [0, 1, 2]
    checkpoint("anything", 1, 2)
