"""Preemption-safe training (dc_ae_hf/training/run.py): a stop signal finishes the step, checkpoints it and exits
with status 75, and the same command resumes exactly; a checkpoint that cannot be written (a full disk) is one line
naming the path, exit status 74, no `.tmp` folder, the previous checkpoint kept; --checkpointing_minutes."""

from __future__ import annotations

import gc
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
import weakref
from pathlib import Path

import pytest
from conftest import REPO_ROOT
from helpers import (
    TRAINING,
    assert_same_weights,
    load_script,
    run_in_process,
    subprocess_env,
    two_process_launch,
)
from helpers import usit_argv as _usit_argv

from dc_ae_hf.training.run import CHECKPOINT_WRITE_STATUS, PREEMPTED_STATUS

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def train_script():
    return load_script("train_usit")


@pytest.fixture(scope="module")
def workspace(usit_workspace):
    return usit_workspace


def usit_argv(workspace: Path, output_dir: Path, *extra: str) -> list[str]:
    return _usit_argv(workspace, output_dir, "--validation_class_labels", *extra)


def _finished_checkpoints(folder: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in folder.glob("checkpoint-*") if p.suffix != ".tmp")


def _signal_when(path: Path, signum: int, pid: int, timeout: float = 180) -> threading.Thread:
    """Send `signum` to `pid` as soon as `path` exists (from a thread: the run goes on meanwhile)."""

    def wait_and_signal():
        deadline = time.monotonic() + timeout
        while not path.is_dir() and time.monotonic() < deadline:
            time.sleep(0.002)
        os.kill(pid, signum)

    thread = threading.Thread(target=wait_and_signal, daemon=True)
    thread.start()
    return thread


def test_a_stop_signal_checkpoints_the_step_and_the_same_command_resumes_exactly(
    train_script, workspace, tmp_path, capsys
):
    argv = ["--max_train_steps", "24", "--checkpointing_steps", "4", "--gradient_accumulation_steps", "2"]
    stopped = tmp_path / "stopped"
    thread = _signal_when(stopped / "checkpoint-4", signal.SIGUSR1, os.getpid())
    with pytest.raises(SystemExit) as exit_info:
        run_in_process(train_script, usit_argv(workspace, stopped, *argv))
    thread.join()
    assert exit_info.value.code == PREEMPTED_STATUS
    steps = _finished_checkpoints(stopped)
    step = steps[-1]
    assert 4 < step < 24 and step % 4 != 0, steps  # the step the signal arrived in, not a scheduled checkpoint
    assert not list(stopped.glob("*.tmp")) and not (stopped / "pipeline").exists()
    assert json.loads((stopped / f"checkpoint-{step}" / "training_state.json").read_text())["step"] == step
    err = capsys.readouterr().err
    assert f"stopped by SIGUSR1 after step {step}: {stopped / f'checkpoint-{step}'} written" in err
    assert signal.getsignal(signal.SIGUSR1) == signal.SIG_DFL  # the handlers are the process's again

    config = run_in_process(train_script, usit_argv(workspace, stopped, *argv))  # the same command
    assert config["resume_from"] == str(stopped / f"checkpoint-{step}")
    straight = tmp_path / "straight"
    run_in_process(train_script, usit_argv(workspace, straight, *argv))
    assert_same_weights(straight / "transformer", stopped / "transformer")
    assert_same_weights(straight / "transformer_ema", stopped / "transformer_ema")


@pytest.mark.slow
def test_sigterm_to_the_cli_exits_75_and_a_full_disk_is_one_line_keeping_the_previous_checkpoint(
    train_script, workspace, tmp_path
):
    run = tmp_path / "run"
    argv = [*usit_argv(workspace, run, "--max_train_steps", "400", "--checkpointing_steps", "2")]
    command = [sys.executable, str(TRAINING / "train_usit.py"), *argv]
    process = subprocess.Popen(
        command, env=subprocess_env(), cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    _signal_when(run / "checkpoint-2", signal.SIGTERM, process.pid).join()
    _, err = process.communicate(timeout=120)
    assert process.returncode == PREEMPTED_STATUS, err[-3000:]
    step = _finished_checkpoints(run)[-1]
    assert 2 <= step < 400 and f"stopped by SIGTERM after step {step}" in err

    # the next checkpoint cannot be written (files are capped at 64 KiB, as on a full disk: the write fails)
    def cap_file_size():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

    full = subprocess.run(
        command,
        env=subprocess_env(),
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=cap_file_size,
    )
    assert full.returncode == CHECKPOINT_WRITE_STATUS, full.stderr[-3000:]
    lines = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in full.stderr, full.stderr[-3000:]
    assert f"could not be written in {run}" in lines[0]
    assert f"the previous checkpoint {run / f'checkpoint-{step}'} is kept" in lines[0]
    assert not list(run.glob("*.tmp")) and _finished_checkpoints(run)[-1] == step
    shorter = [*argv, "--max_train_steps", str(step + 2)]  # the previous checkpoint still loads
    assert run_in_process(train_script, shorter)["resume_from"] == str(run / f"checkpoint-{step}")


def test_checkpointing_minutes_adds_a_wall_clock_cadence(train_script, workspace, tmp_path):
    run = tmp_path / "run"
    argv = ["--max_train_steps", "3", "--checkpointing_steps", "1000", "--checkpointing_minutes", "1e-9"]
    run_in_process(train_script, usit_argv(workspace, run, *argv))
    assert _finished_checkpoints(run) == [1, 2, 3]
    with pytest.raises(ValueError, match=r"--checkpointing_minutes=0.0 is not allowed: must be a finite number > 0"):
        run_in_process(train_script, usit_argv(workspace, tmp_path / "bad", "--checkpointing_minutes", "0"))


@pytest.mark.slow
def test_sigterm_to_the_launcher_and_every_worker_checkpoints_one_agreed_step(workspace, tmp_path):
    """As a scheduler does: SIGTERM to `accelerate launch` and to both workers. Both ranks finish the same step and
    write its checkpoint together (both RNG states in it); the launcher exits 128 + 15."""
    run = tmp_path / "run"
    argv = usit_argv(workspace, run, "--max_train_steps", "400", "--checkpointing_steps", "2")
    launcher = subprocess.Popen(
        two_process_launch(TRAINING / "train_usit.py", *argv),
        env={**subprocess_env(), "ACCELERATE_USE_CPU": "1"},
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 180
    while not (run / "checkpoint-2").is_dir() and launcher.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    workers = _children(launcher.pid)
    for pid in [launcher.pid, *workers]:
        os.kill(pid, signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signal.SIGTERM, err[-3000:]
    step = _finished_checkpoints(run)[-1]
    assert 2 < step < 400 and not list(run.glob("*.tmp")), err[-3000:]
    assert {"random_states_0.pkl", "random_states_1.pkl"} <= {p.name for p in (run / f"checkpoint-{step}").iterdir()}
    assert err.count(f"stopped by SIGTERM after step {step}") == 1, err[-3000:]


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@pytest.mark.parametrize("stop", [None, PREEMPTED_STATUS])
def test_run_script_frees_what_main_left_in_reference_cycles_before_the_interpreter_ends(stop):
    """A finished script's destroyed process group is kept alive by a reference cycle (models, accelerator, run);
    `run_script` collects it, after a normal return and after a stop's SystemExit, so gloo's threads are joined
    while the interpreter is whole (left to finalisation, one aborted a finished 2-process run)."""
    from dc_ae_hf.training.run import run_script

    freed = []

    def main(args):
        cycle = {"kind": args}
        cycle["self"] = cycle
        holder = type("Holder", (), {})()
        holder.cycle = cycle
        cycle["holder"] = holder
        weakref.finalize(holder, freed.append, args)
        if stop is not None:
            raise SystemExit(stop)
        return "done"

    gc.disable()  # only run_script's collection may free the cycle
    try:
        if stop is None:
            assert run_script(main, lambda argv: "run") == "done"
        else:
            with pytest.raises(SystemExit) as exit_info:
                run_script(main, lambda argv: "run")
            assert exit_info.value.code == PREEMPTED_STATUS
        assert freed == ["run"]
    finally:
        gc.enable()
