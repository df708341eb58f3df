"""Pre-train the TinyWorld text-to-video generator (the embedded baseline) on TinyWorld renders.

Stages, each a subcommand, all seeded and restartable from the files the previous one wrote:

    render   draw random training scenes (never a held-out colour-shape pair or camera sequence),
             render 17×64×64 clips with two processes -> data/tinyworld_gen/clips.npy + scenes.jsonl
    codec    fit the linear part of the latent codec (PCA on space-to-depth patches), encode every
             clip once -> latents.npy (the cache the generator trains on)
    train    rectified flow on the cached latents: a Wan transformer and a tiny UMT5 text encoder
             with a word-level tokenizer, trained jointly; logit-normal sigma, 10 % caption dropout,
             AdamW, EMA. Captions are re-drawn every time a clip is used, from the corpus caption
             generator, with a camera clause in only 40 % of them (the camera still moves in every
             clip), which is what leaves the base model weak at following camera words.
             Loss -> runs/generator/log.jsonl; EMA checkpoints every few minutes.
    refiner  train the codec's convolutional refiner (decoder) on renders, latents with noise
    decoder  replace the refiner of a trained generator's codec by the larger "upsample" decoder,
             trained on render latents with noise and on the generator's own latents (renders
             noised part-way and denoised by the generator), each paired with its render; the
             PCA latent space stays, so the generator and its LoRAs are untouched
    export   assemble a WorldPipeline (studio.pipelines) and save_pretrained -> assets/generator/

    python -m training.pretrain_generator all --minutes 45

Everything runs on the CPU in fp32 (the measured recipe in shared/environment.md), except that
the train stage takes a GPU when there is one (``--device auto``, the default; ``--bf16`` for a
bf16 forward pass there): the cached latents, the sampled noise and the data order are the same on
either device, so a GPU run is the same recipe with more steps per minute, e.g.

    python -m training.pretrain_generator train --device cuda --bf16 --batch-size 128 --minutes 10
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
# On a shared 2-core machine OpenMP's default busy-waiting made a 2-thread step 10-20x slower
# when other processes were running (measured 15-40 s vs 1.6-1.9 s per step); sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass
class PretrainConfig:
    """Every knob of the generator pre-training, with the value the shipped model used."""

    seed: int = 0  # seeds scenes, captions, initialisation and batches
    data_dir: str = "data/tinyworld_gen"  # rendered clips and cached latents
    run_dir: str = "runs/generator"  # log.jsonl, checkpoints, config.json
    out_dir: str = "assets/generator"  # the exported pipeline (save_pretrained)
    init_from: str = ""  # continue from an EMA checkpoint (ema-*.safetensors) with a fresh optimizer and schedule
    # data
    num_clips: int = 8000  # rendered training clips
    dynamic_fraction: float = 0.15  # share of scenes with moving objects
    render_workers: int = 2  # processes used to render
    num_frames: int = 17
    height: int = 64
    width: int = 64
    camera_prob: float = 0.4  # share of captions that name the camera move
    caption_dropout: float = 0.1  # share of empty captions (for classifier-free guidance)
    # latent codec
    z_dim: int = 16
    # pixels per latent cell: 8 is the shipped 8x8 grid; 4 gives a 16x16 grid, whose PCA keeps
    # shape far better at the same numbers per clip (docs/generator.md: codec ceilings)
    codec_scale_spatial: int = 8
    codec_fit_clips: int = 2000  # clips used to fit the PCA bases
    codec_from: str = ""  # a fitted codec folder (e.g. a pipeline's vae/) to encode with instead of fitting PCA
    # text encoder (tiny UMT5) and tokenizer
    max_sequence_length: int = 64  # text tokens (words)
    text_dim: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_ff: int = 256
    # transformer (Wan)
    layers: int = 4
    heads: int = 4
    head_dim: int = 64
    ffn_dim: int = 1024
    freq_dim: int = 256
    patch: int = 2  # spatial patch of the transformer: tokens per latent frame = (grid / patch)^2
    # optimisation
    batch_size: int = 16
    lr: float = 5e-4
    weight_decay: float = 0.01
    warmup_steps: int = 200
    ema_decay: float = 0.998
    minutes: float = 45.0  # wall-clock budget of the train stage
    max_steps: int = 1_000_000  # stop earlier if reached
    threads: int = 2  # torch.set_num_threads
    device: str = "auto"  # train stage: "auto" (cuda when present), "cpu", "cuda", "cuda:1", ...
    bf16: bool = False  # train stage on CUDA: bf16 autocast for the forward pass (weights, EMA, optimizer stay fp32)
    log_every: int = 20
    checkpoint_minutes: float = 5.0
    # sampling defaults stored with the model
    flow_shift: float = 3.0  # sigma shift used by the pipeline's sampler (3 beat 1 on held-out colour: 89 vs 83 %)
    # refiner (codec decoder)
    refiner_minutes: float = 6.0
    refiner_clips: int = 3  # clips per step (all 17 frames, one random aligned 32×32 crop each)
    refiner_lr: float = 2e-3
    refiner_latent_noise: float = 0.1  # std of the noise added to latents while training the refiner
    # decoder (the "upsample" codec decoder, trained after the generator)
    decoder_generator: str = "assets/generator"  # pipeline whose codec (PCA) and latents the decoder serves
    decoder_minutes: float = 25.0
    decoder_generated: int = 2400  # generator-made latents (paired with their renders) precomputed for training
    decoder_generated_share: float = 0.5  # share of each batch taken from them (the rest: render latents + noise)
    decoder_clips: int = 8  # clips per step
    decoder_frames: int = 4  # frames decoded per clip per step (the decoder works frame by frame)
    decoder_lr: float = 1e-3
    decoder_steps: int = 10  # sampler steps of the full schedule the generated latents are denoised on

    def path(self, name: str) -> Path:
        base = {"data": self.data_dir, "run": self.run_dir, "out": self.out_dir}[name]
        p = Path(base)
        return p if p.is_absolute() else ROOT / p


# ------------------------------------------------------------------------------------ render
def _render_chunk(args: tuple[int, int, int, float, int, int, int]) -> tuple[np.ndarray, list[dict]]:
    start, stop, seed, dynamic_fraction, num_frames, height, width = args
    from studio.tinyworld.corpus import sample_moves, sample_scene
    from studio.tinyworld.render import render_scene

    frames, scenes = [], []
    for i in range(start, stop):
        rng = np.random.default_rng([seed, i])  # clip i is the same whatever the chunking
        dynamic = rng.uniform() < dynamic_fraction
        scene = sample_scene(rng, "train", dynamic=dynamic)
        # Like the corpus' train split: a move in 90 % of clips, a fixed camera otherwise.
        scene.moves = sample_moves(rng) if rng.uniform() < 0.9 else ["fixed"]
        frames.append(render_scene(scene, num_frames, height, width)["frames"])
        scenes.append(scene.to_dict())
    return np.stack(frames), scenes


def render(cfg: PretrainConfig) -> None:
    from multiprocessing import get_context

    out = cfg.path("data")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    chunk = 200
    jobs = [(s, min(s + chunk, cfg.num_clips), cfg.seed, cfg.dynamic_fraction, cfg.num_frames, cfg.height, cfg.width)
            for s in range(0, cfg.num_clips, chunk)]
    with get_context("spawn").Pool(cfg.render_workers) as pool:
        parts = pool.map(_render_chunk, jobs)
    frames = np.concatenate([p[0] for p in parts])
    scenes = [s for p in parts for s in p[1]]
    np.save(out / "clips.npy", frames)
    (out / "scenes.jsonl").write_text("".join(json.dumps(s) + "\n" for s in scenes))
    print(f"rendered {len(frames)} clips {frames.shape[1:]} in {time.time() - t0:.0f} s -> {out}")


def load_scenes(cfg: PretrainConfig) -> list[dict]:
    return [json.loads(line) for line in (cfg.path("data") / "scenes.jsonl").read_text().splitlines()]


# ------------------------------------------------------------------------------------ codec
def fit_codec(cfg: PretrainConfig) -> None:
    import torch

    from studio.codec import TinyWorldCodec

    torch.manual_seed(cfg.seed)
    data = cfg.path("data")
    clips = np.load(data / "clips.npy", mmap_mode="r")
    t0 = time.time()
    if cfg.codec_from:  # a fitted codec: the same latent space as the model trained on it
        codec = TinyWorldCodec.from_pretrained(cfg.codec_from).eval()
    else:
        codec = TinyWorldCodec(z_dim=cfg.z_dim, scale_factor_spatial=cfg.codec_scale_spatial)
        rng = np.random.default_rng(cfg.seed)
        fit_idx = np.sort(rng.choice(len(clips), size=min(cfg.codec_fit_clips, len(clips)), replace=False))
        codec.fit(TinyWorldCodec.frames_to_video(np.asarray(clips[fit_idx])))
    latents = []
    with torch.no_grad():
        for s in range(0, len(clips), 256):
            latents.append(codec.encode(TinyWorldCodec.frames_to_video(np.asarray(clips[s : s + 256]))).numpy())
    latents = np.concatenate(latents).astype(np.float32)
    np.save(data / "latents.npy", latents)
    codec.save_pretrained(data / "codec")
    # Held-out-ish check: linear reconstruction PSNR on the last 200 clips.
    with torch.no_grad():
        video = TinyWorldCodec.frames_to_video(np.asarray(clips[-200:]))
        z = torch.from_numpy(latents[-200:])
        rec = (codec.decode(z).sample if cfg.codec_from else codec.decode_linear(z)).clamp(-1, 1)
        mse = ((rec - video) ** 2).mean().item() / 4.0  # in [0, 1] units
    print(f"codec ready in {time.time() - t0:.0f} s; latents {latents.shape}, "
          f"std per channel {latents.std(axis=(0, 2, 3, 4)).round(2).tolist()}; reconstruction PSNR {10 * math.log10(1 / mse):.1f} dB")


# ------------------------------------------------------------------------------------ model
def caption_vocabulary(cfg: PretrainConfig, scenes: list[dict]) -> list[str]:
    """Every word the caption generator and the shipped corpora use (words only, no pairings)."""
    from studio.camera import MOVE_PHRASES
    from studio.pipelines import normalize_prompt_words
    from studio.tinyworld.corpus import build_split, make_caption
    from studio.tinyworld.scene import COLORS, GROUND_WORDS, MOTION_WORDS, SHAPE_WORDS, SKY_WORDS

    rng = np.random.default_rng([cfg.seed, 7])
    words: set[str] = set()
    for scene in scenes:
        for _ in range(3):
            words.update(normalize_prompt_words(make_caption(scene, rng, camera_prob=1.0)))
    for split, n in (("train", 5000), ("test", 300), ("dynamic", 300)):
        for row in build_split(split, n):
            words.update(normalize_prompt_words(row["prompt"]))
    words.update(COLORS)
    for table in (SHAPE_WORDS, GROUND_WORDS, SKY_WORDS, MOTION_WORDS):
        words.update(table)
    for phrase in MOVE_PHRASES.values():
        words.update(phrase.split())
    words.update(["camera", "then", "the", "a", "an", "and", "left", "right", "up", "down", "in", "out"])
    return sorted(words)


def build_components(cfg: PretrainConfig, vocabulary: list[str]):
    """Fresh tokenizer, text encoder and transformer for the TinyWorld generator."""
    import torch
    from diffusers import WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from studio.pipelines import build_word_tokenizer

    torch.manual_seed(cfg.seed)
    tokenizer = build_word_tokenizer(vocabulary, cfg.max_sequence_length)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=cfg.text_dim, d_kv=cfg.text_dim // cfg.text_heads, d_ff=cfg.text_ff,
        num_layers=cfg.text_layers, num_heads=cfg.text_heads, relative_attention_num_buckets=32,
        relative_attention_max_distance=64, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, decoder_start_token_id=0,
    ))
    transformer = WanTransformer3DModel(
        patch_size=(1, cfg.patch, cfg.patch), num_attention_heads=cfg.heads, attention_head_dim=cfg.head_dim,
        in_channels=cfg.z_dim, out_channels=cfg.z_dim, text_dim=cfg.text_dim, freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim, num_layers=cfg.layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )
    return tokenizer, text_encoder, transformer


def assemble_pipeline(cfg: PretrainConfig, tokenizer, text_encoder, transformer, codec):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from studio.pipelines import WorldPipeline
    from studio.tinyworld.render import HFOV_DEG

    return WorldPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder.eval(), transformer=transformer.eval(), vae=codec.eval(),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=cfg.flow_shift),
        max_sequence_length=cfg.max_sequence_length, fps=8,
        # TinyWorld's latent grid is only 8×8: a 9×9 box would flatten the delta to a per-frame
        # constant, so the low-pass is 3×3 here (same cut-off relative to the grid as 9×9 on 60×104
        # is not possible; 3 keeps the coarse flow structure). The noise is warped at 8× the grid.
        warp_box=3, warp_upscale=8, warp_fov_deg=HFOV_DEG,
        default_height=cfg.height, default_width=cfg.width, default_num_frames=cfg.num_frames,
        default_steps=20, default_guidance=5.0,
    )


# ------------------------------------------------------------------------------------ train
def _lr_at(step: int, cfg: PretrainConfig, total_s: float, elapsed_s: float) -> float:
    """Linear warm-up, then cosine decay over the wall-clock budget (time, not steps, is fixed)."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(elapsed_s / total_s, 1.0)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))


def train_device(name: str):
    """The torch device of the train stage; "auto" takes CUDA when there is one."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"--device {name!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: this machine has no CUDA device; use --device cpu (or auto)")
    return device


def train(cfg: PretrainConfig) -> None:
    import contextlib

    import torch
    from safetensors.torch import save_file

    from studio.codec import TinyWorldCodec
    from studio.pipelines import embed_prompts
    from studio.tinyworld.corpus import make_caption

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    device = train_device(cfg.device)
    bf16 = cfg.bf16 and device.type == "cuda"
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    data, run = cfg.path("data"), cfg.path("run")
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    latents = torch.from_numpy(np.load(data / "latents.npy"))
    scenes = load_scenes(cfg)
    vocabulary = caption_vocabulary(cfg, scenes)
    tokenizer, text_encoder, transformer = build_components(cfg, vocabulary)
    codec = TinyWorldCodec.from_pretrained(data / "codec")
    n_params = sum(p.numel() for p in transformer.parameters()) + sum(p.numel() for p in text_encoder.parameters())
    print(f"{len(latents)} clips, vocabulary {len(vocabulary)} words, {n_params / 1e6:.2f} M parameters")
    print(json.dumps(asdict(cfg)))

    models = torch.nn.ModuleDict({"transformer": transformer, "text_encoder": text_encoder}).train()
    if cfg.init_from:
        from safetensors.torch import load_file

        models.load_state_dict(load_file(cfg.init_from))
        print(f"continuing from {cfg.init_from}")
    models.to(device)
    print(f"training on {device}" + (" (bf16 autocast)" if bf16 else ""))
    ema = {k: v.detach().clone() for k, v in models.state_dict().items()}
    params = [p for p in models.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    rng = np.random.default_rng([cfg.seed, 1])
    gen = torch.Generator().manual_seed(cfg.seed)
    log = open(run / "log.jsonl", "a")
    t_start = time.time()
    total_s = cfg.minutes * 60
    next_ckpt = cfg.checkpoint_minutes * 60
    step, loss_acc = 0, []

    def save_checkpoint(tag: str) -> None:
        state = {k: v.detach().cpu().contiguous() for k, v in ema.items()}
        save_file(state, run / f"ema-{tag}.safetensors")
        (run / "latest.json").write_text(json.dumps({"step": step, "tag": tag, "elapsed_s": time.time() - t_start}))
        export_from_state(cfg, state, tokenizer, codec, run / f"pipeline-{tag}")

    while step < cfg.max_steps and time.time() - t_start < total_s:
        idx = rng.integers(len(latents), size=cfg.batch_size)
        x0 = latents[idx]
        captions = ["" if rng.uniform() < cfg.caption_dropout else make_caption(scenes[i], rng, cfg.camera_prob) for i in idx]
        # Logit-normal sigma (SD3 / rectified-flow practice): most samples at mid noise. Drawn on
        # the CPU generator whatever the device, so a run's noise does not depend on the hardware.
        sigma = torch.sigmoid(torch.randn(cfg.batch_size, generator=gen))
        noise = torch.randn(x0.shape, generator=gen)
        x0, sigma, noise = x0.to(device), sigma.to(device), noise.to(device)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        target = noise - x0
        with autocast:
            embeds = embed_prompts(tokenizer, text_encoder, captions, cfg.max_sequence_length)
            pred = transformer(hidden_states=x_t, timestep=sigma * 1000, encoder_hidden_states=embeds, return_dict=False)[0]
        loss = torch.nn.functional.mse_loss(pred.float(), target)
        for g in opt.param_groups:
            g["lr"] = _lr_at(step, cfg, total_s, time.time() - t_start)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in models.state_dict().items():
                if v.dtype.is_floating_point:
                    ema[k].lerp_(v, 1 - decay)
                else:
                    ema[k].copy_(v)
        step += 1
        loss_acc.append(loss.item())
        if step % cfg.log_every == 0:
            rec = {"step": step, "loss": float(np.mean(loss_acc)), "grad_norm": float(grad_norm),
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": round(time.time() - t_start, 1)}
            log.write(json.dumps(rec) + "\n")
            log.flush()
            loss_acc = []
        if time.time() - t_start > next_ckpt:
            save_checkpoint(f"{int((time.time() - t_start) / 60):03d}min")
            next_ckpt += cfg.checkpoint_minutes * 60
    save_checkpoint("final")
    log.close()
    print(f"trained {step} steps in {(time.time() - t_start) / 60:.1f} min")


def export_from_state(cfg: PretrainConfig, state: dict, tokenizer, codec, out_dir: Path) -> None:
    """Build a pipeline with the given (EMA) transformer/text-encoder weights and save it."""
    import torch

    _, text_encoder, transformer = build_components(cfg, list(tokenizer.get_vocab()))
    models = torch.nn.ModuleDict({"transformer": transformer, "text_encoder": text_encoder})
    models.load_state_dict(state)
    pipe = assemble_pipeline(cfg, tokenizer, text_encoder, transformer, codec)
    pipe.save_pretrained(out_dir, safe_serialization=True)


# ------------------------------------------------------------------------------------ refiner
def train_refiner(cfg: PretrainConfig, pipeline_dir: Path | None = None) -> None:
    """Train the codec's convolutional refiner on renders (random aligned 32×32 crops of clips)."""
    import torch

    from studio.codec import TinyWorldCodec

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 3)
    data, run = cfg.path("data"), cfg.path("run")
    run.mkdir(parents=True, exist_ok=True)
    clips = np.load(data / "clips.npy", mmap_mode="r")
    latents = np.load(data / "latents.npy", mmap_mode="r")
    # Continue from an earlier refiner run when there is one (the PCA part is the same).
    codec = TinyWorldCodec.from_pretrained(data / ("codec_refined" if (data / "codec_refined").exists() else "codec"))
    refiner_params = [p for n, p in codec.named_parameters() if n.startswith(("refiner", "blocks"))]
    opt = torch.optim.AdamW(refiner_params, lr=cfg.refiner_lr, weight_decay=0.0)
    rng = np.random.default_rng([cfg.seed, 3])
    n_train = len(clips) - 200  # the last 200 clips are held out for the PSNR check
    log = open(run / "refiner_log.jsonl", "a")
    t0, step = time.time(), 0
    crop, p = 32, codec.config.scale_factor_spatial
    while time.time() - t0 < cfg.refiner_minutes * 60:
        idx = np.sort(rng.choice(n_train, size=cfg.refiner_clips, replace=False))
        cy, cx = (rng.integers(0, (cfg.height - crop) // p + 1) * p, rng.integers(0, (cfg.width - crop) // p + 1) * p)
        video = TinyWorldCodec.frames_to_video(np.asarray(clips[idx])[:, :, cy : cy + crop, cx : cx + crop])
        z = torch.from_numpy(np.asarray(latents[idx])[:, :, :, cy // p : (cy + crop) // p, cx // p : (cx + crop) // p])
        z = z + cfg.refiner_latent_noise * torch.randn_like(z) * torch.rand(len(z), 1, 1, 1, 1)
        with torch.no_grad():
            linear = codec.decode_linear(z)
        out = codec.refine(z, linear)
        loss = (out - video).abs().mean() + ((out - video) ** 2).mean()
        lr = cfg.refiner_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * max(0.0, 1 - (time.time() - t0) / (cfg.refiner_minutes * 60)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % 20 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), "elapsed_s": round(time.time() - t0, 1)}) + "\n")
            log.flush()
    codec.eval()
    with torch.no_grad():  # PSNR check on 40 of the 200 held-out clips (decoding is the slow part)
        video = TinyWorldCodec.frames_to_video(np.asarray(clips[-40:]))
        z = torch.from_numpy(np.array(latents[-40:]))
        lin = codec.decode_linear(z).clamp(-1, 1)
        ref = codec.decode(z).sample.clamp(-1, 1)
    psnr = lambda a: 10 * math.log10(4.0 / ((a - video) ** 2).mean().item())  # noqa: E731
    msg = {"refiner_steps": step, "psnr_linear_db": round(psnr(lin), 2), "psnr_refined_db": round(psnr(ref), 2)}
    print(json.dumps(msg))
    log.write(json.dumps(msg) + "\n")
    log.close()
    codec.save_pretrained(data / "codec_refined")
    if pipeline_dir is not None:
        codec.save_pretrained(Path(pipeline_dir) / "vae")


# ------------------------------------------------------------------------------------ decoder
def generated_latents(pipe, z0: "torch.Tensor", captions: list[str], steps: int, rng: np.random.Generator,
                      guidance: float = 5.0, batch: int = 32) -> "torch.Tensor":
    """The generator's own version of each render latent: noise it part-way, denoise with CFG.

    Each clip starts at a random step in the second half of the pipeline's shifted schedule
    (sigma about 0.4-0.7 for 10 steps), so the layout is still the render's while texture, edges
    and block structure are the generator's: the latents the decoder will see at inference, with
    a target to match. (Starting higher, the generator redraws the scene and the pair no longer
    matches: 15 dB between the render and its generated twin.)
    """
    import torch

    sigmas = pipe.sigmas(steps)
    out = torch.empty_like(z0)
    for s in range(0, len(z0), batch):
        x0 = z0[s : s + batch]
        start = int(rng.integers(steps // 2, steps - 2))  # sigma about 0.4-0.7: the render's layout survives
        x = (1 - sigmas[start]) * x0 + sigmas[start] * torch.from_numpy(rng.standard_normal(x0.shape).astype(np.float32))
        cond, uncond = pipe.encode_prompt(captions[s : s + batch], guidance)
        with torch.no_grad():
            for i in range(start, steps):
                v = pipe.predict_velocity(x, sigmas[i], cond, uncond, guidance)
                x = x + (sigmas[i + 1] - sigmas[i]) * v
        out[s : s + batch] = x
    return out


def _decoder_loss(out, target):
    """L1 + MSE + an edge term (finite differences), in [-1, 1] pixel units."""
    l1 = (out - target).abs().mean() + ((out - target) ** 2).mean()
    dx = lambda v: v[..., :, 1:] - v[..., :, :-1]  # noqa: E731
    dy = lambda v: v[..., 1:, :] - v[..., :-1, :]  # noqa: E731
    return l1 + 0.5 * ((dx(out) - dx(target)).abs().mean() + (dy(out) - dy(target)).abs().mean())


def _timed_step(opt, params, loss, base_lr: float, step: int, frac: float, warmup: int = 100) -> float:
    """One clipped optimizer step at a linear warm-up then cosine-over-the-wall-clock-budget rate
    (``frac``: share of the budget used), down to 5 % of ``base_lr``. Returns the rate used."""
    import torch

    lr = base_lr * min(1.0, (step + 1) / warmup) * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))
    for g in opt.param_groups:
        g["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return lr


def train_decoder(cfg: PretrainConfig) -> dict:
    """Train the "upsample" decoder for the generator at ``cfg.decoder_generator``; save the codec."""
    import torch

    from studio.codec import TinyWorldCodec
    from studio.pipelines import WorldPipeline
    from studio.tinyworld.corpus import make_caption

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + 5)
    data, run = cfg.path("data"), cfg.path("run")
    run.mkdir(parents=True, exist_ok=True)
    gen_dir = Path(cfg.decoder_generator) if Path(cfg.decoder_generator).is_absolute() else ROOT / cfg.decoder_generator
    pipe = WorldPipeline.from_pretrained(gen_dir, local_files_only=True)
    old = pipe.vae
    codec = TinyWorldCodec(z_dim=old.config.z_dim, scale_factor_spatial=old.config.scale_factor_spatial,
                           scale_factor_temporal=old.config.scale_factor_temporal, decoder_type="upsample")
    for name in ("mean_first", "basis_first", "mean_group", "basis_group", "latent_mean", "latent_std"):
        getattr(codec, name).copy_(getattr(old, name))  # same latent space as the generator's
    clips = np.load(data / "clips.npy", mmap_mode="r")
    scenes = load_scenes(cfg)
    n_val = 200  # the last clips: held out for the PSNR check
    n_train = len(clips) - n_val
    rng = np.random.default_rng([cfg.seed, 5])
    t0 = time.time()
    with torch.no_grad():
        z0 = torch.cat([codec.encode(TinyWorldCodec.frames_to_video(np.asarray(clips[s : s + 256])))
                        for s in range(0, len(clips), 256)])
        gen_idx = np.sort(rng.choice(n_train, size=min(cfg.decoder_generated, n_train), replace=False))
        val_gen_idx = np.arange(n_train, len(clips))[:64]
        idx_all = np.concatenate([gen_idx, val_gen_idx])
        captions = [make_caption(scenes[i], rng, cfg.camera_prob) for i in idx_all]
        # The generator's latents cost most of the stage on a CPU: kept in the run folder for a rerun
        # with the same generator, clips and settings.
        from safetensors.torch import load_file, save_file

        key = f"{gen_dir.resolve()}|{len(clips)}|{cfg.decoder_generated}|{cfg.decoder_steps}|{cfg.seed}"
        cache = run / "generated_latents.safetensors"
        cached = load_file(cache) if cache.exists() else {}
        if cached and (run / "generated_latents.key").read_text() == key:
            z_gen_all = cached["z"]
        else:
            # its own generator: the training batches below are the same with or without the cache
            z_gen_all = generated_latents(pipe, z0[idx_all], captions, cfg.decoder_steps, np.random.default_rng([cfg.seed, 6]))
            save_file({"z": z_gen_all.contiguous()}, cache)
            (run / "generated_latents.key").write_text(key)
    z_gen, z_gen_val = z_gen_all[: len(gen_idx)], z_gen_all[len(gen_idx):]
    prep_s = time.time() - t0
    print(f"decoder data: {len(clips)} clips, {len(gen_idx)} generated latents in {prep_s:.0f} s", flush=True)

    params = list(codec.decoder.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    log = open(run / "decoder_log.jsonl", "a")
    t0, step = time.time(), 0
    total = cfg.decoder_minutes * 60
    n_gen = int(round(cfg.decoder_clips * cfg.decoder_generated_share))
    while time.time() - t0 < total:
        gi = rng.choice(len(gen_idx), size=n_gen, replace=False)
        ri = rng.choice(n_train, size=cfg.decoder_clips - n_gen, replace=False)
        clip_idx = np.concatenate([gen_idx[gi], ri])
        noise = cfg.refiner_latent_noise * 3 * torch.rand(len(ri), 1, 1, 1, 1)
        z = torch.cat([z_gen[gi], z0[ri] + noise * torch.randn_like(z0[ri])])
        frames = torch.from_numpy(np.sort(rng.choice(cfg.num_frames, size=cfg.decoder_frames, replace=False)))
        order = np.argsort(clip_idx)  # mmap reads want sorted indices
        target = TinyWorldCodec.frames_to_video(np.asarray(clips[clip_idx[order]])[:, frames.numpy()])
        target = target[np.argsort(order)]
        with torch.no_grad():
            linear = codec.decode_linear(z)[:, :, frames]
        out = codec.refine(z, linear, frames)
        loss = _decoder_loss(out, target)
        lr = _timed_step(opt, params, loss, cfg.decoder_lr, step, (time.time() - t0) / total)
        step += 1
        if step % 20 == 0:
            log.write(json.dumps({"step": step, "loss": loss.item(), "lr": lr, "elapsed_s": round(time.time() - t0, 1)}) + "\n")
            log.flush()
        if step % 200 == 0:
            print(f"decoder step {step} loss {loss.item():.4f} {(time.time() - t0) / 60:.1f} min", flush=True)
    codec.eval()
    with torch.no_grad():  # held-out PSNR: render latents and the generator's latents of the same clips
        video = TinyWorldCodec.frames_to_video(np.asarray(clips[n_train : n_train + 64]))
        zv = z0[n_train : n_train + 64]
        psnr = lambda a: 10 * math.log10(4.0 / ((a.clamp(-1, 1) - video) ** 2).mean().item())  # noqa: E731
        msg = {"decoder_steps": step, "train_minutes": round((time.time() - t0) / 60, 1), "prep_s": round(prep_s, 1),
               "psnr_render_latents": {"linear": round(psnr(codec.decode_linear(zv)), 2),
                                       "previous_decoder": round(psnr(old.decode(zv).sample), 2),
                                       "new_decoder": round(psnr(codec.decode(zv).sample), 2)},
               "psnr_generated_latents": {"linear": round(psnr(codec.decode_linear(z_gen_val)), 2),
                                          "previous_decoder": round(psnr(old.decode(z_gen_val).sample), 2),
                                          "new_decoder": round(psnr(codec.decode(z_gen_val).sample), 2)}}
    print(json.dumps(msg), flush=True)
    log.write(json.dumps(msg) + "\n")
    log.close()
    codec.save_pretrained(run / "codec_upsample")
    (run / "codec_upsample" / "train_info.json").write_text(json.dumps({**msg, "config": asdict(cfg)}, indent=2) + "\n")
    return msg


def export(cfg: PretrainConfig, tag: str = "final") -> None:
    """assets/generator <- the tagged EMA checkpoint with the refined codec (if trained)."""
    from safetensors.torch import load_file

    from studio.codec import TinyWorldCodec
    from studio.pipelines import WorldPipeline

    data, run = cfg.path("data"), cfg.path("run")
    tokenizer = WorldPipeline.from_pretrained(run / f"pipeline-{tag}").tokenizer
    codec_dir = data / "codec_refined" if (data / "codec_refined").exists() else data / "codec"
    codec = TinyWorldCodec.from_pretrained(codec_dir)
    export_from_state(cfg, load_file(run / f"ema-{tag}.safetensors"), tokenizer, codec, cfg.path("out"))
    total = sum(f.stat().st_size for f in cfg.path("out").rglob("*") if f.is_file())
    print(f"exported {tag} with {codec_dir.name} -> {cfg.path('out')} ({total / 1e6:.1f} MB)")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["render", "codec", "train", "refiner", "decoder", "export", "all"])
    ap.add_argument("--tag", default="final", help="checkpoint tag for export")
    for f in fields(PretrainConfig):
        flag = f"--{f.name.replace('_', '-')}"
        if isinstance(f.default, bool):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default)
        else:
            ap.add_argument(flag, type=type(f.default), default=f.default)
    args = ap.parse_args(argv)
    cfg = PretrainConfig(**{f.name: getattr(args, f.name) for f in fields(PretrainConfig)})
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # A learned codec (--codec-from) comes with its own decoder: no refiner stage for it.
    stages = (["render", "codec", "train"] + ([] if cfg.codec_from else ["refiner"]) + ["export"]
              if args.stage == "all" else [args.stage])
    for stage in stages:
        if stage == "render":
            render(cfg)
        elif stage == "codec":
            fit_codec(cfg)
        elif stage == "train":
            train(cfg)
        elif stage == "refiner":
            train_refiner(cfg)
        elif stage == "decoder":
            train_decoder(cfg)
        elif stage == "export":
            export(cfg, args.tag)


if __name__ == "__main__":
    main()
