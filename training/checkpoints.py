"""Checkpoints of a training run: accelerate's save_state/load_state for what resumes it, the EMA LoRA
in diffusers format for what uses it.

checkpoints/checkpoint-NNNNNN/ (NNNNNN = epochs done), written by the main process into a temporary
folder that is then renamed into place:

    pytorch_lora_weights.safetensors  the EMA LoRA (diffusers format, stamped with its base's fingerprint)
    custom_checkpoint_0.pkl           TrainerState: epoch, global_step, elapsed_seconds, best, config
    custom_checkpoint_1.pkl           the raw LoRA weights
    custom_checkpoint_2.pkl           the EMA (diffusers EMAModel), when ema is on
    optimizer.bin, random_states_0.pkl

checkpoints/best/ holds the LoRA of the best evaluation (keep_best) and best.json.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from studio.util import atomic_write_text
from training.policy import ema_weights, lora_parameters

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
TRAINER_STATE = "custom_checkpoint_0.pkl"  # the first object registered for checkpointing
RESUME_FILES = (TRAINER_STATE, "custom_checkpoint_1.pkl", "optimizer.bin", LORA_WEIGHT_NAME)


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or unreadable."""


@dataclass
class TrainerState:
    """The loop's counters, checkpointed with the weights (accelerate's register_for_checkpointing)."""

    epoch: int = 0
    global_step: int = 0
    elapsed_seconds: float = 0.0
    best: dict | None = None  # the keep_best record, so a resumed run keeps comparing against it
    config: dict = field(default_factory=dict)

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def register(accelerator, state: TrainerState, params: list, ema) -> None:
    """What save_state writes besides the optimizer, in the order of the files above."""
    import torch

    accelerator.register_for_checkpointing(state, torch.nn.ParameterList(params), *([ema] if ema is not None else []))


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(run_dir: Path, resume: str | bool | None) -> Path | None:
    if not resume:
        return None
    if resume is True or resume == "latest":
        ckpts = list_checkpoints(run_dir)
        if not ckpts:
            raise CheckpointError(f"--resume: no checkpoint in {Path(run_dir) / 'checkpoints'}")
        return ckpts[-1]
    return Path(resume)


def read_trainer_state(ckpt: Path) -> dict:
    """The checkpoint's TrainerState as a dict, read without the model."""
    import torch

    path = Path(ckpt) / TRAINER_STATE
    if not path.is_file():
        raise CheckpointError(f"{ckpt} is not a checkpoint (no {TRAINER_STATE})")
    try:
        return torch.load(path, weights_only=True)
    except Exception as e:  # torch.load raises whatever its unpickler and zip reader raise
        raise CheckpointError(f"{path} is corrupt: {e}") from None


def check_checkpoint(ckpt: Path) -> dict:
    """Before anything heavy loads: every file a resume reads is there and the trainer state reads."""
    state = read_trainer_state(ckpt)
    needed = RESUME_FILES + (("custom_checkpoint_2.pkl",) if state.get("config", {}).get("ema") else ())
    for name in needed:
        if not (Path(ckpt) / name).is_file():
            raise CheckpointError(f"{ckpt}: {name} is missing")
    return state


def load_checkpoint(accelerator, ckpt: Path) -> None:
    try:
        accelerator.load_state(str(ckpt))
    except Exception as e:  # truncated or foreign files: torch.load and load_state_dict errors of all kinds
        raise CheckpointError(f"{ckpt}: cannot load it: {e}") from None


def write_lora(out_dir: Path, transformer, ema) -> None:
    """The adapter in diffusers LoRA format (EMA weights when there is an EMA) into out_dir."""
    from diffusers.loaders import WanLoraLoaderMixin
    from peft import get_peft_model_state_dict

    from studio.pipelines import base_fingerprint, stamp_lora  # imports diffusers

    with ema_weights(ema, lora_parameters(transformer)):
        lora_sd = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
    WanLoraLoaderMixin.save_lora_weights(str(out_dir), transformer_lora_layers=lora_sd, weight_name=LORA_WEIGHT_NAME)
    stamp_lora(Path(out_dir) / LORA_WEIGHT_NAME, base_fingerprint(transformer))  # the base it fits, checked on load


def replace_dir(tmp: Path, final: Path) -> None:
    """Put the finished folder tmp at final; an existing final is moved aside first, then deleted."""
    if final.exists():
        old = final.parent / f".old-{final.name}-{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)


def save_checkpoint(accelerator, run_dir: Path, epoch: int, transformer, ema, keep_last: int) -> Path:
    """Main process only: checkpoint-<epoch> written into a temporary folder and renamed into place;
    the oldest beyond keep_last are deleted."""
    root = Path(run_dir) / "checkpoints"
    final = root / f"checkpoint-{epoch:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    accelerator.save_state(str(tmp))
    write_lora(tmp, transformer, ema)
    replace_dir(tmp, final)
    for stale in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def save_best(run_dir: Path, transformer, ema, best: dict) -> Path:
    """checkpoints/best <- the current (EMA) LoRA and best.json, replaced atomically."""
    root = Path(run_dir) / "checkpoints"
    final, tmp = root / "best", root / f".tmp-best-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_lora(tmp, transformer, ema)
    atomic_write_text(tmp / "best.json", json.dumps(best, indent=1))
    replace_dir(tmp, final)
    return final


def truncate_metrics(path: Path, epoch: int) -> None:
    """Drop records of epochs after the checkpoint so a resumed run's log equals an uninterrupted one."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["epoch"] < epoch]
    atomic_write_text(path, "".join(line + "\n" for line in kept))
