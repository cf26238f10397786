"""FSDP2 for both trainers (`--fsdp`): parameters, gradients, optimizer states and EMAs sharded over the processes.

The trainer shards its model itself with torch's `fully_shard` (FSDP2: parameters become DTensors sharded on dim 0),
one unit per block of the model's `_no_split_modules` plus the root, the same code on CPU processes over gloo (the
tests) and on GPUs over NCCL. accelerate still starts the processes, shards the data, steps the LR schedule and keeps
the RNG states; it only does not wrap the model (its own FSDP plugin is chosen on accelerators only, which would
leave the CPU tests a different code path). Launch with a multi-process config (`training/configs/fsdp2.yaml`) and
pass `--fsdp`.

- **Mixed precision**: with `--mixed_precision bf16` the units gather their parameters in bf16 and reduce
  gradients in fp32 (`MixedPrecisionPolicy`); master weights, optimizer states and the EMAs stay fp32, and the
  forward also runs under accelerate's autocast, as without FSDP. fp16 is refused (its loss scaler is not
  DTensor-aware).
- **EMA**: diffusers `EMAModel` over the sharded parameters keeps sharded fp32 shadow copies; each process updates its
  own shards, with no communication.
- **Checkpoints**: model, optimizer and EMA shards are written with `torch.distributed.checkpoint` into
  `<checkpoint>/sharded/` (inside the atomic `checkpoint-<step>` folder of `save_checkpoint`); DCP reshards on
  load, so the tensors load on another number of processes too (the trainers' resume check still asks for
  `--resume_mismatch_ok`, since the data order changes).
- **Export**: `gather_model` / `gather_ema` collect full tensors on the main process, which saves the same
  `save_pretrained` folders and pipeline as a DDP run.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = [
    "SHARDED_FOLDER",
    "block_modules",
    "gather_ema",
    "gather_model",
    "register_sharded_hooks",
    "shard_model",
]

SHARDED_FOLDER = "sharded"  # <checkpoint>/sharded/: the DCP files of the model, optimizer and EMA shards
_EMA_META = "ema_state.json"  # <checkpoint>/<ema name>/ema_state.json: an EMA's counters (its tensors are in DCP)


def block_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The outermost submodules whose class is in `model._no_split_modules` (the blocks), in module order."""
    kinds = set(getattr(model, "_no_split_modules", None) or [])
    if not kinds:
        raise ValueError(f"{type(model).__name__} declares no _no_split_modules: it has no blocks to shard or compile")
    chosen: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if type(module).__name__ in kinds and not any(name.startswith(parent + ".") for parent, _ in chosen):
            chosen.append((name, module))
    return chosen


def shard_model(
    model: torch.nn.Module,
    device: torch.device,
    mixed_precision: str | None = None,
    extra_units: tuple[str, ...] = (),
) -> list[str]:
    """`fully_shard` each block of `model` (`block_modules`), then each submodule named in `extra_units`, then the
    root, in place, over all processes of the default process group, on `device`'s type. Call it after the model
    is built and on the device, before the optimizer and the EMAs are made (they must hold the sharded parameters).

    A unit gathers its parameters when its `forward` runs. A trainer that calls submodules outside the model's
    `forward` (train_dc_ae decodes the narrower prefixes with `model.decode`) names them in `extra_units` (there:
    the encoder and the decoder), so that every parameter belongs to a unit that gathers itself. Returns the
    names of the units."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if not dist.is_available() or not dist.is_initialized():
        raise ValueError("--fsdp needs a distributed launch (accelerate launch or torchrun), not a plain python run")
    if mixed_precision not in (None, "no", "bf16"):
        raise ValueError(f"--mixed_precision={mixed_precision!r} is not allowed with --fsdp: use bf16 or no")
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    if mixed_precision == "bf16":
        # blocks: gather in bf16, reduce in fp32; the root keeps its inputs as they come (the time t stays fp32)
        block_policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        root_policy = MixedPrecisionPolicy(
            param_dtype=torch.bfloat16, reduce_dtype=torch.float32, cast_forward_inputs=False
        )
    else:
        block_policy = root_policy = MixedPrecisionPolicy()
    units = block_modules(model) + [(name, model.get_submodule(name)) for name in extra_units]
    for _, module in units:
        fully_shard(module, mesh=mesh, mp_policy=block_policy)
    fully_shard(model, mesh=mesh, mp_policy=root_policy)
    return [name for name, _ in units] + ["(root)"]


def _full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a DTensor (a collective: every process must call it), a plain tensor as it is."""
    return tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor


def _original_class(model: torch.nn.Module) -> type:
    """The model's own class: `fully_shard` swaps a module's class for a subclass `FSDP<Name>(FSDPModule, Name)`."""
    from torch.distributed.fsdp import FSDPModule

    return next(cls for cls in type(model).__mro__ if not issubclass(cls, FSDPModule))


def gather_model(model: torch.nn.Module) -> torch.nn.Module | None:
    """A plain copy (diffusers `from_config`) of a sharded or plain model with its full weights, on the CPU of the
    main process; None on the others. Collective: every process must call it."""
    is_main = not dist.is_initialized() or dist.get_rank() == 0
    full = {}
    for name, tensor in model.state_dict().items():  # one tensor at a time: only the main process keeps them
        tensor = _full_tensor(tensor.detach())
        if is_main:
            full[name] = tensor.cpu()
    if not is_main:
        return None
    copy = _original_class(model).from_config(model.config)
    copy.load_state_dict(full)
    return copy


def gather_ema(ema, copy: torch.nn.Module | None):
    """A replicated EMA (`ema`'s class and counters) over the parameters of `copy` (the plain model of
    `gather_model`), holding `ema`'s full shadow weights, on the main process; None on the others. Collective."""
    shadows = []
    for shadow in ema.shadow_params:
        shadow = _full_tensor(shadow.detach())
        if copy is not None:
            shadows.append(shadow.cpu())
    if copy is None:
        return None
    gathered = type(ema)(copy.parameters(), model_cls=ema.model_cls, model_config=ema.model_config)
    gathered.load_state_dict({**ema.state_dict(), "shadow_params": shadows})
    return gathered


def _sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer, emas: dict) -> dict:
    """What DCP saves and loads in place: the model's and optimizer's sharded state dicts and each EMA's shadow
    parameters, keyed by the model's parameter names."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    names = [name for name, _ in model.named_parameters()]
    return {
        "model": get_model_state_dict(model),
        "optimizer": get_optimizer_state_dict(model, optimizer),
        "ema": {key: dict(zip(names, ema.shadow_params, strict=True)) for key, ema in emas.items()},
    }


def register_sharded_hooks(accelerator, model, optimizer, emas: dict, extra_save=None, extra_load=None) -> None:
    """Make `accelerator.save_state/load_state` write and read the shards of `model`, `optimizer` (the torch
    optimizer, not prepared by accelerate) and `emas` (name -> `EMAModel`) with `torch.distributed.checkpoint` in
    `<checkpoint>/sharded/`, and each EMA's counters in `<checkpoint>/<name>/ema_state.json`. `extra_save` /
    `extra_load` are called with the checkpoint folder (main process for save)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    def save_hook(models, weights, folder):
        dcp.save(_sharded_state(model, optimizer, emas), checkpoint_id=str(Path(folder) / SHARDED_FOLDER))
        if accelerator.is_main_process:
            for key, ema in emas.items():
                (Path(folder) / key).mkdir(parents=True, exist_ok=True)
                counters = {k: v for k, v in ema.state_dict().items() if k != "shadow_params"}
                (Path(folder) / key / _EMA_META).write_text(json.dumps(counters, indent=2))
            if extra_save is not None:
                extra_save(folder)

    def load_hook(models, folder):
        if not (Path(folder) / SHARDED_FOLDER).is_dir():
            raise ValueError(f"checkpoint {folder} holds no {SHARDED_FOLDER}/: it was not written by an --fsdp run")
        state = _sharded_state(model, optimizer, emas)
        dcp.load(state, checkpoint_id=str(Path(folder) / SHARDED_FOLDER))  # in place, resharded if needed
        set_model_state_dict(model, state["model"])
        set_optimizer_state_dict(model, optimizer, state["optimizer"])
        for key, ema in emas.items():
            path = Path(folder) / key / _EMA_META
            if not path.is_file():
                raise ValueError(f"checkpoint {folder} holds no {key}/{_EMA_META} (it was saved without that EMA)")
            ema.load_state_dict({**json.loads(path.read_text()), "shadow_params": list(state["ema"][key].values())})
        if extra_load is not None:
            extra_load(folder)

    accelerator.register_save_state_pre_hook(save_hook)
    accelerator.register_load_state_pre_hook(load_hook)
