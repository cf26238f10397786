"""Run the recipe's training subprocesses: jobs with dependencies, a few at a time, skipped when already done.

- `Job`: one command, the file whose existence means it is done (`done_marker`) and the jobs it waits for.
- `run_jobs`: runs a list of jobs in priority order, at most `max_parallel` at once, each with its share of the
  CPU cores (`OMP_NUM_THREADS`) and its own log file; a job whose done marker exists is skipped, so re-running the
  same list continues an interrupted run (the trainers resume from their newest checkpoint). Each job's command is
  recorded when it starts (`<log_dir>/<name>.command.json`): a job whose command changed since (other steps, other
  flags: the mode's settings were edited) is refused, finished or not, instead of being skipped or resumed with
  outputs made by the old command.
- `Timings`: wall times of jobs and in-process steps, kept in a JSON file so a resumed run still reports them;
  `stage_wall_times` sums them up per stage.
- `simulate_schedule`: the wall time of a job list under the same policy, from per-job durations (budgets).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from dc_ae_hf.checks import check_int, check_number

T = TypeVar("T")


@dataclass
class Job:
    """One subprocess: `command` (argv), skipped when `done_marker` exists, started after the jobs in `after`."""

    name: str
    stage: str
    command: list[str]
    done_marker: Path
    after: tuple[str, ...] = ()


class Timings:
    """Wall times by name (`entries`), saved to `path` (JSON) after every new entry and read back from it.

    An entry is ``{"stage", "seconds", "start", "end"}`` (times from `time.time()`), or ``{"stage", "seconds"}``
    for work that was done in pieces (`record_total`).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.entries: dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def record(self, name: str, stage: str, start: float, end: float) -> dict:
        self.entries[name] = {"stage": stage, "seconds": round(end - start, 1), "start": start, "end": end}
        self.save()
        return self.entries[name]

    def record_piece(self, name: str, stage: str, start: float, end: float) -> dict:
        """`record`, or, when `name` was recorded before (a finished job run again to go further, e.g. a diffusion
        run given more steps), the sum of both as work done in pieces: ``{"stage", "seconds", "pieces"}``."""
        earlier = self.entries.get(name)
        if earlier is None:
            return self.record(name, stage, start, end)
        seconds = earlier["seconds"] + (end - start)
        self.entries[name] = {"stage": stage, "seconds": round(seconds, 1), "pieces": earlier.get("pieces", 1) + 1}
        self.save()
        return self.entries[name]

    def record_total(self, name: str, stage: str, seconds: float) -> dict:
        self.entries[name] = {"stage": stage, "seconds": round(seconds, 1)}
        self.save()
        return self.entries[name]

    def timed(self, name: str, stage: str, fn: Callable[[], T]) -> T:
        """Run `fn()`, record its wall time as `name` and return its value."""
        start = time.time()
        value = fn()
        self.record(name, stage, start, time.time())
        return value

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.entries, indent=1))


def stage_wall_times(entries: Mapping[str, dict]) -> dict[str, float]:
    """Wall time per stage: from the first start to the last end of its jobs (jobs of a stage run in parallel);
    entries without start/end count as the longest such job of their stage."""
    spans: dict[str, list[float]] = {}
    for entry in entries.values():
        if "start" in entry:
            span = spans.setdefault(entry["stage"], [math.inf, -math.inf])
            span[0], span[1] = min(span[0], entry["start"]), max(span[1], entry["end"])
        else:
            span = spans.setdefault(entry["stage"], [0.0, 0.0])
            span[1] = max(span[1], span[0] + entry["seconds"])
    return {stage: round(end - start, 1) for stage, (start, end) in spans.items()}


def check_jobs(jobs: list[Job]) -> None:
    """ValueError unless the job names are unique, every dependency is a job of the list and nothing waits on
    itself (directly or through a cycle); TypeError for something that is not a `Job`."""
    for job in jobs:
        if not isinstance(job, Job):
            raise TypeError(f"jobs must be Job instances, got {type(job).__name__}: {job!r:.200}")
    names = [job.name for job in jobs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"job names must be unique; repeated: {repeated}")
    for job in jobs:
        unknown = [dep for dep in job.after if dep not in names]
        if unknown:
            raise ValueError(f"job {job.name!r} waits for {unknown}, which are not in the job list {names}")
    waiting = {job.name: set(job.after) for job in jobs}
    while waiting:  # peel off the jobs whose dependencies are all resolved; what is left waits in a cycle
        free = {name for name, deps in waiting.items() if not deps & waiting.keys()}
        if not free:
            raise ValueError(f"jobs {sorted(waiting)} wait for each other (a dependency cycle)")
        for name in free:
            del waiting[name]


def simulate_schedule(jobs: list[Job], seconds: Mapping[str, float], max_parallel: int) -> float:
    """The wall time `run_jobs` would take to run every job of `jobs` (done markers ignored) if job `name` took
    `seconds[name]`: the same policy (ready jobs in list order, at most `max_parallel` at once), no poll delays.
    Used to turn measured per-job costs into a budget estimate; KeyError for a job without a duration."""
    check_int("max_parallel", max_parallel, minimum=1)
    check_jobs(jobs)
    for job in jobs:
        check_number(f"seconds[{job.name!r}]", seconds[job.name], minimum=0)
    pending, done = list(jobs), set()
    running: dict[str, float] = {}  # name -> end time
    now = 0.0
    while pending or running:
        ready = [job for job in pending if all(dep in done for dep in job.after)]
        while ready and len(running) < max_parallel:
            job = ready.pop(0)
            pending.remove(job)
            running[job.name] = now + seconds[job.name]
        name = min(running, key=running.get)  # the next job to finish (check_jobs: no cycles, so one is running)
        now = running.pop(name)
        done.add(name)
    return now


@dataclass
class _Running:
    job: Job
    process: subprocess.Popen
    start: float
    log: IO[str]


def _recorded_form(command: list[str], log_dir: Path, cwd: Path) -> list[str]:
    """`command` without its interpreter and with the run folder (`log_dir`'s parent) and `cwd` written as
    ``{run}`` / ``{cwd}``: the same job started from another virtual environment or after the checkout or the run
    folder moved has the same recorded form."""
    run, here = str(log_dir.parent), str(cwd)
    return [arg.replace(run, "{run}").replace(here, "{cwd}") for arg in command[1:]]


def check_job_commands(jobs: list[Job], log_dir: Path, cwd: Path) -> None:
    """ValueError naming the job and the first arguments that differ if a job's recorded command
    (`<log_dir>/<name>.command.json`, written when it started) is not its command now: its outputs, finished or
    half-made, come from other settings and must not be reused. Jobs never started (no record) pass; so do jobs
    of runs made before commands were recorded (a done marker without a record), which cannot be checked."""
    for job in jobs:
        record = log_dir / f"{job.name}.command.json"
        if not record.exists():
            continue
        before, now = json.loads(record.read_text()), _recorded_form(job.command, log_dir, cwd)
        if before != now:
            first = next((i for i, (a, b) in enumerate(zip(before, now)) if a != b), min(len(before), len(now)))
            raise ValueError(
                f"job {job.name!r} was started with another command ({record}); from argument {first} it was "
                f"{before[first : first + 4]} and is now {now[first : first + 4]}. Its outputs come from the old "
                f"settings: use a new output folder, or delete the job's outputs and {record} to redo it"
            )


def _start(job: Job, log_dir: Path, cwd: Path, environment: dict[str, str]) -> _Running:
    record = log_dir / f"{job.name}.command.json"
    partial = record.with_suffix(".tmp")
    partial.write_text(json.dumps(_recorded_form(job.command, log_dir, cwd), indent=1))
    os.replace(partial, record)
    log = open(log_dir / f"{job.name}.log", "a")  # noqa: SIM115 (closed when the job ends)
    log.write(f"\n$ {' '.join(job.command)}\n")
    log.flush()
    try:
        process = subprocess.Popen(job.command, cwd=cwd, env=environment, stdout=log, stderr=subprocess.STDOUT)
    except BaseException:
        log.close()
        raise
    return _Running(job, process, time.time(), log)


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask where the platform has one (`taskset`, a container's
    cpuset), else `os.cpu_count()`; at least 1."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def run_jobs(
    jobs: list[Job],
    log_dir: Path,
    max_parallel: int,
    timings: Timings,
    *,
    cwd: Path,
    environment: Mapping[str, str] | None = None,
    poll_seconds: float = 0.5,
) -> None:
    """Run `jobs` (in list order of priority, respecting `after`) with at most `max_parallel` at once.

    Each job runs in `cwd` with this process's environment plus `environment`, gets OMP_NUM_THREADS =
    `usable_cores()` // running jobs (at least 1) and logs to `log_dir/<name>.log` (appended, after the command
    line). Jobs whose `done_marker` exists are skipped; `check_job_commands` first refuses a job whose recorded
    command changed. A job that fails (non-zero exit, or no done marker) raises RuntimeError with its log tail; on
    that or any other exception (e.g. Ctrl-C) the jobs still running are terminated. Wall times go to `timings`
    under the job names.
    """
    check_int("max_parallel", max_parallel, minimum=1)
    check_number("poll_seconds", poll_seconds, minimum=0, exclusive_minimum=True)
    check_jobs(jobs)
    log_dir.mkdir(parents=True, exist_ok=True)
    check_job_commands(jobs, log_dir, cwd)
    done = {job.name for job in jobs if job.done_marker.exists()}
    for job in jobs:
        if job.name in done:
            print(f"[skip] {job.name}: output exists", flush=True)
    pending = [job for job in jobs if job.name not in done]
    running: dict[str, _Running] = {}
    cores = usable_cores()
    try:
        while pending or running:
            ready = [job for job in pending if all(dep in done for dep in job.after)]
            while ready and len(running) < max_parallel:
                job = ready.pop(0)
                pending.remove(job)
                threads = max(1, cores // max(1, min(max_parallel, len(running) + 1 + len(ready))))
                env = {**os.environ, **(environment or {}), "OMP_NUM_THREADS": str(threads)}
                print(f"[start] {job.name} ({threads} thread(s))", flush=True)
                running[job.name] = _start(job, log_dir, cwd, env)
            time.sleep(poll_seconds)
            for name, run in list(running.items()):
                if run.process.poll() is None:
                    continue
                run.log.close()
                del running[name]
                if run.process.returncode != 0 or not run.job.done_marker.exists():
                    why = f"exit {run.process.returncode}"
                    if run.process.returncode == 0:
                        why += f", but it did not write {run.job.done_marker}"
                    tail = (log_dir / f"{name}.log").read_text()[-4000:]
                    raise RuntimeError(f"job {name} failed ({why}); log tail:\n{tail}")
                entry = timings.record_piece(name, run.job.stage, run.start, time.time())
                done.add(name)
                pieces = f" (in {entry['pieces']} pieces)" if "pieces" in entry else ""
                print(f"[done] {name} in {entry['seconds']:.0f} s{pieces}", flush=True)
    finally:  # a failure or an interruption: stop the jobs still running (they resume from checkpoints)
        for run in running.values():
            run.process.terminate()
        for run in running.values():
            run.process.wait()
            run.log.close()
