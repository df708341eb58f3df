"""Training configuration: one dataclass, presets as functions, `key=value` overrides, batch plan.

    python -m training.config --preset world-r1-small --gpus 8 [key=value ...]   # print config + batch verdict
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


class ConfigError(ValueError):
    """A configuration that cannot run; the message says what was expected."""


def _f(default, help: str, **kw):
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kw)
    return field(default=default, metadata={"help": help}, **kw)


@dataclass
class TrainConfig:
    # --- run ---
    preset: str = _f("custom", "name of the preset this config started from (informational)")
    seed: int = _f(0, "seed for prompts, initial noise, SDE noise and LoRA init; same seed → same run")
    epochs: int = _f(100, "number of epochs (rollout + train rounds)")
    max_minutes: float = _f(0.0, "training-time budget: stop when the next epoch would pass this many minutes (0 = no limit)")
    torch_threads: int = _f(0, "torch.set_num_threads for this process (0 = leave the default)")
    mixed_precision: str = _f("no", "accelerate mixed precision: no, fp16 or bf16 (CPU runs: no)")
    gradient_checkpointing: bool = _f(False, "recompute transformer activations in the backward pass (saves memory on large models)")
    # --- generator ---
    pipeline: str = _f("tinyworld", "generator for studio.pipelines.load_pipeline: tinyworld, Wan2.1-T2V-1.3B, Wan2.1-T2V-14B, a directory or hub id")
    num_frames: int = _f(17, "frames per clip (4k+1 for Wan)")
    height: int = _f(64, "frame height in pixels")
    width: int = _f(64, "frame width in pixels")
    num_steps: int = _f(10, "sampling steps N of the rollouts")
    guidance_scale: float = _f(5.0, "classifier-free guidance w in rollouts and training forwards")
    camera_init: bool = _f(True, "camera-aware latent initialization (noise warping + stepwise delta)")
    # --- Flow-GRPO sampling ---
    noise_level: float = _f(0.7, "SDE noise level a; g = a·sqrt(σ/(1−σ))")
    timestep_fraction: float = _f(0.5, "train the first ⌊N·fraction⌋ steps (when sde_window_size = 0)")
    sde_window_size: int = _f(0, "Flow-GRPO-Fast: SDE and training on only this many consecutive steps (0 = off)")
    sde_window_range: float = _f(0.5, "Flow-GRPO-Fast: the window starts inside the first ⌊N·range⌋ steps")
    # --- batches ---
    group_size: int = _f(8, "K: samples per prompt (same text, different noise)")
    same_noise: bool = _f(False, "the K samples of a group start from the same initial noise, so they differ only by the "
                                 "SDE noise the policy is credited for (Flow-GRPO's same-latent option; pairs with sde_window_size)")
    per_device_batch_size: int = _f(8, "samples per rollout batch on each process")
    num_batches_per_epoch: int = _f(4, "rollout batches per epoch on each process")
    train_batch_size: int = _f(8, "samples per training forward/backward micro-batch on each process")
    steps_per_epoch: int = _f(1, "optimizer steps per epoch; >1 makes the PPO ratio and its clip active")
    # --- GRPO ---
    clip_range: float = _f(1e-3, "PPO ratio clip ε (tiny: the log-prob is a per-element mean)")
    kl_beta: float = _f(0.004, "β of the KL to the reference (the same model with the LoRA adapter disabled)")
    adv_clip_max: float = _f(5.0, "advantages are clipped to ±this")
    global_std: bool = _f(False, "normalise advantages by the std over the whole epoch instead of per prompt")
    drop_zero_std: bool = _f(False, "skip samples whose prompt group has identical rewards (their A is 0 anyway)")
    # --- LoRA and optimizer ---
    lora_rank: int = _f(32, "LoRA rank r")
    lora_alpha: int = _f(64, "LoRA alpha")
    lora_targets: list[str] = _f(["to_q", "to_k", "to_v", "to_out.0"], "attention modules that get LoRA")
    lr: float = _f(1e-4, "AdamW learning rate (constant after warm-up)")
    warmup_steps: int = _f(0, "linear learning-rate warm-up in optimizer steps")
    adam_beta1: float = _f(0.9, "AdamW β1")
    adam_beta2: float = _f(0.999, "AdamW β2")
    weight_decay: float = _f(1e-4, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient-norm clip")
    ema: bool = _f(True, "keep an EMA of the LoRA weights; used for evaluation clips and saved LoRA")
    ema_decay: float = _f(0.9, "EMA decay cap; decay = min((1+n)/(10+n), cap)")
    # --- rewards ---
    w_recon: float = _f(1.0, "weight of S_recon (re-render vs frames) inside R_3D")
    w_meta: float = _f(1.0, "weight of S_meta (most displaced view quality) inside R_3D")
    w_traj: float = _f(1.0, "weight of S_traj (camera path vs the prompt's) inside R_3D")
    w_3d: float = _f(1.0, "weight of R_3D in the total")
    w_gen: float = _f(1.0, "weight of R_gen (general quality: CLIP text–frame alignment) in the total")
    reward_norm: str = _f("none", "per-component normalisation before weighting: none, group (per prompt) or batch")
    geometry_estimator: str = _f("", "depth/pose estimator name for studio.geometry.analyze ('' = its default)")
    scorer: str = _f("tinyworld", "studio.scoring.load_scorer name for R_gen")
    reward_workers: int = _f(1, "threads computing rewards while the next rollout runs")
    # --- prompts and the rigid/fluid schedule ---
    train_prompts: str = _f("tinyworld:train", "rigid (static-world) prompts: 'tinyworld:SPLIT', a prompt file, or FILE.jsonl#category")
    dynamic_prompts: str = _f("tinyworld:dynamic", "fluid (non-rigid motion) prompts, R_3D off; '' disables the fluid phase")
    eval_prompts: str = _f("tinyworld:test", "held-out prompts for the evaluation clips at eval steps ('tinyworld:test[100:]' takes a slice: keep it apart from the prompts of the final evaluation)")
    main_steps: int = _f(100, "optimizer steps of the rigid phase in each cycle")
    dynamic_steps: int = _f(50, "optimizer steps of the fluid phase in each cycle (0 = never)")
    dynamic_mix: float = _f(0.0, "share of prompt groups in rigid phases drawn from the dynamic prompts (R_3D off for those items)")
    # --- logging and checkpoints ---
    eval_every: int = _f(0, "write evaluation clips (ODE, EMA weights) every this many epochs (0 = only at the end)")
    num_eval_clips: int = _f(4, "evaluation clips per eval")
    save_every: int = _f(1, "checkpoint every this many epochs")
    keep_last: int = _f(3, "checkpoints kept (older ones are deleted)")
    keep_best: str = _f("", "'+'-joined eval metrics (higher is better, e.g. eval/reward/s_recon/mean+eval/reward/s_traj/mean): "
                            "the LoRA with the best sum so far is kept in checkpoints/best ('' = off)")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def trained_step_count(self) -> int:
        if self.sde_window_size > 0:
            return self.sde_window_size
        return int(math.floor(self.num_steps * self.timestep_fraction + 1e-9))


# ---------------------------------------------------------------------------------------------
# Presets
# ---------------------------------------------------------------------------------------------
def tinyworld_cpu() -> TrainConfig:
    """The acceptance run: TinyWorld on 2 CPU cores, 75 minutes, about 2 epochs (64 clips) a minute."""
    return TrainConfig(
        preset="tinyworld-cpu",
        epochs=10_000,
        max_minutes=75.0,
        # One core for torch (rollouts, backward), the other for the reward thread (geometry analysis).
        torch_threads=1,
        pipeline="tinyworld",
        num_frames=17, height=64, width=64,
        num_steps=10,
        guidance_scale=5.0,
        group_size=8, per_device_batch_size=8, num_batches_per_epoch=4, train_batch_size=8,
        timestep_fraction=0.5,
        steps_per_epoch=2,
        clip_range=1e-3,
        # The feasibility run collapsed colour and shape without a KL term: keep it on, stronger than Wan's.
        kl_beta=0.02,
        lora_rank=16, lora_alpha=32,
        lr=3e-4,
        # A 20-minute pilot with the plain sum moved depth consistency but not the camera path:
        # S_meta's spread (std 0.37 vs S_traj's 0.11) dominated the advantages. Normalising each
        # component within its prompt group and weighting the path gives every term its say.
        reward_norm="group", w_traj=2.0, w_meta=0.5,
        main_steps=20, dynamic_steps=10,
        eval_every=50, num_eval_clips=8,
        save_every=10, keep_last=3,
        reward_workers=1,
    )


def world_r1_small() -> TrainConfig:
    """Wan2.1-T2V-1.3B with the paper's settings (method §6)."""
    return TrainConfig(
        preset="world-r1-small",
        epochs=1000,
        mixed_precision="bf16",
        pipeline="Wan2.1-T2V-1.3B",
        num_frames=81, height=480, width=832,
        num_steps=50, guidance_scale=5.0,
        group_size=2, per_device_batch_size=1, num_batches_per_epoch=24, train_batch_size=1,
        timestep_fraction=0.49, steps_per_epoch=1,
        clip_range=1e-3, kl_beta=0.004,
        lora_rank=32, lora_alpha=64, lr=1e-4,
        # At 480x832x81 the backward pass would keep ~169 GB of activations per micro-batch, ~11 GB
        # with checkpointing (benchmarks/bench_real_scale.py): no single GPU trains it without.
        gradient_checkpointing=True,
        # The World-R1 prompt set is not shipped: point these at its files when present
        # (train_prompts=PATH dynamic_prompts=PATH eval_prompts=PATH); the open-world corpus stands in.
        train_prompts="assets/prompts/open_world.jsonl#camera",
        dynamic_prompts="assets/prompts/open_world.jsonl#dynamic",
        eval_prompts="assets/prompts/open_world.jsonl#camera",
        main_steps=100, dynamic_steps=50,
        eval_every=20, num_eval_clips=4, save_every=10, keep_last=3,
        reward_workers=2,
    )


def world_r1_large() -> TrainConfig:
    """Wan2.1-T2V-14B: as the 1.3B preset (the pipeline preset carries the 14B wrap strength 0.40)."""
    cfg = world_r1_small()
    cfg.preset = "world-r1-large"
    cfg.pipeline = "Wan2.1-T2V-14B"
    cfg.gradient_checkpointing = True
    return cfg


PRESETS: dict[str, Callable[[], TrainConfig]] = {
    "tinyworld-cpu": tinyworld_cpu,
    "world-r1-small": world_r1_small,
    "world-r1-large": world_r1_large,
}


def get_preset(name: str) -> TrainConfig:
    if name not in PRESETS:
        hint = difflib.get_close_matches(name, PRESETS, n=1)
        raise ConfigError(
            f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
        )
    return PRESETS[name]()


# ---------------------------------------------------------------------------------------------
# Overrides
# ---------------------------------------------------------------------------------------------
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_value(name: str, raw: str, default: Any) -> Any:
    expected = f"{name}={raw!r}: expected a {type(default).__name__}"
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        try:
            value = float(raw)
        except ValueError:
            raise ConfigError(expected) from None
        if not math.isfinite(value):
            raise ConfigError(f"{name}={raw!r}: expected a finite number")
        if isinstance(default, int):
            if value != int(value):
                raise ConfigError(expected)
            return int(value)
        return value
    try:
        if isinstance(default, bool):
            low = raw.strip().lower()
            if low in _TRUE:
                return True
            if low in _FALSE:
                return False
            raise ValueError
        if isinstance(default, list):
            raw = raw.strip()
            if raw.startswith("["):
                value = json.loads(raw)
                if not isinstance(value, list):
                    raise ValueError
                return value
            return [part.strip() for part in raw.split(",") if part.strip()]
        return raw
    except (ValueError, json.JSONDecodeError):
        raise ConfigError(expected) from None


def _reader(name: str, kind: Any) -> Callable[[str], Any]:
    def read(raw: str) -> Any:
        try:
            return _parse_value(name, raw, kind)
        except ConfigError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    return read


def config_parser(defaults: TrainConfig | None = None) -> argparse.ArgumentParser:
    """One `--key VALUE` option per TrainConfig field with its help text, made by
    transformers.HfArgumentParser from the dataclass; values are read as `key=value` overrides are
    (finite numbers, whole ints, yes/no/on/off bools, comma or JSON lists) with `defaults` as defaults."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(TrainConfig, allow_abbrev=False, exit_on_error=False, add_help=False, usage=argparse.SUPPRESS)
    parser.set_defaults(**(defaults or TrainConfig()).to_dict())
    kinds = TrainConfig().to_dict()
    for action in parser._actions:
        if action.dest in kinds and action.nargs != 0:  # not the `--no_KEY` switches HfArgumentParser adds for bools
            action.type = _reader(action.dest, kinds[action.dest])
            action.nargs = "?" if isinstance(kinds[action.dest], bool) else None  # a list is one comma-separated value
    return parser


def config_help() -> str:
    return config_parser().format_help()


def apply_overrides(cfg: TrainConfig, overrides: list[str]) -> TrainConfig:
    """Return a copy of cfg with `key=value` overrides applied; unknown keys are errors."""
    argv = []
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        argv.append(f"--{key.strip().replace('-', '_')}={raw}")
    try:
        values, unknown = config_parser(cfg).parse_known_args(argv)
    except argparse.ArgumentError as e:
        raise ConfigError(e.message) from None
    if unknown:
        key, names = unknown[0].split("=", 1)[0].lstrip("-"), [f.name for f in dataclasses.fields(TrainConfig)]
        hint = difflib.get_close_matches(key, names, n=1)
        raise ConfigError(f"unknown config key {key!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "") + "; see --help-config")
    return TrainConfig(**vars(values))


def from_dict(values: dict) -> TrainConfig:
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown config keys {unknown}")
    return TrainConfig(**values)


def run_config(preset: str | None, run_dir: Path, resume, overrides: list[str]) -> TrainConfig:
    """A run's config: the preset (or, when resuming, the run's saved config.json) plus overrides, validated."""
    if resume and (run_dir / "config.json").is_file():
        try:
            saved = from_dict(json.loads((run_dir / "config.json").read_text(encoding="utf-8")))
        except json.JSONDecodeError as e:
            raise ConfigError(f"{run_dir / 'config.json'} is corrupt: {e}") from None
        if preset and preset != saved.preset:
            raise ConfigError(f"--preset {preset} differs from the run's preset {saved.preset}; drop --preset when resuming")
        cfg = saved
    else:
        cfg = get_preset(preset or "tinyworld-cpu")
    cfg = apply_overrides(cfg, overrides)
    validate(cfg)
    return cfg


# ---------------------------------------------------------------------------------------------
# Checks and the batch calculator
# ---------------------------------------------------------------------------------------------
def validate(cfg: TrainConfig) -> None:
    """Everything that can be checked without the model; raises ConfigError with the reason.

    Every message names the key and what it accepts, so the studio can show it as is."""
    def need(ok: bool, msg: str):
        if not ok:
            raise ConfigError(msg)

    for f in dataclasses.fields(TrainConfig):
        value = getattr(cfg, f.name)
        if isinstance(value, float):
            need(math.isfinite(value), f"{f.name} must be a finite number, got {value}")
    need(cfg.seed >= 0, f"seed must be ≥ 0 (it seeds numpy and torch generators), got {cfg.seed}")
    need(cfg.max_minutes >= 0, f"max_minutes must be ≥ 0 minutes (0 = no time limit), got {cfg.max_minutes}")
    need(cfg.torch_threads >= 0, f"torch_threads must be ≥ 0 (0 = torch's default), got {cfg.torch_threads}")
    need(bool(str(cfg.pipeline).strip()), "pipeline is empty: name a generator (tinyworld, a Wan preset, a directory or hub id)")
    need(cfg.num_frames >= 1 and cfg.height >= 8 and cfg.width >= 8,
         f"num_frames must be ≥ 1 and height, width ≥ 8 pixels, got {cfg.num_frames}×{cfg.height}×{cfg.width}")
    need(cfg.guidance_scale >= 0, f"guidance_scale must be ≥ 0 (1 = no classifier-free guidance), got {cfg.guidance_scale}")
    need(bool(cfg.train_prompts.strip()), "train_prompts is empty: name a prompt source (tinyworld:train, a prompt file, FILE.jsonl#category)")
    need(cfg.num_eval_clips >= 0 and cfg.eval_every >= 0,
         f"num_eval_clips and eval_every must be ≥ 0, got {cfg.num_eval_clips} and {cfg.eval_every}")
    need(cfg.num_eval_clips == 0 or bool(cfg.eval_prompts.strip()),
         "eval_prompts is empty: name held-out prompts (e.g. tinyworld:test) or set num_eval_clips=0")
    need(cfg.lora_alpha > 0, f"lora_alpha must be > 0, got {cfg.lora_alpha}")
    need(len(cfg.lora_targets) > 0 and all(isinstance(t, str) and t for t in cfg.lora_targets),
         f"lora_targets must list module names (e.g. lora_targets=to_q,to_k,to_v,to_out.0), got {cfg.lora_targets!r}")
    need(cfg.warmup_steps >= 0, f"warmup_steps must be ≥ 0, got {cfg.warmup_steps}")
    need(0 <= cfg.adam_beta1 < 1 and 0 <= cfg.adam_beta2 < 1,
         f"adam_beta1 and adam_beta2 must be in [0, 1), got {cfg.adam_beta1} and {cfg.adam_beta2}")
    need(cfg.weight_decay >= 0, f"weight_decay must be ≥ 0, got {cfg.weight_decay}")
    need(cfg.max_grad_norm > 0, f"max_grad_norm must be > 0, got {cfg.max_grad_norm}")
    need(cfg.adv_clip_max > 0, f"adv_clip_max must be > 0, got {cfg.adv_clip_max}")
    need(cfg.num_steps >= 1, f"num_steps must be ≥ 1, got {cfg.num_steps}")
    need(0.0 <= cfg.noise_level, f"noise_level must be ≥ 0, got {cfg.noise_level}")
    need(cfg.noise_level > 0, "noise_level 0 gives deterministic rollouts without log-probs; GRPO needs a > 0")
    if cfg.sde_window_size > 0:
        need(cfg.sde_window_size <= cfg.num_steps, f"sde_window_size {cfg.sde_window_size} > num_steps {cfg.num_steps}")
        need(0 < cfg.sde_window_range <= 1, f"sde_window_range must be in (0, 1], got {cfg.sde_window_range}")
    else:
        need(0 < cfg.timestep_fraction <= 1, f"timestep_fraction must be in (0, 1], got {cfg.timestep_fraction}")
        need(cfg.trained_step_count() >= 1, f"timestep_fraction {cfg.timestep_fraction} × num_steps {cfg.num_steps} trains no step")
    need(cfg.clip_range > 0, f"clip_range must be > 0, got {cfg.clip_range}")
    need(cfg.kl_beta >= 0, f"kl_beta must be ≥ 0, got {cfg.kl_beta}")
    need(cfg.lr > 0, f"lr must be > 0, got {cfg.lr}")
    need(cfg.lora_rank >= 1, f"lora_rank must be ≥ 1, got {cfg.lora_rank}")
    need(0 <= cfg.ema_decay < 1, f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    need(cfg.reward_norm in ("none", "group", "batch"), f"reward_norm must be none, group or batch, got {cfg.reward_norm!r}")
    need(cfg.mixed_precision in ("no", "fp16", "bf16"), f"mixed_precision must be no, fp16 or bf16, got {cfg.mixed_precision!r}")
    need(cfg.main_steps >= 1, f"main_steps must be ≥ 1, got {cfg.main_steps}")
    need(cfg.dynamic_steps >= 0, f"dynamic_steps must be ≥ 0, got {cfg.dynamic_steps}")
    need(0 <= cfg.dynamic_mix <= 1, f"dynamic_mix must be in [0, 1], got {cfg.dynamic_mix}")
    need(cfg.epochs >= 1, f"epochs must be ≥ 1, got {cfg.epochs}")
    need(cfg.save_every >= 1 and cfg.keep_last >= 1, "save_every and keep_last must be ≥ 1")
    if cfg.keep_best:
        keys = [k.strip() for k in cfg.keep_best.split("+")]
        need(all(k.startswith("eval/") for k in keys), f"keep_best must name eval metrics (eval/...), got {cfg.keep_best!r}")
        need(cfg.num_eval_clips > 0, "keep_best needs evaluation clips (num_eval_clips > 0)")
    need(cfg.reward_workers >= 1, f"reward_workers must be ≥ 1, got {cfg.reward_workers}")
    need(min(cfg.w_recon, cfg.w_meta, cfg.w_traj, cfg.w_3d, cfg.w_gen) >= 0,
         "reward weights w_recon, w_meta, w_traj, w_3d and w_gen must be ≥ 0")
    need(cfg.w_gen > 0 or (cfg.w_3d > 0 and max(cfg.w_recon, cfg.w_meta, cfg.w_traj) > 0),
         "every reward weight is 0: nothing to train toward; set w_gen or w_3d with one of w_recon, w_meta, w_traj above 0")


@dataclass
class BatchPlan:
    ok: bool
    verdict: str
    samples_per_round: int = 0  # all processes, one rollout batch each
    prompts_per_epoch: int = 0
    samples_per_epoch: int = 0
    micro_batches_per_step: int = 0  # per process, each forward covers every trained step once


def plan_batches(cfg: TrainConfig, num_processes: int = 1) -> BatchPlan:
    """Check the batch arithmetic for `num_processes` GPUs/processes and explain it in one string.

    Rules: every rollout round (num_processes × per_device_batch_size samples) holds whole prompt
    groups, so processes × per-device batch must be divisible by K; each process's samples per
    epoch split evenly into steps_per_epoch optimizer steps of whole train micro-batches.
    """
    P, B, K = num_processes, cfg.per_device_batch_size, cfg.group_size
    problems = []
    if P < 1 or B < 1 or cfg.num_batches_per_epoch < 1 or cfg.train_batch_size < 1 or cfg.steps_per_epoch < 1:
        problems.append("processes, per_device_batch_size, num_batches_per_epoch, train_batch_size and steps_per_epoch must all be ≥ 1")
    if K < 2:
        problems.append(f"group_size K = {K}: GRPO needs K ≥ 2 (a single sample has no group to compare with)")
    if not problems:
        if (P * B) % K:
            fixes = sorted({b for b in range(1, 4 * K + 1) if (P * b) % K == 0})[:3]
            problems.append(
                f"{P} processes × per_device_batch_size {B} = {P * B} samples per round is not divisible by group_size K = {K}"
                f" (per_device_batch_size {', '.join(map(str, fixes))} would work)"
            )
        per_epoch = B * cfg.num_batches_per_epoch
        per_step = cfg.steps_per_epoch * cfg.train_batch_size
        if per_epoch % per_step:
            problems.append(
                f"{per_epoch} samples per process per epoch (per_device_batch_size {B} × num_batches_per_epoch"
                f" {cfg.num_batches_per_epoch}) do not split into steps_per_epoch {cfg.steps_per_epoch} × train_batch_size"
                f" {cfg.train_batch_size}"
            )
    if problems:
        return BatchPlan(False, "NOT OK: " + "; ".join(problems))
    round_samples = P * B
    samples_epoch = round_samples * cfg.num_batches_per_epoch
    prompts_epoch = samples_epoch // K
    micro = B * cfg.num_batches_per_epoch // (cfg.steps_per_epoch * cfg.train_batch_size)
    trained = cfg.trained_step_count()
    verdict = (
        f"OK: {P} process(es) × {B} samples per batch = {round_samples} per round ({round_samples // K} prompts × K {K}); "
        f"{cfg.num_batches_per_epoch} rounds → {prompts_epoch} prompts, {samples_epoch} samples per epoch; "
        f"{cfg.steps_per_epoch} optimizer step(s) per epoch, each accumulating {micro} micro-batch(es) of "
        f"{cfg.train_batch_size} × {trained} trained step(s) per process"
    )
    return BatchPlan(True, verdict, round_samples, prompts_epoch, samples_epoch, micro)


def check_batches(cfg: TrainConfig, num_processes: int = 1) -> BatchPlan:
    plan = plan_batches(cfg, num_processes)
    if not plan.ok:
        raise ConfigError(plan.verdict)
    return plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print a training preset and its batch plan.")
    parser.add_argument("--preset", default="tinyworld-cpu", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--gpus", type=int, default=1, help="number of processes (GPUs) to plan for")
    parser.add_argument("--help-config", action="store_true", help="list every config key")
    parser.add_argument("overrides", nargs="*", help="key=value")
    args = parser.parse_args(argv)
    if args.help_config:
        print(config_help())
        return 0
    try:
        cfg = apply_overrides(get_preset(args.preset), args.overrides)
        validate(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(cfg.to_dict(), indent=2))
    plan = plan_batches(cfg, args.gpus)
    print(plan.verdict)
    return 0 if plan.ok else 1


if __name__ == "__main__":
    sys.exit(main())
