"""The toy recipe's job pool (examples/toy/toy_scheduler.py) with trivial `python -c` jobs: dependencies, skipping
finished jobs, parallelism, failures, and the wall-time log."""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from examples.toy.toy_scheduler import (
    Job,
    Timings,
    check_jobs,
    run_jobs,
    simulate_schedule,
    stage_wall_times,
    usable_cores,
)


def _job(tmp_path, name, code="", after=(), stage="stage"):
    """A job that runs `code`, then writes its done marker with what it saw: its threads, a test variable, cwd."""
    marker = tmp_path / f"{name}.done"
    seen = "[os.environ['OMP_NUM_THREADS'], os.environ.get('TOY_TEST'), os.getcwd()]"
    report = f"import json, os, pathlib; pathlib.Path({str(marker)!r}).write_text(json.dumps({seen}))"
    return Job(name, stage, [sys.executable, "-c", f"{code}\n{report}"], marker, tuple(after))


def _run(jobs, tmp_path, max_parallel=2, **kwargs):
    timings = Timings(tmp_path / "timings.json")
    run_jobs(jobs, tmp_path / "logs", max_parallel, timings, cwd=tmp_path, poll_seconds=0.02, **kwargs)
    return timings


def test_jobs_run_after_their_dependencies_with_environment_and_logs(tmp_path):
    first = _job(tmp_path, "first", "import time; time.sleep(0.3)")
    # fails unless `first` has finished (its marker is written last)
    second = _job(
        tmp_path, "second", f"assert __import__('pathlib').Path({str(first.done_marker)!r}).exists()", ["first"]
    )
    third = _job(tmp_path, "third", stage="other")
    timings = _run([second, first, third], tmp_path, environment={"TOY_TEST": "seen"})

    for job in (first, second, third):
        threads, variable, cwd = json.loads(job.done_marker.read_text())
        assert 1 <= int(threads) <= (os.cpu_count() or 1)
        assert variable == "seen" and cwd == str(tmp_path)
        log = (tmp_path / "logs" / f"{job.name}.log").read_text()
        assert log.startswith(f"\n$ {sys.executable} -c ")  # the command line heads its log
    entries = timings.entries
    assert set(entries) == {"first", "second", "third"}
    assert entries["second"]["start"] >= entries["first"]["end"]
    assert entries["third"]["stage"] == "other" and entries["first"]["seconds"] >= 0.3
    assert json.loads((tmp_path / "timings.json").read_text()) == entries  # saved as it goes


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this platform")
def test_a_job_gets_the_threads_of_the_cores_this_process_may_use(tmp_path):
    # `taskset -c 0 python -m examples.toy.run_recipe ...`: one job gets one thread, not os.cpu_count()
    mask = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mask)})
    try:
        assert usable_cores() == 1
        job = _job(tmp_path, "pinned")
        _run([job], tmp_path)
    finally:
        os.sched_setaffinity(0, mask)
    assert json.loads(job.done_marker.read_text())[0] == "1"
    assert usable_cores() == len(mask)


def test_at_most_max_parallel_jobs_run_at_once(tmp_path):
    jobs = [_job(tmp_path, f"job{i}", "import time; time.sleep(0.2)") for i in range(3)]
    entries = _run(jobs, tmp_path, max_parallel=2).entries
    spans = sorted((entries[job.name]["start"], entries[job.name]["end"]) for job in jobs)
    assert spans[1][0] < spans[0][1]  # the first two overlap
    assert spans[2][0] >= min(spans[0][1], spans[1][1])  # the third waits for a free slot
    one_at_a_time = [_job(tmp_path / "serial", f"job{i}", "import time; time.sleep(0.1)") for i in range(2)]
    (tmp_path / "serial").mkdir()
    entries = _run(one_at_a_time, tmp_path / "serial", max_parallel=1).entries
    assert entries["job1"]["start"] >= entries["job0"]["end"]


def test_finished_jobs_are_skipped(tmp_path, capsys):
    done = _job(tmp_path, "done", "raise SystemExit(3)")  # would fail if it ran
    done.done_marker.write_text("from an earlier run")
    waiting = _job(tmp_path, "waiting", after=["done"])
    timings = _run([done, waiting], tmp_path)
    assert done.done_marker.read_text() == "from an earlier run"
    assert not (tmp_path / "logs" / "done.log").exists()
    assert set(timings.entries) == {"waiting"} and waiting.done_marker.exists()
    assert "[skip] done: output exists" in capsys.readouterr().out


def test_a_job_whose_command_changed_is_refused_finished_or_not(tmp_path):
    first = _job(tmp_path, "train", "print('--max_train_steps 10')")
    _run([first], tmp_path)
    record = tmp_path / "logs" / "train.command.json"
    assert json.loads(record.read_text())[0] == "-c"  # recorded without the interpreter
    # the same job again, from another interpreter path: skipped, as before
    again = Job("train", "stage", ["/other/venv/bin/python", *first.command[1:]], first.done_marker)
    _run([again], tmp_path)
    # the mode's settings were edited: its finished output must not be reused
    edited = _job(tmp_path, "train", "print('--max_train_steps 20')")
    with pytest.raises(
        ValueError,
        match=r"job 'train' was started with another command .*train\.command\.json.*"
        r"from argument 1 it was .*max_train_steps 10.* and is now .*max_train_steps 20.*new output",
    ):
        _run([edited, _job(tmp_path, "after", after=["train"])], tmp_path)
    assert not (tmp_path / "after.done").exists()  # refused before anything ran
    # not finished (a killed run): refused too, rather than resumed with other flags
    first.done_marker.unlink()
    with pytest.raises(ValueError, match="job 'train' was started with another command"):
        _run([edited], tmp_path)
    record.unlink()  # the way out the message names (with the outputs deleted): it runs and is recorded anew
    _run([edited], tmp_path)
    assert "max_train_steps 20" in json.loads(record.read_text())[1]


def test_the_record_names_the_run_folder_so_a_moved_run_still_matches(tmp_path):
    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir()

    def job(root):
        return Job("copy", "stage", [sys.executable, "-c", "", str(root / "data")], tmp_path / "copy.done")

    (tmp_path / "copy.done").write_text("done")
    _run([job(old)], old)  # skipped: nothing recorded, as for runs made before the records
    assert not (old / "logs" / "copy.command.json").exists()
    (tmp_path / "copy.done").unlink()
    with pytest.raises(RuntimeError):  # runs (and records) but writes no marker
        _run([job(old)], old)
    assert json.loads((old / "logs" / "copy.command.json").read_text())[-1] == "{run}/data"
    old.rename(new)
    (tmp_path / "copy.done").write_text("done")
    _run([job(new)], new)  # the same job in the moved folder: no complaint


def test_a_failing_job_stops_the_pool_with_its_log_tail(tmp_path):
    slow = _job(tmp_path, "slow", "import time; time.sleep(30)")
    bad = _job(tmp_path, "bad", "print('boom from the trainer'); raise SystemExit(3)")
    never = _job(tmp_path, "never", after=["bad"])
    start = time.time()
    with pytest.raises(RuntimeError, match=r"job bad failed \(exit 3\); log tail:\n(.|\n)*boom from the trainer"):
        _run([slow, bad, never], tmp_path)
    assert time.time() - start < 20  # `slow` was terminated, not waited for
    assert not slow.done_marker.exists() and not never.done_marker.exists()


def test_a_job_without_its_done_marker_fails(tmp_path):
    silent = Job("silent", "stage", [sys.executable, "-c", "pass"], tmp_path / "silent.done")
    with pytest.raises(RuntimeError, match=r"job silent failed \(exit 0, but it did not write .*silent\.done\)"):
        _run([silent], tmp_path)


def test_job_lists_and_arguments_are_checked(tmp_path):
    a, b = _job(tmp_path, "a", after=["b"]), _job(tmp_path, "b", after=["a"])
    with pytest.raises(ValueError, match=r"jobs \['a', 'b'\] wait for each other"):
        check_jobs([a, b])
    with pytest.raises(ValueError, match=r"job 'c' waits for \['missing'\], which are not in the job list"):
        check_jobs([_job(tmp_path, "c", after=["missing"])])
    with pytest.raises(ValueError, match=r"job names must be unique; repeated: \['d'\]"):
        check_jobs([_job(tmp_path, "d"), _job(tmp_path, "d")])
    with pytest.raises(TypeError, match="jobs must be Job instances, got list"):
        check_jobs([["python", "-c", "pass"]])
    check_jobs([_job(tmp_path, "e"), _job(tmp_path, "f", after=["e"]), _job(tmp_path, "g", after=["e", "f"])])
    with pytest.raises(ValueError, match="max_parallel=0 .*>= 1"):
        _run([_job(tmp_path, "e")], tmp_path, max_parallel=0)
    with pytest.raises(TypeError, match="max_parallel=True "):
        _run([_job(tmp_path, "e")], tmp_path, max_parallel=True)
    assert not (tmp_path / "e.done").exists()  # nothing ran


def test_timings_persist_and_sum_up_per_stage(tmp_path):
    path = tmp_path / "run" / "timings.json"
    timings = Timings(path)
    assert timings.timed("data", "data", lambda: 42) == 42
    timings.record("a", "training", start=100.0, end=110.0)
    timings.record("b", "training", start=105.0, end=120.0)  # overlaps a: the stage took 20 s, not 25
    timings.record_total("eval_1", "evaluation", 3.04)
    timings.record_total("eval_2", "evaluation", 4.0)
    again = Timings(path)  # a resumed run reads what the earlier one recorded
    assert again.entries == timings.entries
    assert again.entries["a"] == {"stage": "training", "seconds": 10.0, "start": 100.0, "end": 110.0}
    assert again.entries["eval_1"] == {"stage": "evaluation", "seconds": 3.0}
    walls = stage_wall_times(again.entries)
    assert walls["training"] == 20.0 and walls["evaluation"] == 4.0
    assert set(walls) == {"data", "training", "evaluation"} and walls["data"] >= 0


def test_a_finished_job_run_again_adds_its_time_as_a_second_piece(tmp_path, capsys):
    # e.g. a diffusion run given more steps: its done marker removed, the job resumes and goes further
    job = _job(tmp_path, "longer")
    timings = _run([job], tmp_path)
    first = timings.entries["longer"]["seconds"]
    job.done_marker.unlink()
    timings = _run([job], tmp_path)
    entry = timings.entries["longer"]
    assert entry["pieces"] == 2 and "start" not in entry and entry["seconds"] >= first
    assert capsys.readouterr().out.splitlines()[-1].endswith(" s (in 2 pieces)")
    assert stage_wall_times(timings.entries)["stage"] == entry["seconds"]
    timings.record_piece("other", "train", start=0.0, end=2.0)  # a first piece is an ordinary entry
    assert timings.entries["other"] == {"stage": "train", "seconds": 2.0, "start": 0.0, "end": 2.0}


def test_simulate_schedule_follows_the_pool_policy(tmp_path):
    jobs = [
        _job(tmp_path, "a"),
        _job(tmp_path, "b"),
        _job(tmp_path, "c", after=["a"]),
        _job(tmp_path, "d"),
    ]
    seconds = {"a": 10.0, "b": 4.0, "c": 5.0, "d": 3.0}
    # two slots: a | b, then d (ready, before c in the list? c waits for a) at 4 -> 7, c at 10 -> 15
    assert simulate_schedule(jobs, seconds, max_parallel=2) == 15.0
    assert simulate_schedule(jobs, seconds, max_parallel=1) == 22.0  # one at a time: the sum
    assert simulate_schedule(jobs, seconds, max_parallel=4) == 15.0  # the chain a -> c bounds it
    assert simulate_schedule([], {}, max_parallel=2) == 0.0
    with pytest.raises(KeyError, match="'d'"):
        simulate_schedule(jobs, {"a": 1.0, "b": 1.0, "c": 1.0}, max_parallel=2)
    with pytest.raises(ValueError, match=r"seconds\['a'\]=-1\.0 .*>= 0"):
        simulate_schedule(jobs, {**seconds, "a": -1.0}, max_parallel=2)
    with pytest.raises(ValueError, match="max_parallel=0"):
        simulate_schedule(jobs, seconds, max_parallel=0)
