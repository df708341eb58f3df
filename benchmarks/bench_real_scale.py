"""The studio's real-model paths at Wan2.1-T2V-1.3B size, with random weights, on the CPU: time and memory.

    python -m benchmarks.bench_real_scale [--model-dir DIR] [--keep] [--out runs/bench_real_scale.json]

Stages, run one after another, each in a fresh process (so memory is free between them):

1. build: the Wan2.1-T2V-1.3B transformer (float32), its VAE (float32) and the UMT5-XXL encoder
   (bfloat16: 22.7 GB in float32 does not fit next to the rest) at their published sizes
   (studio/real_configs.py), saved one at a time as a diffusers WanPipeline directory in a temp dir
   under /tmp (deleted at the end).
2. flow-grpo: training.train.train, the real trainer loop, for one epoch of the world-r1-small preset
   (LoRA r 32 / alpha 64 on to_q, to_k, to_v, to_out.0; bf16 autocast; KL to the reference; the
   World-R1 rewards) at its smallest batch on one process: one prompt group of K = 2 rollouts at
   17×64×64, 2 sampling steps with the first trained, one optimizer step. Its LoRA checkpoint is the
   adapter of stage 4. Then the activations one trained step saves for backward are counted at two
   token counts with the transformer in bf16 (as on a GPU), to extrapolate to 480×832×81.
3. generate: studio.pipelines.load_pipeline(DIR) (text encoder loaded in bfloat16, the rest float32)
   and generate 17×64×64, 2 steps, CFG 5, camera-aware init; then studio.geometry.analyze.
4. lora: load_pipeline(DIR, lora=...) on the cached base (one copy of the base weights), the tuned
   clip with the same seed, the baseline again (adapter off), analyze on the tuned clip.
5. vae-decode: decode peaks at two sizes, to extrapolate to 480×832.
6. depth-anything: a random Depth-Anything-V2-Small saved with save_pretrained, through
   analyze(frames, estimator="depth-anything").

Memory: weights load from safetensors memory-mapped, so they count as file-backed resident memory
(page cache the kernel can drop and re-read) rather than heap; the table shows both. With 17.6 GB of
weights on a 24 GB machine shared with other jobs, part of them is evicted and re-read from disk
during a stage, which the wall times include. Before each
heavy stage the bench checks MemAvailable and waits (then gives up) while running it would leave
less than 4 GB for other processes. Run it niced: `nice -n 10 python -m benchmarks.bench_real_scale`.
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from studio import real_configs as rc

GB = 1024**3
RESERVE_GB = 4.0  # left to the machine's other processes
PROMPT = "Camera move left. A cinematic view of a snow-covered castle on a ridge. Overcast light keeps the shadows soft."
SMALL = dict(num_frames=17, height=64, width=64)
TARGET = dict(num_frames=81, height=480, width=832)  # World-R1's Wan2.1 setting


# ------------------------------------------------------------------------------------ memory
def _proc_status_mb() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                out[key] = int(value.split()[0]) / 1024
    return out


def free_memory() -> None:
    """Collect garbage and hand freed heap back to the system: glibc otherwise keeps the gigabytes a
    stage's activations used, and the next stage's memory-mapped weights get evicted instead."""
    import ctypes

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def mem_available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024**2
    return 0.0


def wait_for_memory(need_gb: float, what: str, wait_minutes: float) -> None:
    """Block until running `what` (needing need_gb of heap) leaves RESERVE_GB available; else exit."""
    deadline = time.monotonic() + 60 * wait_minutes
    while True:
        avail = mem_available_gb()
        if avail - need_gb >= RESERVE_GB:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} needs {need_gb:.1f} GB and only {avail:.1f} GB is available "
                             f"(keeping {RESERVE_GB:.0f} GB for other processes); try again when the machine is quieter")
        print(f"  waiting: {what} needs {need_gb:.1f} GB, {avail:.1f} GB available", flush=True)
        time.sleep(15)


class MemoryWatch:
    """Peak resident memory of this process during a block, sampled every 20 ms: heap (anonymous:
    tensors, activations) and file-backed (memory-mapped weights). VmHWM is reset at the start, so
    its value at the end is the exact peak of the total."""

    def __init__(self):
        self.peak_anon_gb = self.peak_file_gb = self.peak_total_gb = 0.0
        self.start_anon_gb = 0.0
        self._stop = threading.Event()

    def _sample(self):
        s = _proc_status_mb()
        self.peak_anon_gb = max(self.peak_anon_gb, s["RssAnon"] / 1024)
        self.peak_file_gb = max(self.peak_file_gb, s["RssFile"] / 1024)

    def _run(self):
        while not self._stop.wait(0.02):
            self._sample()

    def __enter__(self):
        free_memory()
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # reset VmHWM
        except OSError:
            pass
        self.start_anon_gb = _proc_status_mb()["RssAnon"] / 1024
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
        self.peak_total_gb = _proc_status_mb()["VmHWM"] / 1024
        return False


class Report:
    def __init__(self):
        self.stages: list[dict] = []

    def stage(self, name: str, wall_s: float, mem: MemoryWatch, **notes) -> dict:
        row = dict(stage=name, wall_s=round(wall_s, 2), peak_rss_gb=round(mem.peak_total_gb, 2),
                   peak_heap_gb=round(mem.peak_anon_gb, 2), peak_mapped_gb=round(mem.peak_file_gb, 2), **notes)
        self.stages.append(row)
        extra = "  ".join(f"{k}={v}" for k, v in notes.items())
        print(f"[{name}] {wall_s:.1f} s, peak RSS {mem.peak_total_gb:.2f} GB (heap {mem.peak_anon_gb:.2f}, "
              f"mapped weights {mem.peak_file_gb:.2f})  {extra}", flush=True)
        return row


# ------------------------------------------------------------------------------------ helpers
def _dtype_map():
    import torch

    # The CPU default (float32 for everything) would turn the 11.4 GB bfloat16 text encoder into 22.7 GB of heap.
    return {"text_encoder": torch.bfloat16, "default": torch.float32}


def _tokens(num_frames: int, height: int, width: int) -> int:
    """Video tokens of the Wan2.1 transformer: latent (F−1)/4+1 frames × H/8 × W/8, patch (1, 2, 2)."""
    return ((num_frames - 1) // 4 + 1) * (height // 16) * (width // 16)


def _file_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in Path(path).rglob("*.safetensors")) / GB


def saved_for_backward(pipe, size: dict, guidance: float, autocast) -> dict:
    """Bytes the autograd graph of one trained step (policy forward with CFG, batch 1) saves for backward.

    Counted with saved-tensor hooks, each storage once; parameters are left out, and so are float32→bf16
    copies of the frozen base weights that autocast makes (a model stored in bf16 has none). Tensors with
    two axes of the video-token count are attention matrices (none with a fused attention kernel)."""
    import torch

    transformer = pipe.transformer
    param_ptrs = {p.untyped_storage().data_ptr() for p in transformer.parameters()}
    weight_shapes = {tuple(p.shape) for n, p in transformer.named_parameters() if not p.requires_grad and p.ndim >= 2}
    L = _tokens(**size)
    seen: set[int] = set()
    counts = dict(activations=0, weight_copies=0, attention_matrices=0)

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        if ptr in param_ptrs or ptr in seen:
            return t
        seen.add(ptr)
        nbytes = t.untyped_storage().nbytes()
        if tuple(t.shape) in weight_shapes:
            counts["weight_copies"] += nbytes
        elif sum(1 for s in t.shape if s == L) >= 2:
            counts["attention_matrices"] += nbytes
        else:
            counts["activations"] += nbytes
        return t

    cond, uncond = pipe.encode_prompt([PROMPT], guidance)
    x = pipe.prepare_latents([PROMPT], [0], size["num_frames"], size["height"], size["width"])
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast():
        v = pipe.predict_velocity(x, 0.9, cond, uncond, guidance)
    del v
    return dict(tokens=L, **counts)


# ------------------------------------------------------------------------------------ stages
def stage_build(report: Report, model_dir: Path, wait_minutes: float) -> dict:
    text_params = published_param_counts()["text_encoder"]
    wait_for_memory(text_params * 2 / GB + 1.5, "building the bf16 UMT5-XXL encoder", wait_minutes)
    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        info = rc.save_random_wan_pipeline(model_dir)
    for name, i in info.items():
        print(f"  {name}: {i['params'] / 1e9:.3f} B params, built in {i['build_s']:.1f} s, saved in {i['save_s']:.1f} s, "
              f"{i['bytes'] / GB:.2f} GB on disk", flush=True)
    report.stage("build + save (random weights)", time.perf_counter() - t0, mem,
                 params={k: v["params"] for k, v in info.items()},
                 disk_gb={k: round(v["bytes"] / GB, 2) for k, v in info.items()})
    return info


def stage_flow_grpo(report: Report, model_dir: Path, work: Path, wait_minutes: float) -> dict:
    import torch
    from accelerate import Accelerator

    from studio.pipelines import load_pipeline
    from training.config import apply_overrides, get_preset
    from training.train import list_checkpoints, train

    cfg = apply_overrides(get_preset("world-r1-small"), [
        # the preset's LoRA, optimizer, GRPO and reward settings at the smallest batch one process can run:
        # one prompt group of K = 2 (the preset's per-device batch of 1 needs 2+ processes for a group)
        f"pipeline={model_dir}", "epochs=1", "num_steps=2", "timestep_fraction=0.5",
        f"num_frames={SMALL['num_frames']}", f"height={SMALL['height']}", f"width={SMALL['width']}",
        "group_size=2", "per_device_batch_size=2", "num_batches_per_epoch=1", "train_batch_size=1",
        "steps_per_epoch=1", "num_eval_clips=0", "dynamic_prompts=", "reward_workers=1",
    ])
    wait_for_memory(3.0, "the Flow-GRPO step", wait_minutes)
    run_dir = work / "run"
    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        pipe = load_pipeline(str(model_dir), device="cpu", dtype=_dtype_map(), cache=False)
        load_s = time.perf_counter() - t0
        summary = train(cfg, run_dir, pipeline=pipe, progress=False)
    wall = time.perf_counter() - t0
    record = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][-1]
    ckpt = list_checkpoints(run_dir)[-1]
    lora_file = ckpt / "pytorch_lora_weights.safetensors"
    lora_params = sum(p.numel() for n, p in pipe.transformer.named_parameters() if p.requires_grad)
    report.stage("flow-grpo: train() 1 epoch, 1 optimizer step", wall, mem, load_s=round(load_s, 1),
                 global_step=summary.global_step, lora_params=lora_params,
                 lora_mb_on_disk=round(lora_file.stat().st_size / 2**20, 1),
                 **{k: float(f"{v:.3g}") for k, v in record.items()
                    if k.startswith("time/") or k in ("loss", "kl", "grad_norm", "reward/total/mean")})

    # Activations saved for backward, at two token counts, held as a GPU run holds them: load_pipeline on
    # CUDA gives bf16 weights, add_lora keeps the LoRA in float32, the trainer runs under bf16 autocast.
    trainable = [p for p in pipe.transformer.parameters() if p.requires_grad]
    pipe.transformer.to(torch.bfloat16)
    for p in trainable:
        p.data = p.data.float()
    autocast = Accelerator(mixed_precision=cfg.mixed_precision, cpu=True).autocast
    saved = []
    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        for size in (SMALL, dict(SMALL, height=128, width=128)):
            saved.append(saved_for_backward(pipe, size, cfg.guidance_scale, autocast))
            print(f"  saved for backward at {saved[-1]['tokens']} tokens: "
                  + ", ".join(f"{k} {v / 2**20:.0f} MB" for k, v in saved[-1].items() if k != "tokens"), flush=True)
    report.stage("flow-grpo: count saved activations (80, 320 tokens)", time.perf_counter() - t0, mem)
    return dict(lora=lora_file, lora_params=lora_params, saved=saved)


def stage_generate_and_lora(report: Report, model_dir: Path, lora: Path, wait_minutes: float) -> dict:
    from studio.geometry import analyze
    from studio.pipelines import load_pipeline

    wait_for_memory(2.0, "generation", wait_minutes)
    gen_kwargs = dict(seed=0, steps=2, guidance=5.0, camera_init=True, **SMALL)
    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        base = load_pipeline(str(model_dir), device="cpu", dtype=_dtype_map())
        load_s = time.perf_counter() - t0
        baseline = base.generate(PROMPT, **gen_kwargs)
    report.stage("load_pipeline + generate (baseline)", time.perf_counter() - t0, mem, load_s=round(load_s, 1),
                 **{k: round(v, 2) for k, v in baseline.timings.items()}, moves=baseline.moves)
    free_memory()
    rss_one = _proc_status_mb()

    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        result = analyze(baseline.frames, baseline.prompt)
    report.stage("analyze (baseline, tinyworld depth)", time.perf_counter() - t0, mem,
                 **{k: result.metrics.get(k) for k in ("depth_consistency_l1", "recon_psnr", "trajectory_error_deg")},
                 warnings=len(result.warnings))

    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        tuned = load_pipeline(str(model_dir), lora=str(lora), device="cpu", dtype=_dtype_map())
        lora_load_s = time.perf_counter() - t0
        tuned_clip = tuned.generate(PROMPT, **gen_kwargs)
        free_memory()
        rss_both = _proc_status_mb()
        again = base.generate(PROMPT, **gen_kwargs)
    diff = np.abs(tuned_clip.frames.astype(np.int16) - baseline.frames.astype(np.int16))
    report.stage("load_pipeline(lora=) + generate tuned + baseline again", time.perf_counter() - t0, mem,
                 lora_load_s=round(lora_load_s, 2), same_modules=tuned.transformer is base.transformer,
                 tuned_vs_baseline_mean_abs=round(float(diff.mean()), 3), tuned_vs_baseline_max_abs=int(diff.max()),
                 baseline_repeats_exactly=bool(np.array_equal(again.frames, baseline.frames)),
                 rss_one_gb=round(rss_one["VmRSS"] / 1024, 2), rss_both_gb=round(rss_both["VmRSS"] / 1024, 2),
                 heap_one_gb=round(rss_one["RssAnon"] / 1024, 3), heap_both_gb=round(rss_both["RssAnon"] / 1024, 3))

    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        result = analyze(tuned_clip.frames, tuned_clip.prompt)
    report.stage("analyze (tuned)", time.perf_counter() - t0, mem,
                 **{k: result.metrics.get(k) for k in ("depth_consistency_l1", "recon_psnr", "trajectory_error_deg")})

    # VAE decode peaks at two sizes (heap above what the stage started with), for the extrapolation.
    import torch

    decode = []
    for size in (SMALL, dict(SMALL, height=128, width=128)):
        latents = torch.randn(1, *base.latent_shape(**size))
        t0 = time.perf_counter()
        with MemoryWatch() as mem:
            base.decode_latents(latents)
        decode.append(dict(pixels=size["height"] * size["width"], frames=size["num_frames"], wall_s=time.perf_counter() - t0,
                           heap_gb=mem.peak_anon_gb - mem.start_anon_gb))
        report.stage(f"vae decode {size['num_frames']}x{size['height']}x{size['width']} (float32)", decode[-1]["wall_s"], mem,
                     heap_rise_gb=round(decode[-1]["heap_gb"], 3))
    return dict(frames=baseline.frames, decode=decode, rss_one=rss_one, rss_both=rss_both)


def stage_depth_anything(report: Report, frames: np.ndarray, work: Path) -> None:
    from studio.geometry import analyze

    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        info = rc.save_random_depth_anything(work / "depth-anything-v2-small")
    report.stage("depth-anything: build + save", time.perf_counter() - t0, mem, params=info["params"],
                 mb_on_disk=round(info["bytes"] / 2**20, 1))
    t0 = time.perf_counter()
    with MemoryWatch() as mem:
        result = analyze(frames, PROMPT, estimator="depth-anything",
                         estimator_kwargs={"model": str(work / "depth-anything-v2-small")})
    report.stage("analyze(estimator='depth-anything') 17x64x64", time.perf_counter() - t0, mem,
                 depth_s=round(result.timings["depth"], 2), depth_consistency_l1=result.metrics.get("depth_consistency_l1"))


# ------------------------------------------------------------------------------------ 480×832×81
def published_param_counts() -> dict[str, int]:
    """Parameter counts of the full-size models, from weightless (meta-device) instances."""
    import torch
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    with torch.device("meta"):
        models = dict(transformer=WanTransformer3DModel(**rc.WAN21_T2V_1_3B_TRANSFORMER), vae=AutoencoderKLWan(**rc.WAN21_VAE),
                      text_encoder=UMT5EncoderModel(rc.umt5_config()))
    return {k: rc.count_params(m) for k, m in models.items()}


def at_target_size(grpo: dict, gen: dict) -> list[tuple[str, str, str]]:
    """What the same stages need at 480×832×81: (quantity, value, how it was obtained)."""
    t = rc.WAN21_T2V_1_3B_TRANSFORMER
    d, f, layers = t["num_attention_heads"] * t["attention_head_dim"], t["ffn_dim"], t["num_layers"]
    L = _tokens(**TARGET)
    Lt = rc.WAN21_MAX_SEQUENCE_LENGTH
    counts = published_param_counts()
    P_tr, P_te, P_vae = counts["transformer"], counts["text_encoder"], counts["vae"]
    rows = [
        ("video tokens", f"{L:,}", f"(81−1)/4+1 = 21 latent frames × 480/16 × 832/16 (VAE 4×8×8, patch 1×2×2); text {Lt} tokens"),
        ("weights, bf16", f"transformer {P_tr * 2 / GB:.2f} GB, UMT5-XXL {P_te * 2 / GB:.2f} GB, VAE {P_vae * 2 / GB:.2f} GB",
         "parameter counts × 2 bytes"),
    ]
    linear_per_token = layers * (6 * d * d + 2 * d * f)  # self q,k,v,o + cross q,o + FFN, multiply-adds
    flops = 2 * (2 * L * linear_per_token + 2 * Lt * layers * 2 * d * d + 4 * L * L * d * layers + 4 * L * Lt * d * layers)
    rows.append(("transformer FLOPs per sampling step (CFG: 2 passes)", f"{flops / 1e12:.0f} TFLOP; 50 steps {50 * flops / 1e15:.1f} PFLOP",
                 "2 × [2·L·layers·(6d² + 2·d·ffn) + 2·L_text·layers·2d² + 4·L²·d·layers + 4·L·L_text·d·layers], d 1536, ffn 8960, 30 layers; "
                 f"at an assumed 400 TFLOP/s sustained: {flops / 400e12:.1f} s/step"))
    act_inf = 2 * L * (2 * f + 2 * d) * 2
    rows.append(("transformer activations, inference (CFG batch 2, bf16)", f"{act_inf / GB:.2f} GB",
                 "estimate: peak inside the FFN = b·L·(2·ffn + 2·d)·2 bytes (residual, norm, FFN up and GELU output live); "
                 "fused attention (no L² matrix)"))
    s0, s1 = grpo["saved"]
    slope = (s1["activations"] - s0["activations"]) / (s1["tokens"] - s0["tokens"])
    const = s0["activations"] - slope * s0["tokens"]
    per_step = const + slope * L
    rows.append(("Flow-GRPO: activations saved for backward per trained step, micro-batch 1 (CFG → batch 2), bf16",
                 f"{per_step / GB:.1f} GB ({slope / 2**10:.0f} KB/token + {const / 2**20:.0f} MB)",
                 f"measured on this model (bf16 weights, float32 LoRA, bf16 autocast, as train() on a GPU) at {s0['tokens']} "
                 f"and {s1['tokens']} tokens, linear fit; "
                 "attention matrices excluded (fused attention on a GPU stores O(L))"))
    per_layer_input = 2 * L * d * 2
    rows.append(("  … with gradient checkpointing", f"{(layers * per_layer_input + per_step / layers) / GB:.1f} GB",
                 "layers × block input (b·L·d·2 bytes) + one block's activations recomputed"))
    lora_params = grpo["lora_params"]
    rows.append(("LoRA r 32 training state", f"{lora_params * 20 / 2**20:.0f} MB",
                 f"{lora_params:,} params × (4 weight + 4 grad + 8 AdamW + 4 EMA) bytes"))
    (a, b) = gen["decode"]
    per_pixel = (b["heap_gb"] - a["heap_gb"]) / (b["pixels"] - a["pixels"])
    vae_peak = a["heap_gb"] + per_pixel * (480 * 832 - a["pixels"])
    out_frames = 81 * 3 * 480 * 832 * 4 / GB
    rows.append(("VAE decode 81×480×832, float32", f"{vae_peak + out_frames:.1f} GB (bf16 about half)",
                 f"rough: CPU heap rise at 64² and 128² (17 frames), linear in pixels (the Wan VAE decodes one latent frame "
                 f"at a time with a cache), + the decoded video {out_frames:.2f} GB; GPU conv kernels need other workspace; "
                 f"vae_tiling lowers it"))
    return rows


# ------------------------------------------------------------------------------------ main
def _stage_in_child(threads: int, stage: str, *args):
    import torch

    torch.set_num_threads(threads)
    report = Report()
    out = globals()[stage](report, *args)
    return report.stages, out


def run_stage(report: Report, threads: int, stage, *args):
    """Run a stage in a fresh process and collect its rows: memory is really free between stages (glibc
    keeps a process's freed heap, gigabytes after a bf16 training step), so no stage's figures carry
    what an earlier one left behind."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from benchmarks import bench_real_scale as this  # pickled by module path, not as __main__

    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn")) as pool:
        rows, out = pool.submit(this._stage_in_child, threads, stage.__name__, *args).result()
    report.stages.extend(rows)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=None,
                    help="build the pipeline here, or reuse the one this bench built here before (skips stage 1); kept")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory (the 17.6 GB pipeline) at the end")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--wait-minutes", type=float, default=10.0, help="how long to wait for memory before giving up")
    ap.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

    work = Path(tempfile.mkdtemp(prefix="bench_real_scale_", dir="/tmp"))
    model_dir = args.model_dir or work / "wan2.1-t2v-1.3b-random"
    report = Report()
    print(f"work dir {work}; MemAvailable {mem_available_gb():.1f} GB; torch threads {args.threads}", flush=True)
    try:
        if not (model_dir / "model_index.json").is_file():
            run_stage(report, args.threads, stage_build, model_dir, args.wait_minutes)
        grpo = run_stage(report, args.threads, stage_flow_grpo, model_dir, work, args.wait_minutes)
        gen = run_stage(report, args.threads, stage_generate_and_lora, model_dir, grpo["lora"], args.wait_minutes)
        run_stage(report, args.threads, stage_depth_anything, gen["frames"], work)
        target = at_target_size(grpo, gen)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    print("\n| stage | wall s | peak RSS GB | heap GB | mapped weights GB |\n|---|---|---|---|---|")
    for s in report.stages:
        print(f"| {s['stage']} | {s['wall_s']:.1f} | {s['peak_rss_gb']:.2f} | {s['peak_heap_gb']:.2f} | {s['peak_mapped_gb']:.2f} |")
    print("\nAt 480×832×81 (World-R1's setting):\n\n| quantity | value | how |\n|---|---|---|")
    for q, v, how in target:
        print(f"| {q} | {v} | {how} |")
    result = dict(stages=report.stages, at_480x832x81=[dict(quantity=q, value=v, how=h) for q, v, h in target],
                  saved_for_backward=grpo["saved"], vae_decode=gen["decode"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str))
    return result


if __name__ == "__main__":
    main()
