"""The skeleton both trainers share: the run folder, the accelerator, resuming, the step loop, logging, the end.

A trainer's `main` reads top to bottom (DiT's train.py): resolve and check the configuration, open a `TrainingRun`
(its `RunSettings` and the keys of the configuration a resume must keep), build the models, data and optimiser,
`prepare` them, `run.track(...)` what a checkpoint holds, `run.resume()`, then::

    for step, micro_batches in run.steps(train_dataloader):
        ...  # for each micro-batch, `with run.accumulate(model):` forward, backward, optimiser step
        run.log(step, lr=...)  # after run.record(losses) for each micro-batch
        run.save_checkpoint_if_due(step)
    run.finish(...)

What the skeleton guarantees, for both trainers:

- **The output folder is this run's.** `check_output_dir` refuses, before anything is written, a folder that holds
  something else (a pipeline, another trainer's run, unrelated files). While a run is alive it holds an OS lock on
  `<output_dir>/.run.lock`; a second run on the same folder is refused, and a killed run leaves no stale lock.
- **Workers die with their launcher.** Under `accelerate launch` (or torchrun) each worker watches its parent and
  stops when the launcher is killed (`kill -9` included), so no orphan keeps training in the folder.
- **Resuming is exact and honest.** Re-running the same command resumes from the newest finished checkpoint; one
  that cannot be loaded is reported by name and the previous one is taken. Settings that change the model, the
  objective or the data order (the trainer declares them as keys of its resolved configuration) must equal the
  checkpoint's (`--resume_mismatch_ok` to override deliberately). The run's first `training_config.json` is never
  overwritten.
- **Stateless randomness.** Each optimisation step reseeds torch from (seed, rank, step) (`seed_step`).
- **One code path for DDP and FSDP2.** `run.shard(model)` (FSDP2 with `--fsdp`, `dc_ae_hf.training.sharding`),
  `run.prepare(...)`, `run.accumulate(model)`, `run.track(...)` and `run.full_models(...)` are what a trainer calls
  either way; only they know whether the parameters are replicated or sharded.
- **Cheap logging.** Losses are summed on the device and synchronised once every `--logging_steps`.
- **Preemption loses nothing.** On SIGTERM, SIGUSR1 or SIGINT (to the launcher, which forwards SIGTERM, or to
  every process, as a scheduler does) the current optimisation step is finished, every process agrees on it, its
  checkpoint is written (atomically) and the process exits with `PREEMPTED_STATUS` (75). Re-running the same command
  resumes exactly. A second SIGINT aborts at once (no checkpoint). `--checkpointing_minutes` adds a wall-clock cadence.
- **A checkpoint that cannot be written** (the disk is full) leaves no `.tmp` folder and the previous checkpoint in
  place, and ends the run with one line naming the path (exit status `CHECKPOINT_WRITE_STATUS`, 74).
- **One message for a user error.** `run_script` prints `error: <message>` once (rank 0) for a configuration error
  and exits with status 2 (with `accelerate launch --quiet`, nothing else is printed).

Exit statuses of both trainers: 0 done; 1 a bug or hardware failure (traceback); 2 a usage error (one line);
74 a checkpoint could not be written (one line); 75 stopped by a signal after writing the checkpoint of the step
(re-run the same command to resume).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import torch
from accelerate.utils import DistributedType

from dc_ae_hf.checks import exit_with_error
from dc_ae_hf.hub import HubPushError, push_folder_to_hub
from dc_ae_hf.output_folders import describe_folder
from dc_ae_hf.training.checkpoints import (
    CheckpointWriteError,
    list_checkpoints,
    read_checkpoint_metadata,
    register_pretrained_hooks,
    resume_candidates,
    resume_settings,
    save_checkpoint,
    setting_differences,
)
from dc_ae_hf.training.ema import load_ema
from dc_ae_hf.training.randomness import seed_step
from dc_ae_hf.training.sharding import gather_ema, gather_model, register_sharded_hooks, shard_model

try:  # POSIX advisory locks; elsewhere runs are not locked
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

__all__ = [
    "CHECKPOINT_WRITE_STATUS",
    "PREEMPTED_STATUS",
    "STOP_SIGNALS",
    "RunSettings",
    "TrainingRun",
    "check_output_dir",
    "free_destroyed_process_groups",
    "make_accelerator",
    "run_script",
]

logger = logging.getLogger(__name__)
CONFIG_FILE = "training_config.json"
LOCK_FILE = ".run.lock"
SETTINGS_FILE = "resume_settings.json"  # in each checkpoint: the settings a resume must not change
_training_started = threading.Event()  # set by the first step: later errors keep their traceback
_held_locks: dict[str, object] = {}  # output folder -> this process's lock handle (a run re-entered in-process)
PREEMPTED_STATUS = 75  # EX_TEMPFAIL: stopped by a signal, the step's checkpoint written; re-run to resume
CHECKPOINT_WRITE_STATUS = 74  # EX_IOERR: a checkpoint could not be written (e.g. no space left on the device)
STOP_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")  # finish the step, checkpoint it, exit with PREEMPTED_STATUS


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def run_script(main: Callable, parse_args: Callable, argv: list[str] | None = None):
    """Run a script's `main(parse_args(argv))`. A usage error (ValueError, TypeError, OSError raised before the first
    training step) prints one line `error: ...` on rank 0 and exits with status 2; errors after training started keep
    their traceback (they are bugs or hardware failures, not usage errors), and `DC_AE_HF_TRACEBACK=1` keeps it
    always."""
    _training_started.clear()
    try:
        result = main(parse_args(argv))
    except CheckpointWriteError as error:  # during training, but the user's to fix (space, permissions): one line
        if os.environ.get("DC_AE_HF_TRACEBACK") == "1":
            raise
        exit_with_error(error, CHECKPOINT_WRITE_STATUS, show=_rank() == 0)
    except (ValueError, TypeError, OSError) as error:
        if _training_started.is_set() or os.environ.get("DC_AE_HF_TRACEBACK") == "1":
            raise
        exit_with_error(error, show=_rank() == 0)
    except SystemExit as stop:  # a stop after its checkpoint (PREEMPTED_STATUS), argparse's: same code, groups freed
        code, stop.__traceback__ = stop.code, None  # the traceback's frames hold the models
        del stop
        free_destroyed_process_groups()
        raise SystemExit(code) from None
    free_destroyed_process_groups()
    return result


def free_destroyed_process_groups() -> None:
    """Collect the garbage after a script's `main` returned, so that the process groups it destroyed
    (`Accelerator.end_training`) are freed, and their gloo threads joined, while the interpreter is whole.

    `destroy_process_group` only unregisters a group; the object and its worker threads live on while anything
    refers to it, and a training script's models, accelerator and run refer to each other (a cycle), so the group
    was otherwise freed during interpreter finalisation. A gloo thread that needs the GIL then ends the process with
    SIGABRT ("terminate called without an active exception"): a 2-process CPU run that had written every file
    failed so in CI. pytorch/pytorch#179291 describes the same crash for groups never destroyed."""
    gc.collect()


def check_output_dir(output_dir: str | os.PathLike, script: str, model_folder: str) -> None:
    """Refuse an existing, non-empty `output_dir` that is not a run of `script` (before anything is written), saying
    what it holds (`dc_ae_hf.output_folders.describe_folder`).

    A run of `script` is a folder whose `training_config.json` names it, or (runs of earlier versions) one whose
    configuration names no script and whose checkpoints hold `model_folder` (`vae` for train_dc_ae, `transformer`
    for train_usit).
    """
    path = Path(output_dir)
    if not path.exists():
        return
    if not path.is_dir():
        raise ValueError(f"--output_dir={str(output_dir)!r} is not allowed: it is a file, not a folder")
    if not any(path.iterdir()) or _is_run_of(path, script, model_folder):
        return
    raise ValueError(
        f"--output_dir={str(output_dir)!r} is not allowed: it holds {describe_folder(path)}, which this run would "
        f"overwrite; choose a new or empty folder, or the --output_dir of an earlier {script}.py run to resume it"
    )


def _is_run_of(path: Path, script: str, model_folder: str) -> bool:
    if not (path / CONFIG_FILE).is_file():
        return False
    try:
        owner = json.loads((path / CONFIG_FILE).read_text()).get("script")
    except (ValueError, AttributeError):
        owner = None
    if owner is None:  # a run written before the config named its script: its checkpoints hold the model
        return any((c / model_folder).is_dir() for c in list_checkpoints(path))
    return owner == script


def make_accelerator(
    output_dir: str | os.PathLike,
    mixed_precision: str | None,
    report_to: str,
    logging_dir: str,
    gradient_accumulation_steps: int,
    seed: int,
):
    """The `Accelerator` both trainers use: trackers under `output_dir/logging_dir`, gradient accumulation that does
    not re-sync at epoch ends (exact resume), and a seedable sampler (same data order after a resume)."""
    from accelerate import Accelerator, DataLoaderConfiguration
    from accelerate.utils import GradientAccumulationPlugin, ProjectConfiguration

    output_dir = Path(output_dir)
    return Accelerator(
        mixed_precision=mixed_precision,
        log_with=None if report_to == "none" else report_to,
        project_config=ProjectConfiguration(project_dir=str(output_dir), logging_dir=str(output_dir / logging_dir)),
        gradient_accumulation_plugin=GradientAccumulationPlugin(
            num_steps=gradient_accumulation_steps, sync_with_dataloader=False
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=seed),
    )


def _under_launcher() -> bool:
    """True in a worker started by `accelerate launch` or torchrun (not in a plain `python train.py`, whose parent
    may legitimately go away, e.g. under nohup)."""
    return "TORCHELASTIC_RUN_ID" in os.environ or any(k.startswith("ACCELERATE_") for k in os.environ)


def _watch_launcher(poll_seconds: float = 0.5) -> None:
    """Stop this process (SIGTERM) once its launcher is gone: the parent pid changes when the parent dies."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        print(f"the launcher (pid {parent}) is gone: stopping this worker", file=sys.stderr, flush=True)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


@dataclass(frozen=True)
class RunSettings:
    """What `TrainingRun` (and the export at its end) needs to know of a run: each field is the trainers' flag of
    that name (`dc_ae_hf.training.arguments.add_optimization_arguments` / `add_run_arguments`)."""

    output_dir: str | os.PathLike
    max_train_steps: int = 1
    seed: int = 0
    gradient_accumulation_steps: int = 1
    mixed_precision: str | None = None  # None: the accelerate config's
    fsdp: bool = False  # shard the model over the processes (`dc_ae_hf.training.sharding`)
    resume_from_checkpoint: str | None = None  # None / "latest": the newest finished checkpoint; "none"; a path
    resume_mismatch_ok: bool = False
    checkpointing_steps: int = 500
    checkpointing_minutes: float | None = None
    checkpoints_total_limit: int | None = None
    logging_steps: int = 10
    report_to: str = "none"
    logging_dir: str = "logs"  # relative to output_dir
    push_to_hub: bool = False
    hub_model_id: str | None = None
    self_contained: bool = False  # the exported folders carry their code (`dc_ae_hf.training.export`)

    @property
    def repo_id(self) -> str:
        """`hub_model_id`, or the name of the output folder."""
        return self.hub_model_id or Path(self.output_dir).resolve().name


class TrainingRun:
    """One training run in `settings.output_dir` (see the module docstring).

    Args:
        settings: the run's `RunSettings`.
        config: the resolved configuration (JSON-able, the flags under "args"); written as the run's
            `training_config.json` when it is the first, with `script` added.
        script: the trainer's name, e.g. "train_usit".
        resume_keys: the settings a resume must not change (model, objective, data order): name -> the keys of
            `config` they are made of (`checkpoints.resume_settings`); stored with every checkpoint and compared on
            resume.
    """

    def __init__(
        self, settings: RunSettings, config: dict, script: str, resume_keys: Mapping[str, str | Sequence[str]]
    ) -> None:
        self.settings, self.config, self.script = settings, config, script
        self.output_dir = Path(settings.output_dir)
        self.accelerator = accelerator = make_accelerator(
            self.output_dir,
            settings.mixed_precision,
            settings.report_to,
            settings.logging_dir,
            settings.gradient_accumulation_steps,
            settings.seed,
        )
        if _under_launcher():
            _watch_launcher()
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
        self.resume_settings = {**resume_settings(config, resume_keys), "num_processes": accelerator.num_processes}
        config["accelerate"] = {
            "distributed_type": str(accelerator.distributed_type),
            "mixed_precision": accelerator.mixed_precision,
            "num_processes": accelerator.num_processes,
        }
        self.step, self.epoch, self.batch_in_epoch = 0, 0, 0
        self._upsampled, self._counted = None, 0  # images the ADM crop enlarged (on the device) among those counted
        self.resumed_from: Path | None = None
        self.sharded = settings.fsdp
        if self.sharded and accelerator.distributed_type not in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
            raise ValueError(
                f"--fsdp shards the model itself over the processes of a plain multi-process launch (e.g. "
                f"accelerate launch --config_file training/configs/fsdp2.yaml), not under {accelerator.distributed_type}"
            )
        self._optimizer = None  # the torch optimizer of a sharded run (its state is checkpointed with DCP)
        self._lock = None
        self._claim_output_dir()
        self._losses: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}
        self._scalars: dict[str, float] = {}
        self._logged_steps = 0
        self.progress = None
        self._stop_signal: str | None = None  # the stop signal received (STOP_SIGNALS), None while none was
        self._previous_handlers: dict[int, object] = {}
        self._flag_group = None  # a gloo process group for the per-step stop flag (no device sync)
        self._last_checkpoint_time = time.monotonic()

    # ---- the run folder ----------------------------------------------------------------------------------------

    def _claim_output_dir(self) -> None:
        """Main process: take the lock, write the first configuration; every process fails alike if it cannot."""
        from accelerate.utils import broadcast_object_list

        error = None
        if self.accelerator.is_main_process:
            try:
                self.output_dir.mkdir(parents=True, exist_ok=True)
                self._lock = self._take_lock()
                config_path = self.output_dir / CONFIG_FILE
                if not config_path.is_file():  # the run's first configuration is never overwritten
                    text = json.dumps({"script": self.script, **self.config}, indent=2, default=str)
                    tmp = config_path.with_name(CONFIG_FILE + ".tmp")
                    tmp.write_text(text)
                    os.replace(tmp, config_path)
            except (OSError, ValueError) as failure:
                error = str(failure)
        if self.accelerator.num_processes > 1:
            error = broadcast_object_list([error])[0]
        if error is not None:
            raise ValueError(error)

    def _take_lock(self):
        key = str(self.output_dir.resolve())
        if fcntl is None or key in _held_locks:
            return _held_locks.get(key)
        handle = open(self.output_dir / LOCK_FILE, "a+")  # noqa: SIM115 - held for the run's lifetime
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "unknown"
            handle.close()
            raise ValueError(
                f"--output_dir={str(self.output_dir)!r} is not allowed: another live run (pid {holder}) is training "
                "in it; wait for it to end or stop it, or choose another --output_dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        _held_locks[key] = handle
        return handle

    # ---- the model: replicated (DDP) or sharded (--fsdp) ---------------------------------------------------------

    def shard(self, model: torch.nn.Module, extra_units: tuple[str, ...] = ()) -> torch.nn.Module:
        """With `--fsdp`: move `model` to the device and shard it in place (`sharding.shard_model`, with its
        `extra_units`), before its optimizer and EMAs are made. Otherwise `model` unchanged (DDP wraps it in
        `prepare`)."""
        if not self.sharded:
            return model
        model.to(self.accelerator.device)
        units = shard_model(model, self.accelerator.device, self.accelerator.mixed_precision, extra_units)
        logger.info(
            f"--fsdp: {type(model).__name__} sharded over {self.accelerator.num_processes} processes in "
            f"{len(units)} units"
        )
        return model

    def prepare(self, model, optimizer, dataloader, lr_scheduler) -> tuple:
        """`accelerator.prepare` of the model, its optimizer, the data and the LR schedule. A sharded model is left
        as it is (already sharded by `shard`) and its optimizer is wrapped by accelerate without being registered:
        accelerate would save its DTensor state from the main process only, so `track` checkpoints it with DCP."""
        if not self.sharded:
            return self.accelerator.prepare(model, optimizer, dataloader, lr_scheduler)
        from accelerate.optimizer import AcceleratedOptimizer

        self._optimizer = optimizer
        dataloader, lr_scheduler = self.accelerator.prepare(dataloader, lr_scheduler)
        return model, AcceleratedOptimizer(optimizer, device_placement=False), dataloader, lr_scheduler

    @contextlib.contextmanager
    def accumulate(self, *models):
        """`accelerator.accumulate(*models)`; a sharded model reduce-scatters its gradients only on the micro-batch
        that ends an optimisation step, as DDP's `no_sync` does."""
        with self.accelerator.accumulate(*models):
            for model in models:
                if self.sharded and hasattr(model, "set_requires_gradient_sync"):
                    model.set_requires_gradient_sync(self.accelerator.sync_gradients)
            yield

    def full_models(self, model, emas: dict) -> tuple:
        """`(model, emas)` with full weights on the main process, `(None, {})` on the others: the unwrapped model
        and the EMAs themselves when replicated; gathered plain copies (on the device) when sharded (collective:
        every process must call it)."""
        accelerator = self.accelerator
        if not self.sharded:
            if not accelerator.is_main_process:
                return None, {}
            return accelerator.unwrap_model(model), emas
        copy = gather_model(model)
        gathered = {name: gather_ema(ema, copy) for name, ema in emas.items()}
        if copy is None:
            return None, {}
        copy.to(accelerator.device).train(model.training)
        for ema in gathered.values():
            ema.to(accelerator.device)
        return copy, gathered

    # ---- checkpoints -------------------------------------------------------------------------------------------

    def track(self, models: dict, emas: dict | None = None) -> None:
        """What a checkpoint holds besides accelerate's state: each prepared model as a `save_pretrained` folder
        `<checkpoint>/<name>/` and each EMA (diffusers `EMAModel`) as `<checkpoint>/<name>/`."""
        emas = emas or {}
        accelerator = self.accelerator

        def save_settings(folder):  # main process
            (Path(folder) / SETTINGS_FILE).write_text(json.dumps(self.resume_settings, indent=2, default=str))

        def save_extras(folder):  # main process
            save_settings(folder)
            for name, ema in emas.items():
                ema.save_pretrained(str(Path(folder) / name))

        def load_emas(folder):
            for name, ema in emas.items():
                path = Path(folder) / name
                if not path.is_dir():
                    raise ValueError(f"checkpoint {folder} holds no {name}/ (it was saved without that EMA)")
                load_ema(ema, path)
                ema.to(accelerator.device)

        if self.sharded:  # DCP shards of the model, its optimizer and the EMAs (`dc_ae_hf.training.sharding`)
            if len(models) != 1 or self._optimizer is None:
                raise ValueError("--fsdp checkpoints one sharded model and its optimizer, prepared with run.prepare")
            register_sharded_hooks(
                accelerator,
                next(iter(models.values())),
                self._optimizer,
                emas,
                extra_save=save_settings,
            )
        elif accelerator.distributed_type == DistributedType.FSDP:  # accelerate writes the sharded models itself
            accelerator.register_save_state_pre_hook(
                lambda m, w, folder: accelerator.is_main_process and save_extras(folder)
            )
            accelerator.register_load_state_pre_hook(lambda m, folder: load_emas(folder))
        else:
            register_pretrained_hooks(accelerator, models, extra_save=save_extras, extra_load=load_emas)

    def resume(self) -> int:
        """Load the checkpoint to resume from (if any; recorded as `config["resume_from"]`) and return the step it
        reached (0 for a fresh run)."""
        settings, accelerator = self.settings, self.accelerator
        candidates = resume_candidates(settings.resume_from_checkpoint, self.output_dir)
        self.config["resume_from"] = None
        for index, checkpoint in enumerate(candidates):
            try:
                metadata = read_checkpoint_metadata(checkpoint)
                self._check_settings(checkpoint, metadata["step"])
                accelerator.load_state(str(checkpoint))
            except _ResumeRefused:
                raise
            except Exception as error:  # noqa: BLE001 - any failure to load is reported and the previous one taken
                explicit = settings.resume_from_checkpoint not in (None, "latest")
                if explicit or index + 1 == len(candidates):
                    hint = "pass --resume_from_checkpoint none to start over" if not explicit else "choose another"
                    raise ValueError(f"checkpoint {checkpoint} cannot be loaded ({error}); {hint}") from error
                logger.warning(
                    f"checkpoint {checkpoint.name} cannot be loaded ({type(error).__name__}: {error}); "
                    f"resuming from {candidates[index + 1].name} instead"
                )
                continue
            self.step, self.epoch = metadata["step"], metadata.get("epoch", 0)
            self.batch_in_epoch = metadata.get("batch_in_epoch", 0)
            self.resumed_from = checkpoint
            self.config["resume_from"] = str(checkpoint)
            accelerator.print(f"Resumed from {checkpoint.name} (step {self.step})")
            return self.step
        return 0

    def _check_settings(self, checkpoint: Path, step: int) -> None:
        path = checkpoint / SETTINGS_FILE
        saved = json.loads(path.read_text()) if path.is_file() else None
        if saved is None:
            logger.warning(f"{checkpoint.name} records no settings (an older version): the resume cannot be checked")
            return
        differences = setting_differences(saved, self.resume_settings)
        if not differences:
            return
        listing = "; ".join(differences)
        if not self.settings.resume_mismatch_ok:
            raise _ResumeRefused(
                f"resuming {checkpoint} with other settings than it was trained with ({listing}): they change the "
                "model, the objective or the data order. Re-run with the checkpoint's settings, use a new "
                "--output_dir, or pass --resume_mismatch_ok to resume with the new settings deliberately"
            )
        logger.warning(f"--resume_mismatch_ok: resuming {checkpoint.name} with changed settings ({listing})")
        if self.accelerator.is_main_process:
            path = self.output_dir / f"training_config-resumed-{step}.json"
            path.write_text(json.dumps({"script": self.script, **self.config}, indent=2, default=str))

    def save_checkpoint_if_due(self, step: int) -> Path | None:
        """End of an optimisation step (collective): write `checkpoint-<step>` every `--checkpointing_steps`, every
        `--checkpointing_minutes`, at the last step, and when a stop signal arrived on any process; after the
        latter, end the run with exit status `PREEMPTED_STATUS`."""
        stop, timed = self._agree_on_stop()
        if not (stop or timed or self.due(step, self.settings.checkpointing_steps)):
            return None
        metadata = {"epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch}
        path = save_checkpoint(
            self.accelerator, self.output_dir, step, self.settings.checkpoints_total_limit, metadata=metadata
        )
        self._last_checkpoint_time = time.monotonic()
        if stop:
            self._stop(step, path)
        return path

    # ---- stop signals: finish the step, checkpoint it, exit --------------------------------------------------------

    def _install_stop_handlers(self) -> None:
        """Catch STOP_SIGNALS (main thread only): note the signal; the step in progress runs to its end. A second
        SIGINT aborts at once (KeyboardInterrupt), as an impatient Ctrl-C expects."""
        if threading.current_thread() is not threading.main_thread():
            logger.warning("the training loop runs outside the main thread: stop signals end it without a checkpoint")
            return

        def on_signal(signum, frame):
            name = signal.Signals(signum).name
            if name == "SIGINT" and self._stop_signal is not None:
                raise KeyboardInterrupt
            if self._stop_signal is None:
                self._stop_signal = name
                print(
                    f"{name} received: finishing step {self.step + 1}, then writing its checkpoint and exiting "
                    f"(status {PREEMPTED_STATUS})"
                    + (" ; press Ctrl-C again to abort without it" * (name == "SIGINT")),
                    file=sys.stderr,
                    flush=True,
                )

        for name in STOP_SIGNALS:
            signum = getattr(signal, name)
            self._previous_handlers[signum] = signal.signal(signum, on_signal)

    def _restore_signal_handlers(self) -> None:
        for signum, handler in self._previous_handlers.items():
            signal.signal(signum, handler)
        self._previous_handlers = {}

    def _agree_on_stop(self) -> tuple[bool, bool]:
        """(stop, checkpoint now for --checkpointing_minutes), the same on every process: any process's signal or
        clock counts (one tiny all-reduce over gloo per step with several processes, no device synchronisation)."""
        minutes = self.settings.checkpointing_minutes
        timed = minutes is not None and time.monotonic() - self._last_checkpoint_time >= 60 * minutes
        flags = [self._stop_signal is not None, timed]
        if self.accelerator.num_processes > 1:
            import torch.distributed as dist

            tensor = torch.tensor(flags, dtype=torch.int32)
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX, group=self._flag_group)
            flags = [bool(v) for v in tensor.tolist()]
        return flags[0], flags[1]

    def _stop(self, step: int, checkpoint: Path) -> None:
        """After the stop checkpoint: close the run (trackers, lock) and exit with PREEMPTED_STATUS."""
        if self.progress is not None:
            self.progress.close()
        if self.accelerator.is_main_process:
            cause = self._stop_signal or "a signal to another process"
            print(
                f"stopped by {cause} after step {step}: {checkpoint} written; re-run the same command to resume",
                file=sys.stderr,
                flush=True,
            )
        self.finish()
        raise SystemExit(PREEMPTED_STATUS)

    # ---- the loop ----------------------------------------------------------------------------------------------

    def due(self, step: int, every: int) -> bool:
        """True every `every` steps and at the last step."""
        return step % every == 0 or step >= self.settings.max_train_steps

    def _batches(self, dataloader) -> Iterator:
        """Batches across epochs from where the run stands (after a resume: the next unseen batch)."""
        accelerator, dataset = self.accelerator, dataloader.dataset
        epoch, skip = self.epoch, self.batch_in_epoch
        # images that carry an "upsampled" flag (`dc_ae_hf.data.images`) are counted over a first pass seen from its
        # start by a map-style dataset (the same number of batches on every process: the count is reduced at its end)
        counting = epoch == 0 and skip == 0 and hasattr(dataset, "__len__")
        while True:
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)  # per-sample crops and flips depend on (seed, epoch, index)
            dataloader.set_epoch(epoch)
            loader = accelerator.skip_first_batches(dataloader, skip) if skip else dataloader
            loader.set_epoch(epoch)
            count = skip
            for batch in loader:
                count += 1
                self.epoch, self.batch_in_epoch = epoch, count
                if counting and isinstance(batch, dict) and "upsampled" in batch:
                    self._count_upsampled(batch["upsampled"])
                yield batch
            if counting:
                self.report_upsampled("the first pass over the training data")
                counting = False
            if count == 0:
                raise ValueError(
                    "the training data yielded no batch: fewer examples than --train_batch_size x processes"
                )
            epoch, skip = epoch + 1, 0

    def _count_upsampled(self, flags: torch.Tensor) -> None:
        upsampled = flags.sum()  # stays on the device: no host sync per batch
        self._upsampled = upsampled if self._upsampled is None else self._upsampled + upsampled
        self._counted += flags.numel()

    def report_upsampled(self, where: str) -> None:
        """Say once (main process) how many training images were smaller than the resolution and were upsampled by
        the ADM crop, over what was counted (`_batches`); every process takes part (a sum over processes)."""
        if self._upsampled is None:
            return
        counts = torch.stack([self._upsampled, torch.tensor(self._counted, device=self._upsampled.device)])
        upsampled, images = (int(v) for v in self.accelerator.reduce(counts, "sum"))
        self._upsampled, self._counted = None, 0
        if self.accelerator.is_main_process:
            logger.info(
                f"{upsampled} of {images} training images ({upsampled / max(images, 1):.1%}) in {where} were smaller "
                "than the resolution and were upsampled by the ADM center crop"
            )

    def steps(self, dataloader) -> Iterator[tuple[int, Iterator]]:
        """Yield `(step, micro_batches)` for every remaining optimisation step (1-based): the
        `--gradient_accumulation_steps` micro-batches of that step. torch's RNG is reseeded from (seed, rank, step)
        first, so every draw of the step is independent of how the run got there."""
        from tqdm.auto import tqdm

        settings, accelerator = self.settings, self.accelerator
        self.progress = tqdm(
            total=settings.max_train_steps, initial=self.step, disable=not accelerator.is_local_main_process
        )
        if accelerator.num_processes > 1 and self._flag_group is None:
            import torch.distributed as dist

            # the stop flag travels over gloo on the CPU: a flag on the GPU (NCCL) would synchronise every step
            self._flag_group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        self._install_stop_handlers()
        _training_started.set()
        batches = self._batches(dataloader)
        try:
            while self.step < settings.max_train_steps:
                step = self.step + 1
                seed_step(settings.seed, accelerator.process_index, step)
                yield step, islice(batches, settings.gradient_accumulation_steps)
                self.step = step
                self.progress.update(1)
        finally:  # the last checkpoint is written: from here on a signal has its usual effect
            self._restore_signal_handlers()
        self.progress.close()

    def record(self, losses: dict[str, torch.Tensor]) -> None:
        """Add one micro-batch's losses (detached; they stay on the device until the next log)."""
        for name, value in losses.items():
            value = value.detach().float()
            self._losses[name] = self._losses[name] + value if name in self._losses else value
            self._counts[name] = self._counts.get(name, 0) + 1

    def log(self, step: int, **scalars: float) -> None:
        """End of an optimisation step: every `--logging_steps` and at the last step, log the mean of each recorded
        loss and of each scalar since the last log, with one host synchronisation (not one per step). Losses are
        averaged over processes, except the per-prefix ones (`loss_c<c'>`): ranks draw different c'."""
        for name, value in scalars.items():
            self._scalars[name] = self._scalars.get(name, 0.0) + float(value)
        self._logged_steps += 1
        if not self.due(step, self.settings.logging_steps):
            return
        shared = sorted(n for n in self._losses if not n.startswith("loss_c"))
        local = sorted(n for n in self._losses if n.startswith("loss_c"))
        means = {}
        if shared:
            stacked = torch.stack([self._losses[n] / self._counts[n] for n in shared])
            means.update(zip(shared, self.accelerator.reduce(stacked, reduction="mean").tolist()))
        if local:
            means.update(zip(local, torch.stack([self._losses[n] / self._counts[n] for n in local]).tolist()))
        means.update({name: total / self._logged_steps for name, total in self._scalars.items()})
        self.accelerator.log(means, step=step)
        if self.progress is not None and "loss" in means:
            self.progress.set_postfix(loss=f"{means['loss']:.4f}")
        self._losses, self._counts, self._scalars, self._logged_steps = {}, {}, {}, 0

    def init_trackers(self, project: str) -> None:
        """Start the trackers (main process) with the flags (the configuration's "args") as their config."""
        if self.accelerator.is_main_process and self.settings.report_to != "none":
            flags = self.config.get("args", {})
            flat = {k: v if isinstance(v, (int, float, str, bool)) else json.dumps(v) for k, v in flags.items()}
            self.accelerator.init_trackers(project, config=flat)

    # ---- the end -----------------------------------------------------------------------------------------------

    def finish(self, push_folder: Path | None = None, repo_id: str | None = None) -> None:
        """End the run: push `push_folder` to `repo_id` when `--push_to_hub` (a failure loses nothing: one line,
        exit status 1, after the trackers are closed), end the trackers, release the folder's lock."""
        self.report_upsampled("the part of the first pass over the training data that the run saw")  # a short run
        failure = None
        if self.accelerator.is_main_process and self.settings.push_to_hub and push_folder is not None:
            try:
                push_folder_to_hub(push_folder, repo_id)
                logger.info(f"pushed {push_folder} to {repo_id}")
            except HubPushError as error:
                failure = error
        # every process tears its process group down together: a rank that destroyed it and exited while the main
        # one was still exporting was once seen to abort ("terminate called without an active exception", gloo);
        # the group's threads are joined after `main` returns (`run_script` -> `free_destroyed_process_groups`)
        self.accelerator.wait_for_everyone()
        self.accelerator.end_training()
        self._restore_signal_handlers()
        if self._lock is not None:
            _held_locks.pop(str(self.output_dir.resolve()), None)
            with contextlib.suppress(OSError):
                self._lock.close()
            self._lock = None
        if failure is not None:
            raise SystemExit(f"error: {failure}")

    @property
    def repo_id(self) -> str:
        """`--hub_model_id`, or the name of the output folder."""
        return self.settings.repo_id


class _ResumeRefused(ValueError):
    """Resuming would silently change the run; not a loading failure, so no fallback to an older checkpoint."""
