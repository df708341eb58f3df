"""Flow-GRPO training of a LoRA on the generator with World-R1 rewards.

    python -m training.train --preset tinyworld-cpu --out runs/NAME [key=value ...]
    python -m training.train --out runs/NAME --resume [key=value ...]        # continue exactly
    python -m training.train --out runs/NAME --resume-from runs/NAME/checkpoints/checkpoint-000010
    accelerate launch --multi_gpu --num_processes 8 -m training.train --preset world-r1-small --out runs/NAME

SIGINT or SIGTERM (Ctrl-C, Cancel in the studio) stops at the next safe point with a checkpoint;
a second one aborts without saving the current epoch (see StopFlag).

One epoch: draw prompts (rigid or fluid phase), roll out K SDE samples per prompt with log-probs
and CFG, decode, score in a thread pool while the next batch rolls out, turn rewards into
per-prompt advantages, then take `steps_per_epoch` optimizer steps over the trained timesteps
with the PPO-clipped ratio and the KL to the reference (the same transformer with its LoRA
adapter disabled), update the EMA, log, checkpoint.

Run directory: config.json, metrics.jsonl, samples/epoch-NNNNNN/ (evaluation clips),
checkpoints/checkpoint-NNNNNN/ (pytorch_lora_weights.safetensors in diffusers format — the EMA
weights — plus trainer_state.safetensors/.json for exact resume).
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.util import atomic_write_text
from training.config import ConfigError, TrainConfig, apply_overrides, check_batches, from_dict, get_preset, help_text, validate

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_FORMAT = 1
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
STATE_TENSORS = "trainer_state.safetensors"
STATE_JSON = "trainer_state.json"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, incomplete or corrupt."""


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------
def load_prompts(source: str) -> list[str]:
    """Prompts from a file (.txt/.jsonl/.json/.csv, through studio.prompts.load_prompt_file),
    optionally filtered by category with 'FILE#category' (JSONL rows with a "category" field),
    or from a TinyWorld split 'tinyworld:train|test|dynamic'."""
    if source.startswith("tinyworld:"):
        from studio.tinyworld.corpus import load_split

        m = re.fullmatch(r"tinyworld:(\w+)(?:\[(\d*):(\d*)\])?", source)
        if m is None:
            raise ConfigError(f"prompt source {source!r}: expected tinyworld:SPLIT or tinyworld:SPLIT[start:stop]")
        split, start, stop = m.group(1), m.group(2), m.group(3)
        try:
            prompts = [row["prompt"] for row in load_split(split)]
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"prompt source {source!r}: {e}") from None
        prompts = prompts[int(start) if start else None : int(stop) if stop else None]
        if not prompts:
            raise ConfigError(f"prompt source {source!r} selects no prompts")
        return prompts
    path_text, _, category = source.partition("#")
    path = Path(path_text)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # presets name repository files; runs may start elsewhere
    if not path.is_file():
        raise ConfigError(f"prompt file {path_text!r} does not exist")
    if category:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        prompts = [r["prompt"] for r in rows if isinstance(r, dict) and r.get("category") == category]
        if not prompts:
            raise ConfigError(f"prompt source {source!r}: no rows with category {category!r}")
        return prompts
    from studio.prompts import load_prompt_file

    try:
        return load_prompt_file(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"prompt source {source!r}: {e}") from None


def phase_at(step: int, cfg: TrainConfig, has_dynamic: bool) -> str:
    """'rigid' or 'fluid' for the optimizer step `step` of the periodic decoupled schedule (method §4)."""
    if not has_dynamic or cfg.dynamic_steps == 0:
        return "rigid"
    return "rigid" if step % (cfg.main_steps + cfg.dynamic_steps) < cfg.main_steps else "fluid"


@dataclass
class RoundPlan:
    """One rollout round over all processes: P × B items, K consecutive items per prompt."""

    prompts: list[str]
    group_ids: list[int]
    use_3d: list[bool]
    seeds: list[int]


def plan_epoch(cfg: TrainConfig, epoch: int, phase: str, rigid: list[str], dynamic: list[str], num_processes: int) -> list[RoundPlan]:
    """Prompts, groups and noise seeds of an epoch: a function of (seed, epoch) only, so resume repeats it.

    Fluid phase: every group from the dynamic prompts. Rigid phase: static-world prompts, except a
    `dynamic_mix` share of groups from the dynamic prompts; R_3D is off for exactly those items.
    """
    rng = np.random.default_rng([cfg.seed, epoch, 0x5EED])
    per_round = num_processes * cfg.per_device_batch_size
    groups = per_round // cfg.group_size
    orders = {"rigid": rng.permutation(len(rigid)), "fluid": rng.permutation(len(dynamic)) if dynamic else None}
    drawn = {"rigid": 0, "fluid": 0}
    rounds = []
    for r in range(cfg.num_batches_per_epoch):
        prompts, use_3d = [], []
        for _ in range(groups):
            source = phase
            if phase == "rigid" and dynamic and cfg.dynamic_mix > 0 and rng.uniform() < cfg.dynamic_mix:
                source = "fluid"
            pool = dynamic if source == "fluid" else rigid
            prompt = pool[int(orders[source][drawn[source] % len(pool)])]
            drawn[source] += 1
            prompts += [prompt] * cfg.group_size
            use_3d += [source == "rigid"] * cfg.group_size
        rounds.append(
            RoundPlan(
                prompts=prompts,
                group_ids=[r * groups + g for g in range(groups) for _ in range(cfg.group_size)],
                use_3d=use_3d,
                seeds=[int(s) for s in (np.repeat(rng.integers(0, 2**31 - 1, size=groups), cfg.group_size) if cfg.same_noise
                                        else rng.integers(0, 2**31 - 1, size=per_round))],
            )
        )
    return rounds


# ---------------------------------------------------------------------------------------------
# Policy helpers
# ---------------------------------------------------------------------------------------------
def add_lora(transformer, cfg: TrainConfig) -> list:
    """Freeze the transformer, add the LoRA adapter, return its trainable parameters (fp32)."""
    import torch
    from peft import LoraConfig

    transformer.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    transformer.add_adapter(
        LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian", target_modules=list(cfg.lora_targets))
    )
    params = [p for _, p in transformer.named_parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"lora_targets {cfg.lora_targets} matched no module of the transformer")
    for p in params:
        p.data = p.data.float()
    return params


def lora_named_params(transformer) -> dict:
    return {n: p for n, p in transformer.named_parameters() if p.requires_grad}


@contextlib.contextmanager
def adapter_disabled(transformer):
    """The reference policy: the same network with its LoRA adapter switched off."""
    transformer.disable_adapters()
    try:
        yield
    finally:
        transformer.enable_adapters()


def camera_injector(pipe, latents, prompts, seeds, cfg: TrainConfig):
    """after_step(x, k) adding the camera-aware stepwise delta (method §5), or None when the camera
    init is off, the pipeline has none, or no prompt in the batch has a camera clause."""
    if not cfg.camera_init or not hasattr(pipe, "camera_delta"):
        return None
    delta = pipe.camera_delta(latents, prompts, seeds, cfg.num_frames)
    if not bool(delta.abs().amax() > 0):
        return None
    return lambda x, k: pipe.inject(x, delta, k)


def _per_sample(t, n: int):
    if t is None:
        return None
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n > 1 else t


def sampling_sigmas(pipe, num_steps: int):
    import torch

    sigmas = torch.as_tensor(pipe.sigmas(num_steps), dtype=torch.float32).flatten().cpu()
    if float(sigmas[-1]) != 0.0:
        sigmas = torch.cat([sigmas, torch.zeros(1)])
    if len(sigmas) != num_steps + 1 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise RuntimeError(f"pipeline sigmas must decrease from σ_0 to 0 over {num_steps} steps, got {sigmas.tolist()}")
    return sigmas


def step_loss(pipe, cfg: TrainConfig, sigma, sigma_next, x, x_next, old_log_prob, advantages, cond, uncond, autocast):
    """GRPO loss terms of one trained step for a micro-batch: the policy's log-prob of the stored
    SDE transition x → x_next (with CFG, as in the rollout) and the KL of its mean to the reference's."""
    import torch

    from training.flow_grpo import grpo_loss, sde_step_with_logprob

    with autocast():
        v = pipe.predict_velocity(x, sigma, cond, uncond, cfg.guidance_scale)
    _, log_prob, mean, std = sde_step_with_logprob(v, x, sigma, sigma_next, cfg.noise_level, prev_sample=x_next)
    ref_mean = None
    if cfg.kl_beta > 0:
        with torch.no_grad(), adapter_disabled(pipe.transformer), autocast():
            v_ref = pipe.predict_velocity(x, sigma, cond, uncond, cfg.guidance_scale)
        ref_mean = sde_step_with_logprob(v_ref, x, sigma, sigma_next, cfg.noise_level, prev_sample=x_next)[2]
    return grpo_loss(log_prob, old_log_prob, advantages, cfg.clip_range, mean, ref_mean, std, cfg.kl_beta)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def list_checkpoints(run_dir: Path) -> list[Path]:
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def read_checkpoint_meta(ckpt: Path) -> dict:
    """Parse and verify a checkpoint's JSON and file checksums (cheap; runs before the model loads)."""
    ckpt = Path(ckpt)
    meta_path = ckpt / STATE_JSON
    if not meta_path.is_file():
        raise CheckpointError(f"{ckpt} is not a checkpoint (no {STATE_JSON})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{meta_path} is corrupt: {e}") from None
    if meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{ckpt}: checkpoint format {meta.get('format')!r}, expected {CHECKPOINT_FORMAT}")
    for name, digest in meta.get("files", {}).items():
        f = ckpt / name
        if not f.is_file():
            raise CheckpointError(f"{ckpt}: {name} is missing")
        if _sha256(f) != digest:
            raise CheckpointError(f"{ckpt}: {name} is corrupt (checksum mismatch)")
    return meta


def resolve_resume(run_dir: Path, resume: str | bool | None) -> Path | None:
    if not resume:
        return None
    if resume is True or resume == "latest":
        ckpts = list_checkpoints(run_dir)
        if not ckpts:
            raise CheckpointError(f"--resume: no checkpoint in {Path(run_dir) / 'checkpoints'}")
        return ckpts[-1]
    return Path(resume)


def write_lora(out_dir: Path, transformer, ema) -> None:
    """The adapter in diffusers LoRA format (EMA weights when there is an EMA) into out_dir."""
    from diffusers.loaders import WanLoraLoaderMixin
    from peft import get_peft_model_state_dict

    from studio.pipelines import base_fingerprint, stamp_lora  # imports diffusers

    with ema.swapped_in() if ema is not None else contextlib.nullcontext():
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


def save_checkpoint(run_dir: Path, state: dict, transformer, lora_params: dict, ema, optimizer, keep_last: int) -> Path:
    """Write checkpoint-<epoch> into a temporary folder, then rename it into place; prune old ones."""
    import torch
    from safetensors.torch import save_file

    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"checkpoint-{state['epoch']:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()

    # The shipped LoRA carries the EMA weights (used for evaluation); the raw ones go to trainer state.
    write_lora(tmp, transformer, ema)

    tensors = {f"lora/{n}": p.detach().cpu().contiguous() for n, p in lora_params.items()}
    if ema is not None:
        tensors.update({f"ema/{i}": s.cpu().contiguous() for i, s in enumerate(ema.shadow)})
    opt = optimizer.state_dict()
    for idx, st in opt["state"].items():
        for key, value in st.items():
            tensors[f"optim/{idx}/{key}"] = torch.as_tensor(value).detach().cpu().contiguous()
    tensors["rng/torch"] = torch.get_rng_state()
    save_file(tensors, str(tmp / STATE_TENSORS))

    meta = dict(state)
    meta.update(
        format=CHECKPOINT_FORMAT,
        lora_names=list(lora_params),
        optimizer_param_groups=opt["param_groups"],
        ema_num_updates=ema.num_updates if ema is not None else None,
        python_rng=_jsonable(random.getstate()),
        numpy_rng=_jsonable(np.random.get_state()),
        files={name: _sha256(tmp / name) for name in (LORA_WEIGHT_NAME, STATE_TENSORS)},
    )
    atomic_write_text(tmp / STATE_JSON, json.dumps(meta, indent=1))
    replace_dir(tmp, final)
    for stale in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _jsonable(x):
    if isinstance(x, np.ndarray):
        return {"__ndarray__": x.tolist(), "dtype": str(x.dtype)}
    if isinstance(x, (tuple, list)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    return x


def _unjson(x):
    if isinstance(x, dict) and "__ndarray__" in x:
        return np.asarray(x["__ndarray__"], dtype=x["dtype"])
    if isinstance(x, list):
        return tuple(_unjson(v) for v in x)
    return x


def load_checkpoint(ckpt: Path, meta: dict, lora_params: dict, ema, optimizer) -> None:
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(Path(ckpt) / STATE_TENSORS))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{ckpt}: cannot read {STATE_TENSORS}: {e}") from None
    if list(lora_params) != meta["lora_names"]:
        raise CheckpointError(f"{ckpt}: its LoRA layout does not match this model (different lora_rank/targets?)")
    with torch.no_grad():
        for n, p in lora_params.items():
            t = tensors[f"lora/{n}"]
            if t.shape != p.shape:
                raise CheckpointError(f"{ckpt}: {n} has shape {tuple(t.shape)}, the model {tuple(p.shape)}")
            p.copy_(t)
    if ema is not None:
        shadow = [tensors[f"ema/{i}"] for i in range(len(ema.shadow))]
        ema.load_state_dict({"num_updates": meta["ema_num_updates"], "decay_cap": ema.decay_cap, "shadow": shadow})
    opt_state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim/"):
            _, idx, name = key.split("/", 2)
            opt_state.setdefault(int(idx), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["optimizer_param_groups"]})
    torch.set_rng_state(tensors["rng/torch"])
    random.setstate(_unjson(meta["python_rng"]))
    np.random.set_state(_unjson(meta["numpy_rng"]))


# ---------------------------------------------------------------------------------------------
# Ctrl-C
# ---------------------------------------------------------------------------------------------
class StopFlag:
    """SIGINT or SIGTERM (Ctrl-C, or Cancel in the studio): stop at the next safe point and save a
    checkpoint. Safe points are between rollout rounds and while waiting for rewards (the epoch is
    dropped and the state it started from is saved, so --resume repeats it) and the end of the
    epoch's update. A second signal aborts at once (the last checkpoint stays), but never while a
    checkpoint is being written: then it aborts right after."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, announce: bool):
        self.requested = False
        self.announce = announce
        self._previous: dict = {}
        self._saving = 0
        self._abort_after_save = False

    def _say(self, text: str) -> None:
        if self.announce:
            print(text, file=sys.stderr, flush=True)

    def _handler(self, signum, frame):
        if not self.requested:
            self.requested = True
            self._say("\nstopping: saving a checkpoint at the next safe point (the current epoch's rollouts are "
                      "dropped, or its update is finished); signal again to abort without saving")
        elif self._saving:
            self._abort_after_save = True
            self._say("\nabort requested: a checkpoint is being written; stopping right after it")
        else:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def saving(self):
        """Around checkpoint writes: a second signal waits until the files are in place."""
        self._saving += 1
        try:
            yield
        finally:
            self._saving -= 1
        if not self._saving and self._abort_after_save:
            raise KeyboardInterrupt

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handler) for sig in self.SIGNALS}
        return self

    def __exit__(self, *exc):
        for sig, previous in self._previous.items():
            if previous is not None:
                signal.signal(sig, previous)
        self._previous = {}
        return False


# ---------------------------------------------------------------------------------------------
# Evaluation clips
# ---------------------------------------------------------------------------------------------
def attribute_watch(scorer_name: str, prompts: list[str], clips: list[np.ndarray]) -> dict[str, float]:
    """Colour and shape right (CLIP zero-shot judge) on the single-object eval prompts.

    The collapse watch: a policy that games the 3D reward loses these first (method doc, traps).
    Empty when no prompt names exactly one object with a colour, or no scorer loads.
    """
    from studio.tinyworld.scene import parse_scene_prompt
    from training.eval_generator import attribute_accuracy, judge_attributes
    from training.rewards import get_scorer

    rows, kept = [], []
    for prompt, clip in zip(prompts, clips):
        objects = parse_scene_prompt(prompt).objects
        if len(objects) == 1 and objects[0].color:
            rows.append({"scene": {"objects": [{"color": objects[0].color, "shape": objects[0].shape}]}})
            kept.append(np.asarray(clip))
    if not rows or not scorer_name:
        return {}
    try:
        scorer = get_scorer(scorer_name)
    except (OSError, RuntimeError, ValueError):
        return {}
    acc = attribute_accuracy(rows, *judge_attributes(scorer, kept))
    return {"eval/colour_right": acc["color_single"], "eval/shape_right": acc["shape_single"],
            "eval/attribute_clips": float(acc["single_object_n"])}


def write_eval_clips(pipe, cfg: TrainConfig, prompts: list[str], out_dir: Path, sigmas, autocast) -> list:
    """Deterministic (ODE) samples of fixed held-out prompts and seeds, saved as mp4."""
    import torch

    from training.flow_grpo import euler_step

    seeds = [1000 + i for i in range(len(prompts))]
    cond, uncond = pipe.encode_prompt(prompts, cfg.guidance_scale)
    x = pipe.prepare_latents(prompts, seeds, cfg.num_frames, cfg.height, cfg.width, camera_init=cfg.camera_init)
    inject = camera_injector(pipe, x, prompts, seeds, cfg)
    with torch.no_grad(), autocast():
        for k in range(len(sigmas) - 1):
            v = pipe.predict_velocity(x, float(sigmas[k]), cond, _per_sample(uncond, len(prompts)), cfg.guidance_scale)
            x = euler_step(v, x, float(sigmas[k]), float(sigmas[k + 1]))
            x = inject(x, k) if inject is not None else x
        frames = np.asarray(pipe.decode_latents(x))
    from studio.video import write_mp4

    for i, clip in enumerate(frames):
        write_mp4(clip, out_dir / f"{i:02d}.mp4")
    atomic_write_text(out_dir / "prompts.json", json.dumps({"prompts": prompts, "seeds": seeds}, indent=1))
    return list(frames)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------
@dataclass
class RunSummary:
    out_dir: Path
    epochs_done: int
    global_step: int
    last_checkpoint: Path | None
    stopped_early: bool
    best: dict | None = None  # {"score", "epoch", "step", "metric"} of checkpoints/best, when keep_best is on


def best_score(keep_best: str, record: dict) -> float | None:
    """Sum of the '+'-joined eval metrics in record; None when one is missing (not evaluated)."""
    values = [record.get(k.strip()) for k in keep_best.split("+")]
    if any(v is None or not np.isfinite(v) for v in values):
        return None
    return float(sum(values))


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


def _stats(prefix: str, values: np.ndarray) -> dict:
    if len(values) == 0:
        return {f"{prefix}/mean": None, f"{prefix}/std": None}
    return {f"{prefix}/mean": float(np.mean(values)), f"{prefix}/std": float(np.std(values))}


def train(
    cfg: TrainConfig,
    out_dir: str | Path,
    resume: str | bool | None = None,
    pipeline: Any = None,
    rewards: Any = None,
    progress: bool = True,
    stop: StopFlag | None = None,
) -> RunSummary:
    """Run (or continue) a training run. `pipeline` is a generator object or a zero-argument factory
    (default: studio.pipelines.load_pipeline(cfg.pipeline)); `rewards` a RewardSet-like callable
    (default: the World-R1 rewards of the config); `stop` a StopFlag already installed by the caller
    (the CLI installs it before the model loads, so a cancel during start-up also ends with a checkpoint)."""
    # ---- check everything cheap before loading anything heavy ----
    import torch
    from accelerate import PartialState

    out_dir = Path(out_dir)
    validate(cfg)
    cpu = not torch.cuda.is_available()  # accelerate only spreads CPU processes (gloo) when told cpu=True
    num_processes = PartialState(cpu=cpu).num_processes
    check_batches(cfg, num_processes)
    rigid_prompts = load_prompts(cfg.train_prompts)
    dynamic_prompts = load_prompts(cfg.dynamic_prompts) if cfg.dynamic_prompts else []
    eval_prompts = load_prompts(cfg.eval_prompts)[: cfg.num_eval_clips] if cfg.num_eval_clips > 0 else []
    ckpt = resolve_resume(out_dir, resume)
    meta = read_checkpoint_meta(ckpt) if ckpt is not None else None
    if meta is not None:
        changed = [k for k in ("pipeline", "lora_rank", "lora_alpha", "lora_targets", "ema") if meta["config"].get(k) != getattr(cfg, k)]
        if changed:
            raise CheckpointError(f"{ckpt} was trained with different {', '.join(changed)}; it cannot continue under this config")
    if ckpt is None and list_checkpoints(out_dir):
        raise ConfigError(f"{out_dir} already holds checkpoints: pass --resume to continue it or choose a new --out")

    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from training import flow_grpo
    from training.rewards import RewardPool, check_backends, world_r1_rewards

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)
    is_main = accelerator.is_main_process
    rank, device = accelerator.process_index, accelerator.device
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
        if ckpt is None:
            (out_dir / "metrics.jsonl").unlink(missing_ok=True)  # a run that died before its first checkpoint
        print("config: " + " ".join(f"{k}={v}" for k, v in cfg.to_dict().items()), flush=True)

    if rewards is None:
        try:
            check_backends(cfg)
        except RuntimeError as e:
            raise ConfigError(str(e)) from None

    # ---- policy: the pipeline's transformer with a LoRA adapter; reference = adapter disabled ----
    if pipeline is None:
        from studio.pipelines import load_pipeline

        try:
            pipe = load_pipeline(cfg.pipeline, device=str(device), cache=False)  # private: we add a LoRA
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"cannot load the generator {cfg.pipeline!r}: {e}") from None
    else:
        pipe = pipeline() if callable(pipeline) and not hasattr(pipeline, "transformer") else pipeline
        pipe.to(device)
    transformer = pipe.transformer
    transformer.eval()
    add_lora(transformer, cfg)
    if cfg.gradient_checkpointing:
        transformer.enable_gradient_checkpointing()
    named = lora_named_params(transformer)
    params = list(named.values())
    optimizer = torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay, eps=1e-8
    )
    ema = flow_grpo.EMA(params, decay_cap=cfg.ema_decay) if cfg.ema else None
    reward_set = rewards if rewards is not None else world_r1_rewards(cfg)
    sigmas = sampling_sigmas(pipe, cfg.num_steps)

    start_epoch, global_step, elapsed = 0, 0, 0.0
    best: dict | None = None  # the keep_best record, carried in checkpoints so a resumed run keeps comparing
    if ckpt is not None:
        load_checkpoint(ckpt, meta, named, ema, optimizer)
        start_epoch, global_step, elapsed = meta["epoch"], meta["global_step"], meta["elapsed_seconds"]
        best = meta.get("best")
        if is_main:
            _truncate_metrics(out_dir / "metrics.jsonl", start_epoch)
            print(f"resumed from {ckpt} at epoch {start_epoch}, step {global_step}", flush=True)

    def velocity_fn(cond, uncond):
        return lambda x, sigma: pipe.predict_velocity(x, sigma, cond, uncond, cfg.guidance_scale)

    def log(record: dict):
        if is_main:
            with open(out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    B, K = cfg.per_device_batch_size, cfg.group_size
    last_ckpt: Path | None = ckpt
    epoch = start_epoch
    stopped = False
    bar = tqdm(total=cfg.epochs, initial=start_epoch, disable=not (progress and is_main), desc="epochs", dynamic_ncols=True)
    pool = RewardPool(reward_set, cfg.reward_workers)

    def stop_agreed() -> bool:
        # A collective on every process, so call it only at points every process reaches equally often.
        return bool(_gather(accelerator, np.array([float(stop.requested)])).max() > 0)

    def save(state_epoch: int, seconds: float) -> Path | None:
        accelerator.wait_for_everyone()
        path = None
        if is_main:
            state = {"epoch": state_epoch, "global_step": global_step, "elapsed_seconds": seconds, "config": cfg.to_dict(),
                     "best": best}
            with stop.saving():
                path = save_checkpoint(out_dir, state, transformer, named, ema, optimizer, cfg.keep_last)
        accelerator.wait_for_everyone()
        return path

    try:
        with contextlib.nullcontext(stop) if stop is not None else StopFlag(announce=is_main) as stop:
            while epoch < cfg.epochs:
                t_epoch = time.perf_counter()
                rng_at_start = (torch.get_rng_state(), random.getstate(), np.random.get_state())
                abandoned = stop_agreed()
                timing = dict.fromkeys(("rollout", "decode", "rewards", "rewards_wait", "train", "eval"), 0.0)
                phase = phase_at(global_step, cfg, bool(dynamic_prompts))
                rounds = plan_epoch(cfg, epoch, phase, rigid_prompts, dynamic_prompts, num_processes)
                epoch_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
                steps = flow_grpo.trained_steps(
                    cfg.num_steps, cfg.timestep_fraction, cfg.sde_window_size, cfg.sde_window_range, epoch_gen
                )

                # ---- 1. rollouts: SDE with log-probs; rewards of batch b overlap the rollout of b+1 ----
                batches, futures = [], []
                for r, plan in enumerate(rounds):
                    if abandoned or (r > 0 and stop_agreed()):
                        abandoned = True
                        break
                    mine = slice(rank * B, (rank + 1) * B)
                    prompts, seeds = plan.prompts[mine], plan.seeds[mine]
                    t0 = time.perf_counter()
                    with torch.no_grad(), accelerator.autocast():
                        cond, uncond = pipe.encode_prompt(prompts, cfg.guidance_scale)
                        uncond = _per_sample(uncond, B)
                        latents = pipe.prepare_latents(prompts, seeds, cfg.num_frames, cfg.height, cfg.width, camera_init=cfg.camera_init)
                        # One SDE generator per item, seeded by its place in the round: the same noise
                        # however the round is split across processes.
                        sde_gens = [torch.Generator(device=latents.device).manual_seed(sde_seed(cfg.seed, epoch, r, i))
                                    for i in range(rank * B, (rank + 1) * B)]
                        ro = flow_grpo.rollout(
                            velocity_fn(cond, uncond), latents, sigmas, steps, cfg.noise_level, sde_gens,
                            camera_injector(pipe, latents, prompts, seeds, cfg),
                        )
                    t1 = time.perf_counter()
                    with torch.no_grad():
                        frames = np.asarray(pipe.decode_latents(ro.final_latents))
                    t2 = time.perf_counter()
                    timing["rollout"] += t1 - t0
                    timing["decode"] += t2 - t1
                    futures.append(pool.submit(prompts, list(frames), plan.use_3d[mine]))
                    batches.append(dict(ro=ro, cond=cond, uncond=uncond, group_ids=plan.group_ids[mine], use_3d=plan.use_3d[mine]))
                t0 = time.perf_counter()
                results = []
                for f in futures:
                    # A single process may leave the wait for rewards as soon as it is asked to stop;
                    # several processes stay in step and agree at stop_agreed() below.
                    while not (abandoned or f.done()):
                        time.sleep(0.05)
                        abandoned = stop.requested and accelerator.num_processes == 1
                    if abandoned:
                        break
                    results.append(f.result())
                abandoned = abandoned or stop_agreed()
                if abandoned:
                    # Nothing of this epoch has reached the weights yet: save the state it started from
                    # (random generators included), so --resume repeats the epoch exactly.
                    torch.set_rng_state(rng_at_start[0])
                    random.setstate(rng_at_start[1])
                    np.random.set_state(rng_at_start[2])
                    last_ckpt = save(epoch, elapsed + time.perf_counter() - t_epoch) or last_ckpt
                    if is_main:
                        print(f"stopped inside epoch {epoch} before its update; saved the state it started from "
                              f"({last_ckpt})", file=sys.stderr, flush=True)
                    stopped = True
                    break
                timing["rewards_wait"] = time.perf_counter() - t0
                timing["rewards"] = sum(res.seconds for res in results)

                # ---- 2. gather rewards of all processes, combine, per-prompt advantages ----
                names = list(results[0].values)
                local = {n: np.concatenate([res.values[n] for res in results]) for n in names}
                local["group_ids"] = np.concatenate([b["group_ids"] for b in batches])
                local["use_3d"] = np.concatenate([b["use_3d"] for b in batches]).astype(np.float64)
                glob = {n: _gather(accelerator, v) for n, v in local.items()}
                use_3d_all = glob["use_3d"] > 0.5
                total = reward_set.total({n: glob[n] for n in names}, use_3d_all, glob["group_ids"])
                adv = flow_grpo.compute_advantages(total, glob["group_ids"].astype(np.int64), cfg.global_std, cfg.adv_clip_max)
                n_local = len(local["group_ids"])
                advantages = adv.values[rank * n_local : (rank + 1) * n_local]
                keep = ~adv.zero_std if cfg.drop_zero_std else torch.ones(len(total), dtype=torch.bool)

                reward_log = {"phase": phase, "frac_3d": float(use_3d_all.mean()), "zero_std_ratio": adv.zero_std_ratio}
                reward_log.update(_stats("reward/total", total))
                for n in names:
                    active = use_3d_all if n in ("s_recon", "s_meta", "s_traj", "r_3d") else np.ones_like(use_3d_all)
                    reward_log.update(_stats(f"reward/{n}", glob[n][active]))
                reward_log["advantage/abs_mean"] = float(adv.values.abs().mean())

                # ---- 3. several optimizer steps over the epoch's samples and trained timesteps ----
                t0 = time.perf_counter()
                data = {
                    "latents": torch.cat([b["ro"].latents for b in batches]),
                    "next_latents": torch.cat([b["ro"].next_latents for b in batches]),
                    "log_probs": torch.cat([b["ro"].log_probs for b in batches]),
                    "cond": torch.cat([b["cond"] for b in batches]),
                    "uncond": torch.cat([b["uncond"] for b in batches]) if batches[0]["uncond"] is not None else None,
                    "advantages": advantages.to(device),
                }
                # One permutation of the whole epoch's samples (numbered as in the plan, whatever the
                # process count) cut into optimizer steps; each process works on its own items of a step.
                # Terms are weighted per item of the step and summed over processes, so P processes
                # take the same step as one.
                gathered_pos = gathered_positions(n_local, accelerator.num_processes, B)
                order = torch.randperm(len(gathered_pos), generator=epoch_gen)
                order = order[keep[gathered_pos[order]]]
                step_records = []
                for chunk in torch.tensor_split(order, cfg.steps_per_epoch):
                    pos = gathered_pos[chunk]
                    mine = pos[pos // n_local == rank] % n_local
                    micro = [m for m in torch.split(mine, cfg.train_batch_size) if len(m)]
                    sums = dict.fromkeys(("loss", "policy_loss", "kl", "approx_kl", "clip_frac", "ratio_mean"), 0.0)
                    for idx in micro:
                        weight = len(idx) / (len(chunk) * len(steps))
                        cond, uncond = data["cond"][idx], data["uncond"][idx] if data["uncond"] is not None else None
                        for j, k in enumerate(steps):
                            terms = step_loss(
                                pipe, cfg, float(sigmas[k]), float(sigmas[k + 1]), data["latents"][idx, j],
                                data["next_latents"][idx, j], data["log_probs"][idx, j], data["advantages"][idx],
                                cond, uncond, accelerator.autocast,
                            )
                            (terms.loss * weight).backward()
                            for key in sums:
                                sums[key] += float(getattr(terms, key).detach()) * weight
                    # Gradients are summed by hand: LoRA is small, and it keeps the policy callable
                    # through the pipeline (no DDP wrapper in the way of predict_velocity).
                    if accelerator.num_processes > 1 and len(chunk):
                        for p in params:
                            if p.grad is None:
                                p.grad = torch.zeros_like(p)
                            p.grad = accelerator.reduce(p.grad, reduction="sum")
                    grad_norm = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                    lr = cfg.lr * min(1.0, (global_step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
                    for group in optimizer.param_groups:
                        group["lr"] = lr
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                    if ema is not None:
                        ema.update()
                    global_step += 1
                    sums = {k: float(_gather(accelerator, np.array([v])).sum()) for k, v in sums.items()}
                    step_records.append(dict(step=global_step, epoch=epoch, lr=lr, grad_norm=grad_norm, **sums))
                timing["train"] = time.perf_counter() - t0

                # ---- 4. evaluation clips, log, checkpoint ----
                last_epoch = epoch + 1 >= cfg.epochs
                epoch_seconds = time.perf_counter() - t_epoch
                # A budget, not a target: stop when one more epoch like this one would pass it.
                over_time = cfg.max_minutes > 0 and (elapsed + 2 * epoch_seconds) / 60.0 > cfg.max_minutes
                # Every process leaves the loop at the same epoch: clocks and signals are agreed on.
                stop_now, over_time = (bool(v > 0) for v in _gather(accelerator, np.array([[stop.requested, over_time]], dtype=float)).max(0))
                finishing = last_epoch or over_time or stop_now
                eval_record = None
                # A cancelled run saves without its evaluation clips: stopping promptly comes first.
                if eval_prompts and is_main and not stop_now and (
                        (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or finishing):
                    t0 = time.perf_counter()
                    with ema.swapped_in() if ema is not None else contextlib.nullcontext():
                        clips = write_eval_clips(pipe, cfg, eval_prompts, out_dir / "samples" / f"epoch-{epoch + 1:06d}", sigmas, accelerator.autocast)
                    values = reward_set(eval_prompts, clips)
                    eval_record = {"eval": True, "epoch": epoch, "step": global_step}
                    for n, v in values.items():
                        eval_record.update(_stats(f"eval/reward/{n}", np.asarray(v)))
                    eval_record.update(attribute_watch(cfg.scorer, eval_prompts, clips))
                    score = best_score(cfg.keep_best, eval_record) if cfg.keep_best else None
                    if score is not None and (best is None or score > best["score"]):
                        best = {"score": score, "epoch": epoch + 1, "step": global_step, "metric": cfg.keep_best,
                                "elapsed_seconds": elapsed + time.perf_counter() - t_epoch}
                        with stop.saving():
                            save_best(out_dir, transformer, ema, best)
                        eval_record["eval/best"] = True
                    timing["eval"] = time.perf_counter() - t0
                epoch_seconds = time.perf_counter() - t_epoch
                elapsed += epoch_seconds
                for rec in step_records:
                    rec.update(reward_log)
                    rec.update({f"time/{k}": v for k, v in timing.items()})
                    rec["seconds"] = elapsed
                    log(rec)
                if eval_record is not None:
                    log(eval_record)
                epoch += 1
                bar.update(1)
                bar.set_postfix(reward=f"{reward_log['reward/total/mean']:.4f}", kl=f"{step_records[-1]['kl']:.2e}" if step_records else "-", phase=phase)

                if epoch % cfg.save_every == 0 or finishing:
                    last_ckpt = save(epoch, elapsed) or last_ckpt
                if over_time or stop_now:
                    stopped = not last_epoch
                    break
    finally:
        pool.close()
        bar.close()
    return RunSummary(out_dir, epoch, global_step, last_ckpt, stopped, best)


def sde_seed(seed: int, epoch: int, round_index: int, item: int) -> int:
    """Seed of the SDE noise of one rollout item (its place in the round, not in a process's batch)."""
    return int(np.random.SeedSequence([seed, epoch, round_index, item]).generate_state(1)[0])


def gathered_positions(num_local: int, num_processes: int, batch_size: int):
    """For each sample in plan order (round by round, as plan_epoch numbers them), its position in the
    gathered arrays (process by process, each process's samples round by round)."""
    import torch

    plan = torch.arange(num_local * num_processes)
    per_round = num_processes * batch_size
    r, i = plan // per_round, plan % per_round
    return (i // batch_size) * num_local + r * batch_size + i % batch_size


def _gather(accelerator, values: np.ndarray) -> np.ndarray:
    import torch

    if accelerator.num_processes == 1:
        return np.asarray(values)
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=accelerator.device)
    return accelerator.gather(t).cpu().numpy()


def _truncate_metrics(path: Path, epoch: int) -> None:
    """Drop records of epochs after the checkpoint so a resumed run's log equals an uninterrupted one."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["epoch"] < epoch]
    atomic_write_text(path, "".join(line + "\n" for line in kept))


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def build_config(preset: str | None, out: Path, resume, overrides: list[str]) -> TrainConfig:
    """The run's config: the preset (or, when resuming, the run's saved config.json) plus overrides."""
    if resume and (out / "config.json").is_file():
        try:
            saved = from_dict(json.loads((out / "config.json").read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{out / 'config.json'} is corrupt: {e}") from None
        if preset and preset != saved.preset:
            raise ConfigError(f"--preset {preset} differs from the run's preset {saved.preset}; drop --preset when resuming")
        cfg = saved
    else:
        cfg = get_preset(preset or "tinyworld-cpu")
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Flow-GRPO training with World-R1 rewards.",
        epilog="Overrides are key=value pairs; --help-config lists the keys.",
    )
    parser.add_argument("--preset", default=None, help="tinyworld-cpu (default), world-r1-small or world-r1-large")
    parser.add_argument("--out", type=Path, help="run directory (config.json, metrics.jsonl, checkpoints/, samples/)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint")
    parser.add_argument("--resume-from", type=Path, default=None, metavar="CHECKPOINT",
                        help="continue the run in --out from this checkpoint folder (OUT/checkpoints/checkpoint-NNNNNN)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--help-config", action="store_true", help="list every config key with its help and default")
    parser.add_argument("overrides", nargs="*", help="key=value config overrides")
    args = parser.parse_args(argv)
    if args.help_config:
        print(help_text())
        return 0
    if args.out is None:
        parser.error("--out is required")
    resume = str(args.resume_from) if args.resume_from else (True if args.resume else None)
    try:
        # Installed before the model loads: a stop asked for during start-up still ends with a checkpoint.
        with StopFlag(announce=os.environ.get("RANK", "0") == "0") as stop:
            cfg = build_config(args.preset, args.out, resume, args.overrides)
            summary = train(cfg, args.out, resume=resume, progress=not args.no_progress, stop=stop)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted; the last checkpoint is kept", file=sys.stderr)
        return 130
    if os.environ.get("RANK", "0") != "0":
        return 0
    state = "stopped early" if summary.stopped_early else "done"
    print(f"{state}: {summary.epochs_done} epochs, {summary.global_step} steps; last checkpoint {summary.last_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
