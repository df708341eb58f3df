"""Train the TinyWorld monocular depth net on renderer ground truth (seeded, CPU).

Data: clips of the corpus "train" split rendered at 64x64 and 128x128 (every 4th of 17 frames),
cached under runs/data/. Loss: L1 on log-depth over non-sky pixels + BCE on the sky logit.
Each step draws a batch of one resolution (64 or 128) so the net works at both.

    python -m training.pretrain_depth --out assets/depth          # about 13 min on 1 core
    # the shipped weights continue that run twice (warm start, gradient-matching term, 2 threads):
    python -m training.pretrain_depth --init-from assets/depth --out runs/depth_v2/model --run-dir runs/depth_v2 \
        --steps 5000 --lr 1e-3 --warmup-steps 100 --grad-weight 0.5 --threads 2 --max-cpu-minutes 70
    python -m training.pretrain_depth --init-from runs/depth_v2/model --out assets/depth --run-dir runs/depth_v3 \
        --steps 3000 --lr 5e-4 --warmup-steps 50 --grad-weight 1.0 --threads 2 --max-cpu-minutes 45 --val-every 500
    python -m training.pretrain_depth --steps 20 --clips-64 16 --clips-128 4 --out runs/depth/smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

FRAME_STRIDE = 4  # keep frames 0, 4, 8, 12, 16 of each 17-frame clip: neighbours are near-duplicates


@dataclass
class DepthTrainConfig:
    seed: int = 0  # seeds torch and numpy (init, batch sampling, flips)
    clips_64: int = 4800  # corpus train rows rendered at 64x64 (rows 0..clips_64-1)
    clips_128: int = 600  # train rows rendered at 128x128 (the rows just before the validation rows)
    val_clips: int = 16  # validation: the last rows of the train split, all 17 frames
    closeup_clips_64: int = 0  # extra train rows re-rendered with the camera pushing in (close-up frames)
    closeup_clips_128: int = 0  # the same at 128x128
    p_closeup: float = 0.0  # probability that a step's batch comes from the close-up set
    steps: int = 1500  # optimizer steps
    batch_64: int = 32  # frames per 64x64 batch
    batch_128: int = 8  # frames per 128x128 batch (same pixel count as batch_64)
    p_128: float = 0.4  # probability that a step uses a 128x128 batch
    lr: float = 2e-3  # peak AdamW learning rate (cosine decay, linear warm-up)
    warmup_steps: int = 60  # linear warm-up
    weight_decay: float = 1e-4  # AdamW weight decay
    sky_weight: float = 0.5  # weight of the sky BCE term
    grad_weight: float = 0.0  # weight of the multi-scale log-depth gradient term (sharp edges for odometry)
    init_from: str = ""  # warm start: a saved depth net directory (same channels), e.g. assets/depth
    channels: tuple[int, ...] = (16, 32, 48, 64, 96)  # U-Net widths per level
    log_every: int = 20  # steps between loss log lines
    val_every: int = 250  # steps between validation passes
    threads: int = 1  # torch CPU threads (the machine is shared)
    workers: int = 2  # render processes (at most 2 on this machine)
    max_cpu_minutes: float = 15.0  # hard stop: CPU time of the training loop (the machine is shared, wall time varies)
    out: str = "assets/depth"  # where model.safetensors + config.json go
    run_dir: str = "runs/depth"  # log.jsonl, config, final metrics
    data_dir: str = "runs/data"  # render cache


# ------------------------------------------------------------------------------------------
# Data (shared with pretrain_clip.py)
# ------------------------------------------------------------------------------------------

def split_rows(split: str) -> list[dict]:
    """Corpus rows {"prompt", "scene", ...} of a split (train / test / dynamic)."""
    from studio.tinyworld.corpus import load_split

    return load_split(split)


def render_job(job: tuple[str, dict, int, int, int]) -> dict:
    """(prompt, scene, size, stride, first frame) -> the kept frames, depth and instances of one clip."""
    import warnings

    from studio.tinyworld import Scene, render_clip

    prompt, scene, size, stride, first = job
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clip = render_clip(prompt, num_frames=17, height=size, width=size, scene=Scene.from_dict(scene))
    keep = slice(first, None, stride)
    return {"frames": clip.frames[keep], "depth": clip.depth[keep].astype(np.float32),
            "instance": clip.instance[keep], "scene": clip.scene.to_dict(), "prompt": prompt}


CLOSEUP_FIRST_FRAME, CLOSEUP_STRIDE = 8, 2  # the second half of a push-in: frames 8, 10, ..., 16


def closeup_moves(row_index: int) -> list[str]:
    """Camera moves of a close-up clip: push in alone, or after another move (deterministic per row).

    The corpus spreads its frames over eleven moves, so frames near the end of a push-in (the camera
    at 40 % of its start distance) are rare in training and the net's depth there was 3-5x worse
    than elsewhere (AbsRel 0.05-0.11 against 0.02), which is what made a push-in clip's
    depth_consistency_l1 floor hide a teleporting object.
    """
    others = ("orbit_left", "orbit_right", "move_left", "move_right", "pan_left", "pan_right", "tilt_up", "tilt_down")
    return ["push_in"] if row_index % 3 == 0 else [others[row_index % len(others)], "push_in"]


def closeup_scene(scene: dict, row_index: int) -> dict:
    """A corpus row's scene with its camera moves replaced by closeup_moves(row_index)."""
    return {**scene, "moves": closeup_moves(row_index)}


def render_dataset(split: str, start: int, num_clips: int, size: int, data_dir: str | Path,
                   workers: int = 2, stride: int = FRAME_STRIDE, closeup: bool = False) -> dict:
    """Render (or load from cache) corpus rows [start, start + num_clips) of `split`.

    Each row's own scene (layout, palette, moves) is rendered: deterministic, no extra seed.
    closeup=True replaces the row's camera moves with closeup_moves and keeps frames 8, 10, ..., 16.
    Returns frames (N, T, H, W, 3) uint8, depth (N, T, H, W) float32, instance (N, T, H, W)
    int8 (-1 sky, 0 ground, i >= 1 object i-1), and lists scenes / prompts.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    first = CLOSEUP_FIRST_FRAME if closeup else 0
    stride = CLOSEUP_STRIDE if closeup else stride
    stem = f"tinyworld_{split}_{start}-{start + num_clips}_{size}px_stride{stride}" + ("_closeup" if closeup else "")
    cache, meta_file = data_dir / f"{stem}.npz", data_dir / f"{stem}.json"
    if cache.is_file() and meta_file.is_file():
        with np.load(cache) as z:
            out = {k: z[k] for k in ("frames", "depth", "instance")}
        meta = json.loads(meta_file.read_text())
        out.update(scenes=meta["scenes"], prompts=meta["prompts"])
        return out

    rows = split_rows(split)[start : start + num_clips]
    if len(rows) < num_clips:
        raise ValueError(f"split {split} has only {start + len(rows)} rows; asked for [{start}, {start + num_clips})")
    if closeup:
        rows = [{**r, "scene": closeup_scene(r["scene"], start + k)} for k, r in enumerate(rows)]
    jobs = [(r["prompt"], r["scene"], size, stride, first) for r in rows]
    t0 = time.time()
    if workers > 1:
        import multiprocessing as mp

        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.map(render_job, jobs, chunksize=16)
    else:
        results = [render_job(j) for j in jobs]
    out = {k: np.stack([r[k] for r in results]) for k in ("frames", "depth", "instance")}
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.rename(cache)
    meta = {"scenes": [r["scene"] for r in results], "prompts": [r["prompt"] for r in results],
            "render_s": time.time() - t0}
    meta_file.write_text(json.dumps(meta))
    out.update(scenes=meta["scenes"], prompts=meta["prompts"])
    print(f"rendered {num_clips} {split} clips at {size}px in {meta['render_s']:.1f}s -> {cache}", flush=True)
    return out


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------

def gradient_loss(log_depth, log_gt, valid, scales: int = 3):
    """Multi-scale gradient matching of the log-depth residual (as in MiDaS/MegaDepth).

    Penalises where the residual changes between neighbouring valid pixels, i.e. blurred or
    displaced depth edges, which a per-pixel L1 barely sees but which make odometry slide.
    """
    import torch
    from torch.nn import functional as F

    total = log_depth.new_zeros(())
    r, m = (log_depth - log_gt) * valid, valid.float()
    for s in range(scales):
        if s:
            r = F.avg_pool2d(r[:, None], 2)[:, 0]
            m = (F.avg_pool2d(m[:, None], 2)[:, 0] > 0.999).float()
            r = r * m
        mx, my = m[:, :, 1:] * m[:, :, :-1], m[:, 1:, :] * m[:, :-1, :]
        gx = (r[:, :, 1:] - r[:, :, :-1]).abs() * mx
        gy = (r[:, 1:, :] - r[:, :-1, :]).abs() * my
        total = total + (gx.sum() + gy.sum()) / (mx.sum() + my.sum()).clamp_min(1.0)
    return total / scales


def depth_loss(log_depth, sky_logit, gt_depth, sky_weight: float, grad_weight: float = 0.0):
    """L1 on log-depth over non-sky pixels + BCE of the sky logit (+ gradient matching); returns (total, l1, bce)."""
    import torch
    from torch.nn import functional as F

    valid = gt_depth > 0
    log_gt = torch.log(gt_depth.clamp_min(1e-6))
    l1 = (log_depth - log_gt).abs()[valid].mean()
    bce = F.binary_cross_entropy_with_logits(sky_logit, (~valid).float())
    total = l1 + sky_weight * bce
    if grad_weight:
        total = total + grad_weight * gradient_loss(log_depth, log_gt, valid)
    return total, l1, bce


def lr_at(step: int, cfg: DepthTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def sample_batch(data: dict, batch: int, rng: np.random.Generator):
    import torch

    n, t = data["frames"].shape[:2]
    ci = rng.integers(0, n, batch)
    fi = rng.integers(0, t, batch)
    frames = data["frames"][ci, fi]
    depth = data["depth"][ci, fi]
    flip = rng.random(batch) < 0.5  # mirror images: depth mirrors with them (K is centred)
    frames = np.where(flip[:, None, None, None], frames[:, :, ::-1], frames)
    depth = np.where(flip[:, None, None], depth[:, :, ::-1], depth)
    rgb = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    return rgb, torch.from_numpy(np.ascontiguousarray(depth))


def train(cfg: DepthTrainConfig) -> dict:
    import torch

    from studio.geometry.depth_net import DepthNetConfig, DepthUNet, TinyWorldDepth, save_depth_net
    from training.eval_depth import evaluate_depth

    from training.run_setup import start_run

    rng, run_dir = start_run(cfg)

    # Train rows [0, clips_64) at 64 px, the clips_128 rows before the validation rows at 128 px,
    # validation on the last val_clips rows of the train split; held-out evaluation uses the
    # test split (eval_depth.py).
    t0 = time.time()
    n_train = len(split_rows("train"))
    if cfg.clips_64 > n_train - cfg.val_clips or cfg.clips_128 > n_train - cfg.val_clips:
        raise ValueError(f"the train split has {n_train} rows, {cfg.val_clips} of them for validation")
    if cfg.p_closeup and not (cfg.closeup_clips_64 or cfg.closeup_clips_128):
        raise ValueError("p_closeup > 0 needs closeup_clips_64 or closeup_clips_128")
    data = {64: render_dataset("train", 0, cfg.clips_64, 64, cfg.data_dir, cfg.workers),
            128: render_dataset("train", n_train - cfg.val_clips - cfg.clips_128, cfg.clips_128, 128,
                                cfg.data_dir, cfg.workers)}
    closeups = {}
    for size, n in ((64, cfg.closeup_clips_64), (128, cfg.closeup_clips_128)):
        if n:  # rows from the start of the split again: the same scenes, seen from close up
            closeups[size] = render_dataset("train", 0, n, size, cfg.data_dir, cfg.workers, closeup=True)
    val = {s: render_dataset("train", n_train - cfg.val_clips, cfg.val_clips, s, cfg.data_dir, cfg.workers,
                             stride=1) for s in (64, 128)}
    data_s = time.time() - t0
    val_clips = {s: [{"frames": v["frames"][i], "depth": v["depth"][i]} for i in range(len(v["frames"]))]
                 for s, v in val.items()}

    gt_log = np.log(data[64]["depth"][data[64]["depth"] > 0])
    net_cfg = DepthNetConfig(channels=tuple(cfg.channels), log_depth_init=float(np.median(gt_log)))
    model = DepthUNet(net_cfg)
    warm = {}
    if cfg.init_from:
        from studio.geometry.depth_net import load_tinyworld_depth

        start = load_tinyworld_depth(cfg.init_from).model
        if tuple(start.config.channels) != tuple(cfg.channels):
            raise ValueError(f"--init-from {cfg.init_from} has channels {start.config.channels}, not {cfg.channels}")
        model.load_state_dict(start.state_dict())
        warm = dict(start.config.extra)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"depth net: {n_params / 1e6:.3f} M parameters; data ready in {data_s:.1f}s", flush=True)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)

    log_file = open(run_dir / "log.jsonl", "w")
    t_train, cpu_train = time.time(), time.process_time()
    stopped_early = False
    step = 0
    for step in range(cfg.steps):
        if (time.process_time() - cpu_train) / 60 > cfg.max_cpu_minutes:
            stopped_early = True
            break
        size = 128 if rng.random() < cfg.p_128 else 64
        source = data
        if closeups and rng.random() < cfg.p_closeup:
            size = size if size in closeups else next(iter(closeups))
            source = closeups
        rgb, gt = sample_batch(source[size], cfg.batch_128 if size == 128 else cfg.batch_64, rng)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        model.train()
        log_depth, sky_logit = model(rgb)
        loss, l1, bce = depth_loss(log_depth, sky_logit, gt, cfg.sky_weight, cfg.grad_weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            rec = {"step": step, "size": size, "loss": loss.item(), "l1_log_depth": l1.item(),
                   "bce_sky": bce.item(), "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t_train,
                   "cpu_s": time.process_time() - cpu_train}
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            print(json.dumps(rec), flush=True)
        if (step + 1) % cfg.val_every == 0 or step == cfg.steps - 1:
            rec = {"step": step, "elapsed_s": time.time() - t_train,
                   "cpu_s": time.process_time() - cpu_train}
            wrapper = TinyWorldDepth(model)
            for s, clips in val_clips.items():
                m = evaluate_depth(wrapper, clips)
                rec[f"val/{s}px/absrel_aligned"] = m["absrel_aligned"]
                rec[f"val/{s}px/sky_accuracy"] = m["sky_accuracy"]
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            print(json.dumps(rec), flush=True)

    train_s, train_cpu_s = time.time() - t_train, time.process_time() - cpu_train
    model.eval()
    net_cfg.extra = {
        "trained_by": "training/pretrain_depth.py", "seed": cfg.seed, "steps": step + 1 - int(stopped_early),
        "train_cpu_minutes": round(train_cpu_s / 60, 2), "train_wall_minutes": round(train_s / 60, 2),
        "threads": cfg.threads,
        "data": f"TinyWorld corpus train split: {cfg.clips_64} clips at 64px + {cfg.clips_128} at 128px, "
                f"frames 0,4,8,12,16 of 17"
                + (f"; close-ups (camera pushing in, frames 8-16 every 2nd): {cfg.closeup_clips_64} at 64px + "
                   f"{cfg.closeup_clips_128} at 128px, drawn with p={cfg.p_closeup}" if cfg.p_closeup else ""),
        "parameters": n_params,
        "loss": "L1 log-depth + sky BCE" + (f" + {cfg.grad_weight} x multi-scale gradient" if cfg.grad_weight else ""),
    }
    if cfg.init_from:
        net_cfg.extra["warm_start"] = {"from": cfg.init_from, "its_training": warm}
    save_depth_net(model, cfg.out)
    summary = {"train_s": train_s, "train_cpu_s": train_cpu_s, "data_s": data_s, "stopped_early": stopped_early,
               "parameters": n_params,
               "out": cfg.out}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    log_file.close()
    return summary


def parse_args(argv: list[str] | None = None) -> DepthTrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = DepthTrainConfig()
    for name, value in asdict(defaults).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, tuple):
            p.add_argument(flag, type=int, nargs="+", default=list(value))
        else:
            p.add_argument(flag, type=type(value), default=value)
    args = p.parse_args(argv)
    kwargs = vars(args)
    kwargs["channels"] = tuple(kwargs["channels"])
    return DepthTrainConfig(**kwargs)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    train(parse_args())
