"""Long work (builds, neuron directions, SAE training) that lives only as long as someone waits for it.

A `Job` runs its work in a thread of its own, one job at a time per `JobLine` (the machine's cores are shared by
the analyses too); the others wait in line, in order. Whoever wants the result *follows* the job
(`JobLine.follow`): a generator that yields the job's state twice a second. Identical work (the same key: model,
block, data) is done once: a second request joins the job already waiting or running and follows it too.

The work runs in units (an image, a batch, a training step): every loop of it goes through `JobBar` (tqdm with the
job's progress) or calls `checkpoint()`, which stop the work with `Cancelled` once nobody follows the job any more:
a follower is gone when its generator is closed (Gradio closes it when the visitor leaves) or when it has not
asked for the state for `STALE_S` seconds. The job's `cleanup` then removes what the work wrote half-way, and the
line moves on. Outside a job (the CLI, the library) `JobBar` is tqdm and `checkpoint` does nothing.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator

from tqdm import tqdm

from .errors import InterpretError
from .limits import JOB_STOP_S, MAX_JOBS_WAITING

log = logging.getLogger(__name__)

POLL_S = 0.5  # a follower is told the job's state this often
STALE_S = JOB_STOP_S - POLL_S  # a follower that has not asked for this long is gone (Gradio asks again at once
# after each answer); with units of work under POLL_S, a job stops within JOB_STOP_S of its last follower leaving


class Cancelled(InterpretError):
    """The work stopped because nobody waits for it any more."""


@dataclass(frozen=True)
class JobState:
    """What a follower is told: the job's `phase` ('waiting', 'running', 'done', 'failed', 'cancelled'), its place
    in line (1: next) and the seconds before it starts while waiting; the stage, units done and total, the
    seconds spent and the estimate while running; the outcome once finished."""

    phase: str
    place: int = 0
    starts_in_s: float = 0.0
    stage: str = ""
    done: int = 0
    total: int | None = None
    spent_s: float = 0.0
    estimate_s: float | None = None
    outcome: str = ""
    unit: str = ""

    @property
    def finished(self) -> bool:
        return self.phase in ("done", "failed", "cancelled")

    @property
    def fraction(self) -> float:
        """How far the job is (0-1): by the estimate where there is one, else by the stage's units."""
        if self.phase != "running":
            return 1.0 if self.finished else 0.0
        if self.estimate_s:
            return min(0.99, self.spent_s / self.estimate_s)
        return min(0.99, self.done / self.total) if self.total else 0.0

    def line(self) -> str:
        """The state in words (markdown-safe: stage names are the code's own)."""
        if self.phase == "waiting":
            ahead = "next in line" if self.place == 1 else f"number {self.place} in line"
            return f"Waiting: {ahead}, starts in about {_duration(self.starts_in_s)}."
        if self.phase == "running":
            count = f"{self.done:,}/{self.total:,}" if self.total else (f"{self.done:,}" if self.done else "")
            count = f", {count} {self.unit}".rstrip() if count else ""
            of = f" of about {_duration(self.estimate_s)}" if self.estimate_s else ""
            return (f"Running, {self.fraction:.0%}{': ' + self.stage if self.stage else ''}{count} "
                    f"({_duration(self.spent_s)}{of}).")
        return self.outcome


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


@dataclass(eq=False)
class Job:
    """One piece of long work: `work(job)` returns the outcome in words; `cleanup()` removes what it wrote when it
    is cancelled or fails. `owner`: the visitor who asked first (one job a visitor waits at a time)."""

    key: tuple
    title: str
    work: Callable[["Job"], str]
    cleanup: Callable[[], None] | None = None
    estimate_s: float | None = None
    owner: str | None = None
    phase: str = "waiting"
    stage: str = ""
    done: int = 0
    total: int | None = None
    unit: str = ""
    outcome: str = ""
    created: float = field(default_factory=time.monotonic)
    started: float | None = None
    _followers: dict[int, float] = field(default_factory=dict)  # follower number -> when it last asked
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _changed: threading.Condition = field(init=False)

    def __post_init__(self):
        self._changed = threading.Condition(self._lock)

    # --- followers
    def attach(self, number: int) -> None:
        with self._lock:
            self._followers[number] = time.monotonic()

    def detach(self, number: int) -> None:
        with self._lock:
            self._followers.pop(number, None)
            self._changed.notify_all()

    def seen(self, number: int) -> None:
        with self._lock:
            if number in self._followers:
                self._followers[number] = time.monotonic()

    def followed(self) -> bool:
        """Whether anyone still waits for the job (a follower that asked within `STALE_S`; a job asked for within
        `STALE_S` counts as followed: its first follower is on the way)."""
        now = time.monotonic()
        with self._lock:
            return now - self.created < STALE_S or any(now - asked < STALE_S for asked in self._followers.values())

    # --- the work's side
    def checkpoint(self, stage: str | None = None, done: int | None = None, total: int | None = None,
                   unit: str | None = None) -> None:
        """Between two units of work: note how far it is, and stop it (`Cancelled`) when nobody waits."""
        if stage is not None or done is not None:
            with self._lock:
                if stage is not None and stage != self.stage:
                    self.stage, self.done, self.total, self.unit = stage, 0, None, unit or ""
                if done is not None:
                    self.done = done
                if total is not None:
                    self.total = total
        if not self.followed():
            raise Cancelled(f"{self.title}: stopped, since nobody waits for it any more.")

    def _finish(self, phase: str, outcome: str) -> None:
        with self._lock:
            self.phase, self.outcome = phase, outcome
            self._changed.notify_all()

    def state(self, place: int = 0, starts_in_s: float = 0.0) -> JobState:
        with self._lock:
            spent = time.monotonic() - self.started if self.started is not None else 0.0
            return JobState(self.phase, place, starts_in_s, self.stage, self.done, self.total, spent,
                            self.estimate_s, self.outcome, self.unit)

    def remaining_s(self) -> float:
        """Seconds of work left by the estimate (0 when there is none or it is spent)."""
        if self.estimate_s is None:
            return 0.0
        spent = time.monotonic() - self.started if self.started is not None else 0.0
        return max(0.0, self.estimate_s - spent)


_running = threading.local()  # .job: the job this thread works for


def current() -> Job | None:
    """The job the calling thread works for, or None (the CLI, the library, an analysis)."""
    return getattr(_running, "job", None)


def checkpoint(stage: str | None = None, done: int | None = None, total: int | None = None,
               unit: str | None = None) -> None:
    """A unit of long work is done: `Job.checkpoint` of the job this thread works for; nothing outside a job."""
    job = current()
    if job is not None:
        job.checkpoint(stage, done, total, unit)


class JobBar(tqdm):
    """tqdm that, in a job's thread, reports each unit to the job (its `desc` as the stage) and stops the work
    when nobody waits for it (`checkpoint`); elsewhere, tqdm."""

    def __init__(self, iterable=None, *args, **kwargs):
        super().__init__(iterable, *args, **kwargs)
        self.units = 0
        self.stage = str(kwargs.get("desc") or "working").rstrip(": ")
        self.unit_name = "" if kwargs.get("unit", "it") == "it" else f"{kwargs['unit']}s"
        self.units_total = kwargs.get("total")
        if self.units_total is None and hasattr(iterable, "__len__"):
            self.units_total = len(iterable)
        checkpoint(self.stage, 0, self.units_total, self.unit_name)

    def __iter__(self):
        for item in super().__iter__():
            yield item
            self._tick(1)

    def update(self, n=1):
        shown = super().update(n)
        self._tick(n)
        return shown

    def _tick(self, n) -> None:
        self.units += n or 0
        checkpoint(self.stage, int(self.units), self.units_total, self.unit_name)


class JobLine:
    """Jobs run one at a time (`slots`), in the order asked; identical keys share one job."""

    def __init__(self, slots: int = 1, max_waiting: int = MAX_JOBS_WAITING):
        self.slots = slots
        self.max_waiting = max_waiting
        self._jobs: list[Job] = []  # waiting and running, in order; finished ones leave it
        self._lock = threading.Lock()
        self._numbers = itertools.count()

    def submit(self, key: tuple, title: str, work: Callable[[Job], str], cleanup: Callable[[], None] | None = None,
               estimate_s: float | None = None, owner: str | None = None) -> Job:
        """The job for `key`: the one waiting or running already (joined), else a new one at the end of the line.
        Refused with a message when `owner` already has another job in line, or the line is full."""
        with self._lock:
            for job in self._jobs:
                if job.key == key and job.phase in ("waiting", "running"):  # not one just ended, on its way out
                    return job
            if owner is not None:
                for job in self._jobs:
                    if job.owner == owner and job.followed():
                        raise InterpretError(f"You have asked for other long work already ({job.title}, "
                                             f"{job.phase}); wait for it to end, or leave the page, before you ask "
                                             "for more.")
            waiting = sum(1 for job in self._jobs if job.phase == "waiting")
            if waiting >= self.max_waiting:
                raise InterpretError(f"{waiting} long jobs are waiting already; try again in a few minutes.")
            job = Job(key, title, work, cleanup, estimate_s, owner)
            self._jobs.append(job)
        return job

    def follow(self, job: Job) -> Iterator[JobState]:
        """The job's state every `POLL_S` seconds (and at once when it changes) until it has finished; the job
        stops when every follower has stopped following (closed this generator, or stopped asking)."""
        number = next(self._numbers)
        job.attach(number)
        try:
            while True:
                self._start_next()
                with self._lock:
                    state = self._state(job)
                yield state
                if state.finished:
                    return
                job.seen(number)
                with job._changed:
                    job._changed.wait(POLL_S)
                job.seen(number)
        finally:
            job.detach(number)
            self._start_next()

    def _state(self, job: Job) -> JobState:
        """`job`'s state, with its place in line and when it starts while it waits (under the line's lock)."""
        if job.phase != "waiting":
            return job.state()
        ahead = self._jobs[:self._jobs.index(job)] if job in self._jobs else []
        waiting_ahead = [other for other in ahead if other.phase == "waiting"]
        running = [other for other in ahead if other.phase == "running"]
        starts_in = (min((other.remaining_s() for other in running), default=0.0)
                     + sum(other.estimate_s or 0.0 for other in waiting_ahead) / max(1, self.slots))
        return job.state(len(waiting_ahead) + 1, starts_in)

    def _start_next(self) -> None:
        """Drop waiting jobs nobody follows; start the first waiting ones while a slot is free."""
        with self._lock:
            self._jobs = [job for job in self._jobs if job.phase == "running" or job.followed()]
            running = sum(1 for job in self._jobs if job.phase == "running")
            for job in self._jobs:
                if running >= self.slots:
                    break
                if job.phase == "waiting":
                    job.phase, job.started = "running", time.monotonic()
                    threading.Thread(target=self._run, args=(job,), name=f"job: {job.title}", daemon=True).start()
                    running += 1

    def _run(self, job: Job) -> None:
        _running.job = job
        try:
            outcome = job.work(job)
            job._finish("done", outcome)
        except Cancelled as error:
            self._clean(job)
            job._finish("cancelled", str(error))
        except InterpretError as error:
            self._clean(job)
            job._finish("failed", str(error))
        except Exception as error:  # noqa: BLE001  (a fault of ours: said, logged, and the line moves on)
            log.exception("job %s failed", job.title)
            self._clean(job)
            job._finish("failed", f"{job.title} failed ({type(error).__name__}); the error was logged.")
        finally:
            _running.job = None
            with self._lock:
                if job in self._jobs:
                    self._jobs.remove(job)
            self._start_next()

    @staticmethod
    def _clean(job: Job) -> None:
        if job.cleanup is not None:
            try:
                job.cleanup()
            except Exception:  # noqa: BLE001
                log.warning("cleaning up after %s failed", job.title, exc_info=True)

    def jobs(self) -> list[JobState]:
        """The states of the jobs in line (tests, the load benchmark)."""
        with self._lock:
            return [self._state(job) for job in self._jobs]


HEAVY = JobLine()  # the app's line of long work: builds and trainings, one at a time on this machine
