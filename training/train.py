"""Flow-GRPO training of a LoRA on the generator with World-R1 rewards.

    python -m training.train --preset tinyworld-cpu --out runs/NAME [key=value ...]
    python -m training.train --out runs/NAME --resume [key=value ...]        # continue exactly
    python -m training.train --out runs/NAME --resume-from runs/NAME/checkpoints/checkpoint-000010
    accelerate launch --multi_gpu --num_processes 8 -m training.train --preset world-r1-small --out runs/NAME

SIGINT or SIGTERM (Ctrl-C, Cancel in the studio) stops at the next safe point with a checkpoint;
a second one aborts without saving the current epoch (training.stop).

One epoch, as train() calls it: `rollout` (draw the epoch's prompts, roll out K SDE samples per
prompt with log-probs and CFG, decode, hand the clips to the reward threads while the next batch
rolls out) → `collect_rewards` (all processes' rewards, combined) → `advantages` (per prompt group)
→ `update` (`steps_per_epoch` optimizer steps with the PPO-clipped ratio and the KL to the
reference, the same transformer with its LoRA adapter disabled; EMA) → `evaluate` (ODE clips of
held-out prompts with the EMA weights) → `log` → `save`. Processes started by `accelerate launch`
split every rollout round and sum their gradients, so they take the step one process would take.

Run directory: config.json, metrics.jsonl, samples/epoch-NNNNNN/ (evaluation clips) and
checkpoints/ (training.checkpoints).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from studio.util import atomic_write_text
from training.checkpoints import (  # noqa: F401  (LORA_WEIGHT_NAME, write_lora: for scripts that save a LoRA the trainer's way)
    LORA_WEIGHT_NAME, CheckpointError, TrainerState, check_checkpoint, list_checkpoints, load_checkpoint, register,
    resolve_resume, save_best, save_checkpoint, truncate_metrics, write_lora,
)
from training.config import ConfigError, TrainConfig, check_batches, config_help, run_config, validate
from training.plan import gathered_positions, load_prompts, phase_at, plan_epoch, sde_seed
from training.policy import add_lora, camera_injector, ema_weights, per_sample, sample_ode, sampling_sigmas, step_loss
from training.stop import StopFlag
from training.validation import attribute_watch, best_score, write_clips

LOSS_TERMS = ("loss", "policy_loss", "kl", "approx_kl", "clip_frac", "ratio_mean")
TIMES = ("rollout", "decode", "rewards", "rewards_wait", "train", "eval")


@dataclass
class Run:
    """What the epoch's steps share, built once by setup()."""

    cfg: TrainConfig
    out_dir: Path
    accelerator: Any
    pipe: Any
    params: list  # the LoRA parameters
    optimizer: Any
    ema: Any  # diffusers EMAModel of params, or None
    reward_set: Any  # studio.rewards.RewardSet-like: (prompts, clips, **context) -> {name: values}
    pool: Any  # training.rewards.RewardPool over reward_set
    sigmas: Any
    prompts: dict[str, list[str]]  # rigid, dynamic, eval
    state: TrainerState
    stop: StopFlag
    last_checkpoint: Path | None = None


@dataclass
class RunSummary:
    out_dir: Path
    epochs_done: int
    global_step: int
    last_checkpoint: Path | None
    stopped_early: bool
    best: dict | None = None  # {"score", "epoch", "step", "metric", "elapsed_seconds"} of checkpoints/best


def setup(cfg: TrainConfig, out_dir: Path, resume, pipeline, rewards, stop: StopFlag) -> Run:
    """Check everything cheap first, then build the accelerator, policy, optimizer, EMA and rewards,
    and load the checkpoint to resume from."""
    import torch
    from accelerate import Accelerator, PartialState

    validate(cfg)
    cpu = not torch.cuda.is_available()  # accelerate only spreads CPU processes (gloo) when told cpu=True
    check_batches(cfg, PartialState(cpu=cpu).num_processes)
    prompts = {"rigid": load_prompts(cfg.train_prompts),
               "dynamic": load_prompts(cfg.dynamic_prompts) if cfg.dynamic_prompts else [],
               "eval": load_prompts(cfg.eval_prompts)[: cfg.num_eval_clips] if cfg.num_eval_clips > 0 else []}
    ckpt = resolve_resume(out_dir, resume)
    if ckpt is not None:
        saved = check_checkpoint(ckpt)["config"]
        changed = [k for k in ("pipeline", "lora_rank", "lora_alpha", "lora_targets", "ema") if saved.get(k) != getattr(cfg, k)]
        if changed:
            raise CheckpointError(f"{ckpt} was trained with different {', '.join(changed)}; it cannot continue under this config")
    elif list_checkpoints(out_dir):
        raise ConfigError(f"{out_dir} already holds checkpoints: pass --resume to continue it or choose a new --out")
    from training.flow_grpo import lora_ema
    from training.rewards import RewardPool, check_backends, world_r1_rewards

    if rewards is None:
        try:
            check_backends(cfg)
        except RuntimeError as e:
            raise ConfigError(str(e)) from None

    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision, cpu=cpu)
    if accelerator.is_main_process:
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out_dir / "config.json", json.dumps(cfg.to_dict(), indent=1))
        if ckpt is None:
            (out_dir / "metrics.jsonl").unlink(missing_ok=True)  # a run that died before its first checkpoint
        print("config: " + " ".join(f"{k}={v}" for k, v in cfg.to_dict().items()), flush=True)
    if pipeline is None:
        from studio.pipelines import load_pipeline

        try:
            pipe = load_pipeline(cfg.pipeline, device=str(accelerator.device), cache=False)  # private: we add a LoRA
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"cannot load the generator {cfg.pipeline!r}: {e}") from None
    else:
        pipe = pipeline() if callable(pipeline) and not hasattr(pipeline, "transformer") else pipeline
        pipe.to(accelerator.device)
    pipe.transformer.eval()
    params = add_lora(pipe.transformer, cfg)
    if cfg.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()
    optimizer = accelerator.prepare(torch.optim.AdamW(
        params, lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), weight_decay=cfg.weight_decay, eps=1e-8))
    ema = lora_ema(params, decay_cap=cfg.ema_decay) if cfg.ema else None
    state = TrainerState(config=cfg.to_dict())
    register(accelerator, state, params, ema)
    if ckpt is not None:
        load_checkpoint(accelerator, ckpt)
        state.config = cfg.to_dict()  # a resumed run may change knobs
        if accelerator.is_main_process:
            truncate_metrics(out_dir / "metrics.jsonl", state.epoch)
            print(f"resumed from {ckpt} at epoch {state.epoch}, step {state.global_step}", flush=True)
    reward_set = rewards if rewards is not None else world_r1_rewards(cfg)
    return Run(cfg, out_dir, accelerator, pipe, params, optimizer, ema, reward_set, RewardPool(reward_set, cfg.reward_workers),
               sampling_sigmas(pipe, cfg.num_steps), prompts, state, stop, last_checkpoint=ckpt)


def rollout(run: Run, epoch: int, rounds: list, steps: list[int], timing: dict) -> list[dict] | None:
    """This process's share of every round: SDE rollouts with log-probs on the trained steps, decoded
    and handed to the reward threads. None when a stop is agreed on between rounds."""
    import torch

    from training.flow_grpo import rollout as sde_rollout

    cfg, B, rank = run.cfg, run.cfg.per_device_batch_size, run.accelerator.process_index
    batches = []
    for r, plan in enumerate(rounds):
        if stop_agreed(run):
            return None
        mine = slice(rank * B, (rank + 1) * B)
        prompts, seeds = plan.prompts[mine], plan.seeds[mine]
        t0 = time.perf_counter()
        with torch.no_grad(), run.accelerator.autocast():
            cond, uncond = run.pipe.encode_prompt(prompts, cfg.guidance_scale)
            uncond = per_sample(uncond, B)
            # The target camera paths, once: the camera init warps along them and the reward measures against them.
            paths = run.pipe.camera_paths(prompts, cfg.num_frames)
            latents = run.pipe.prepare_latents(prompts, seeds, cfg.num_frames, cfg.height, cfg.width,
                                               camera_init=cfg.camera_init, paths=paths)
            # One SDE generator per item, seeded by its place in the round: the same noise however
            # the round is split across processes.
            gens = [torch.Generator(device=latents.device).manual_seed(sde_seed(cfg.seed, epoch, r, i)) for i in range(mine.start, mine.stop)]
            velocity = lambda x, sigma, c=cond, u=uncond: run.pipe.predict_velocity(x, sigma, c, u, cfg.guidance_scale)  # noqa: E731
            ro = sde_rollout(velocity, latents, run.sigmas, steps, cfg.noise_level, gens,
                             camera_injector(run.pipe, latents, prompts, seeds, cfg, paths))
        t1 = time.perf_counter()
        with torch.no_grad():
            frames = np.asarray(run.pipe.decode_latents(ro.final_latents))
        timing["rollout"] += t1 - t0
        timing["decode"] += time.perf_counter() - t1
        batches.append(dict(ro=ro, cond=cond, uncond=uncond, group_ids=plan.group_ids[mine], use_3d=plan.use_3d[mine],
                            rewards=run.pool.submit(prompts, list(frames), plan.use_3d[mine], targets=paths)))
    return batches


def collect_rewards(run: Run, batches: list[dict], timing: dict) -> dict | None:
    """Every process's reward components, group ids and R_3D flags, gathered; None when a stop is
    agreed on (a single process leaves the wait for its reward threads at once)."""
    t0 = time.perf_counter()
    results = []
    for b in batches:
        while not b["rewards"].done():
            time.sleep(0.05)
            if run.stop.requested and run.accelerator.num_processes == 1:
                return None
        results.append(b["rewards"].result())
    if stop_agreed(run):
        return None
    timing["rewards_wait"] = time.perf_counter() - t0
    timing["rewards"] = sum(res.seconds for res in results)
    local = {n: np.concatenate([res.values[n] for res in results]) for n in results[0].values}
    local["group_ids"] = np.concatenate([b["group_ids"] for b in batches])
    local["use_3d"] = np.concatenate([b["use_3d"] for b in batches]).astype(np.float64)
    return {n: _gather(run.accelerator, v) for n, v in local.items()}


def advantages(run: Run, scores: dict, phase: str):
    """Total rewards and per-prompt advantages of the whole epoch, and their log record."""
    from training.flow_grpo import compute_advantages

    names = [n for n in scores if n not in ("group_ids", "use_3d")]
    use_3d = scores["use_3d"] > 0.5
    total = run.reward_set.total({n: scores[n] for n in names}, use_3d, scores["group_ids"])
    adv = compute_advantages(total, scores["group_ids"].astype(np.int64), run.cfg.global_std, run.cfg.adv_clip_max)
    record = {"phase": phase, "frac_3d": float(use_3d.mean()), "zero_std_ratio": adv.zero_std_ratio, **_stats("reward/total", total)}
    for n in names:
        record.update(_stats(f"reward/{n}", scores[n][use_3d if n in ("s_recon", "s_meta", "s_traj", "r_3d") else slice(None)]))
    record["advantage/abs_mean"] = float(adv.values.abs().mean())
    return adv, record


def update(run: Run, batches: list[dict], adv, steps: list[int], epoch: int, epoch_gen) -> list[dict]:
    """`steps_per_epoch` optimizer steps over the epoch's samples and trained timesteps: one permutation
    of all samples (numbered as in the plan, whatever the process count) cut into steps, each process
    working on its own items of a step. Terms are weighted per item of the step and summed over
    processes, so P processes take the step one process takes."""
    import torch

    cfg, acc, state = run.cfg, run.accelerator, run.state
    ro = [b["ro"] for b in batches]
    x, x_next, log_probs = (torch.cat([getattr(r, k) for r in ro]) for k in ("latents", "next_latents", "log_probs"))
    cond = torch.cat([b["cond"] for b in batches])
    uncond = torch.cat([b["uncond"] for b in batches]) if batches[0]["uncond"] is not None else None
    n_local = len(x)
    local_adv = adv.values[acc.process_index * n_local : (acc.process_index + 1) * n_local].to(acc.device)
    keep = ~adv.zero_std if cfg.drop_zero_std else torch.ones(len(adv.values), dtype=torch.bool)
    gathered = torch.as_tensor(gathered_positions(n_local, acc.num_processes, cfg.per_device_batch_size))
    order = torch.randperm(len(gathered), generator=epoch_gen)
    order = order[keep[gathered[order]]]
    records = []
    for chunk in torch.tensor_split(order, cfg.steps_per_epoch):
        pos = gathered[chunk]
        mine = pos[pos // n_local == acc.process_index] % n_local
        sums = dict.fromkeys(LOSS_TERMS, 0.0)
        for idx in [m for m in torch.split(mine, cfg.train_batch_size) if len(m)]:
            weight = len(idx) / (len(chunk) * len(steps))
            for j, k in enumerate(steps):
                terms = step_loss(run.pipe, cfg, float(run.sigmas[k]), float(run.sigmas[k + 1]), x[idx, j], x_next[idx, j],
                                  log_probs[idx, j], local_adv[idx], cond[idx], None if uncond is None else uncond[idx], acc.autocast)
                acc.backward(terms.loss * weight)
                for key in sums:
                    sums[key] += float(getattr(terms, key).detach()) * weight
        # Summed by hand rather than by DDP: LoRA is small, the pipeline keeps calling the bare
        # transformer, and a process may hold no item of a step.
        if acc.num_processes > 1 and len(chunk):
            for p in run.params:
                p.grad = acc.reduce(p.grad if p.grad is not None else torch.zeros_like(p), reduction="sum")
        grad_norm = float(acc.clip_grad_norm_(run.params, cfg.max_grad_norm))
        lr = cfg.lr * min(1.0, (state.global_step + 1) / cfg.warmup_steps) if cfg.warmup_steps > 0 else cfg.lr
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        run.optimizer.step()
        run.optimizer.zero_grad(set_to_none=True)
        if run.ema is not None:
            run.ema.step(run.params)
        state.global_step += 1
        sums = {k: float(_gather(acc, np.array([v])).sum()) for k, v in sums.items()}
        records.append(dict(step=state.global_step, epoch=epoch, lr=lr, grad_norm=grad_norm, **sums))
    return records


def evaluate(run: Run, epoch: int, seconds: float) -> dict:
    """ODE clips of the held-out prompts with the EMA weights, their rewards and the collapse watch;
    checkpoints/best follows the best keep_best score. Main process only."""
    cfg, prompts = run.cfg, run.prompts["eval"]
    seeds = [1000 + i for i in range(len(prompts))]
    with ema_weights(run.ema, run.params):
        clips = list(sample_ode(run.pipe, cfg, prompts, seeds, run.sigmas, run.accelerator.autocast))
    write_clips(run.out_dir / "samples" / f"epoch-{epoch + 1:06d}", clips, prompts, seeds)
    record = {"eval": True, "epoch": epoch, "step": run.state.global_step}
    for n, v in run.reward_set(prompts, clips).items():
        record.update(_stats(f"eval/reward/{n}", np.asarray(v)))
    record.update(attribute_watch(cfg.scorer, prompts, clips))
    score = best_score(cfg.keep_best, record) if cfg.keep_best else None
    if score is not None and (run.state.best is None or score > run.state.best["score"]):
        run.state.best = {"score": score, "epoch": epoch + 1, "step": run.state.global_step, "metric": cfg.keep_best,
                          "elapsed_seconds": seconds}
        with run.stop.saving():
            save_best(run.out_dir, run.pipe.transformer, run.ema, run.state.best)
        record["eval/best"] = True
    return record


def log(run: Run, records: list[dict]) -> None:
    if run.accelerator.is_main_process:
        with open(run.out_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in records)


def save(run: Run) -> None:
    """A checkpoint after run.state.epoch epochs, written by the main process while the others wait."""
    run.accelerator.wait_for_everyone()
    if run.accelerator.is_main_process:
        with run.stop.saving():
            run.last_checkpoint = save_checkpoint(run.accelerator, run.out_dir, run.state.epoch, run.pipe.transformer,
                                                  run.ema, run.cfg.keep_last)
    run.accelerator.wait_for_everyone()


def train(cfg: TrainConfig, out_dir: str | Path, resume: str | bool | None = None, pipeline: Any = None,
          rewards: Any = None, progress: bool = True, stop: StopFlag | None = None) -> RunSummary:
    """Run (or continue) a training run. `pipeline` is a generator object or a zero-argument factory
    (default: studio.pipelines.load_pipeline(cfg.pipeline)); `rewards` a RewardSet-like callable
    (default: the World-R1 rewards of the config); `stop` a StopFlag already installed by the caller
    (the CLI installs it before the model loads, so a cancel during start-up also ends with a checkpoint)."""
    import torch
    from tqdm.auto import tqdm

    from training.flow_grpo import trained_steps

    with contextlib.nullcontext(stop) if stop is not None else StopFlag(announce=_is_main()) as stop:
        run = setup(cfg, Path(out_dir), resume, pipeline, rewards, stop)
        state, acc, stopped = run.state, run.accelerator, False
        bar = tqdm(total=cfg.epochs, initial=state.epoch, disable=not (progress and acc.is_main_process), desc="epochs",
                   dynamic_ncols=True)
        with run.pool, bar:
            while state.epoch < cfg.epochs:
                t_epoch, epoch, timing = time.perf_counter(), state.epoch, dict.fromkeys(TIMES, 0.0)
                phase = phase_at(state.global_step, cfg, bool(run.prompts["dynamic"]))
                rounds = plan_epoch(cfg, epoch, phase, run.prompts["rigid"], run.prompts["dynamic"], acc.num_processes)
                epoch_gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
                steps = trained_steps(cfg.num_steps, cfg.timestep_fraction, cfg.sde_window_size, cfg.sde_window_range, epoch_gen)

                batches = rollout(run, epoch, rounds, steps, timing)
                scores = collect_rewards(run, batches, timing) if batches is not None else None
                if scores is None:
                    # Nothing of this epoch has reached the weights: save the state it started from,
                    # so --resume repeats the epoch exactly.
                    state.elapsed_seconds += time.perf_counter() - t_epoch
                    save(run)
                    if acc.is_main_process:
                        print(f"stopped inside epoch {epoch} before its update; saved the state it started from "
                              f"({run.last_checkpoint})", file=sys.stderr, flush=True)
                    stopped = True
                    break
                adv, reward_log = advantages(run, scores, phase)
                t0 = time.perf_counter()
                step_records = update(run, batches, adv, steps, epoch, epoch_gen)
                timing["train"] = time.perf_counter() - t0

                # A budget, not a target: stop when one more epoch like this one would pass it. Every
                # process leaves at the same epoch: clocks and signals are agreed on.
                over_time = cfg.max_minutes > 0 and (state.elapsed_seconds + 2 * (time.perf_counter() - t_epoch)) / 60.0 > cfg.max_minutes
                stop_now, over_time = (bool(v > 0) for v in _gather(acc, np.array([[stop.requested, over_time]], dtype=float)).max(0))
                last_epoch = epoch + 1 >= cfg.epochs
                finishing = last_epoch or over_time or stop_now
                eval_record = None
                # A cancelled run saves without its evaluation clips: stopping promptly comes first.
                if run.prompts["eval"] and acc.is_main_process and not stop_now and (
                        (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0) or finishing):
                    t0 = time.perf_counter()
                    eval_record = evaluate(run, epoch, state.elapsed_seconds + t0 - t_epoch)
                    timing["eval"] = time.perf_counter() - t0
                state.elapsed_seconds += time.perf_counter() - t_epoch
                for rec in step_records:
                    rec.update(reward_log, seconds=state.elapsed_seconds, **{f"time/{k}": v for k, v in timing.items()})
                log(run, step_records + ([eval_record] if eval_record else []))
                state.epoch += 1
                bar.update(1)
                bar.set_postfix(reward=f"{reward_log['reward/total/mean']:.4f}", phase=phase,
                                kl=f"{step_records[-1]['kl']:.2e}" if step_records else "-")
                if state.epoch % cfg.save_every == 0 or finishing:
                    save(run)
                if over_time or stop_now:
                    stopped = not last_epoch
                    break
    return RunSummary(run.out_dir, state.epoch, state.global_step, run.last_checkpoint, stopped, state.best)


# ---------------------------------------------------------------------------------------------
# Helpers of the steps above
# ---------------------------------------------------------------------------------------------
def stop_agreed(run: Run) -> bool:
    """Has any process been asked to stop? A collective: call it where every process calls it equally often."""
    return bool(_gather(run.accelerator, np.array([float(run.stop.requested)])).max() > 0)


def _gather(accelerator, values: np.ndarray) -> np.ndarray:
    import torch

    if accelerator.num_processes == 1:
        return np.asarray(values)
    t = torch.as_tensor(np.asarray(values, dtype=np.float64), device=accelerator.device)
    return accelerator.gather(t).cpu().numpy()


def _stats(prefix: str, values: np.ndarray) -> dict:
    if len(values) == 0:
        return {f"{prefix}/mean": None, f"{prefix}/std": None}
    return {f"{prefix}/mean": float(np.mean(values)), f"{prefix}/std": float(np.std(values))}


def _is_main() -> bool:
    return os.environ.get("RANK", "0") == "0"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
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
        print(config_help())
        return 0
    if args.out is None:
        parser.error("--out is required")
    resume = str(args.resume_from) if args.resume_from else (True if args.resume else None)
    try:
        # Installed before the model loads: a stop asked for during start-up still ends with a checkpoint.
        with StopFlag(announce=_is_main()) as stop:
            cfg = run_config(args.preset, args.out, resume, args.overrides)
            summary = train(cfg, args.out, resume=resume, progress=not args.no_progress, stop=stop)
    except (ConfigError, CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("aborted; the last checkpoint is kept", file=sys.stderr)
        return 130
    if _is_main():
        state = "stopped early" if summary.stopped_early else "done"
        print(f"{state}: {summary.epochs_done} epochs, {summary.global_step} steps; last checkpoint {summary.last_checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
