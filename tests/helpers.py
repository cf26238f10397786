"""Helpers shared by the trainer tests: run a training script in-process, launch it on 2 CPU processes, or kill
one mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from accelerate.state import AcceleratorState, GradientState


def run_in_process(script, argv: list[str]):
    """`script.main(script.parse_args(argv))` in this process, with accelerate's singletons reset before and after."""
    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    try:
        return script.main(script.parse_args(argv))
    finally:
        AcceleratorState._reset_state(True)
        GradientState._reset_state()


def sigkill_when_checkpoint_appears(command: list[str], env: dict, cwd: Path, checkpoint: Path, timeout=180) -> int:
    """Start `command`, SIGKILL it as soon as the folder `checkpoint` exists, return its exit code."""
    process = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout
        while not checkpoint.is_dir():
            if process.poll() is not None:
                raise AssertionError(f"the run ended before {checkpoint.name} appeared")
            if time.monotonic() > deadline:
                raise AssertionError(f"{checkpoint.name} did not appear within {timeout} s")
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.wait(timeout=60)
    return process.returncode


def two_process_launch(*script_and_args, quiet: bool = False) -> list[str]:
    """`accelerate launch` of a script with 2 processes (DDP over gloo; run it with ``ACCELERATE_USE_CPU=1``)."""
    launch = [sys.executable, "-m", "accelerate.commands.launch", *(["--quiet"] if quiet else []), "--multi_gpu"]
    launch += (
        "--num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no --main_process_port 0".split()
    )
    return launch + [str(item) for item in script_and_args]
