"""A generator with the TinyWorld generator's architecture and random weights, built in seconds.

The trainer's loop tests run on it at TINY size, and benchmarks/bench_train.py times the trainer on
it at the shipped size (the defaults) when asked to or when the shipped weights are missing. It is
studio.pipelines.WorldPipeline assembled by pretrain_generator from fresh components (word
tokenizer, UMT5 encoder, Wan transformer) and a TinyWorldCodec whose PCA bases are fitted on a few
TinyWorld renders, so latents decode to colours and layouts as the shipped codec's do (its learned
refiner starts at zero).
"""
from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from training.pretrain_generator import PretrainConfig, assemble_pipeline, build_components

if TYPE_CHECKING:
    from studio.pipelines import WorldPipeline

# Two layers of two 16-wide heads on a 4-channel latent, 5 frames of 32×32: a training epoch in a second.
TINY = dict(num_frames=5, height=32, width=32, z_dim=4, max_sequence_length=16, text_dim=32, text_layers=1,
            text_heads=4, text_ff=64, layers=2, heads=2, head_dim=16, ffn_dim=64, freq_dim=32)

FIT_PROMPTS = [
    "A red cube on a checkered floor.", "A blue sphere on a striped floor.", "A green cone on a tiled floor at sunset.",
    "A yellow cylinder and a white pyramid.", "Camera move left. A purple cube.", "Camera push in. An orange sphere.",
    "Camera orbit right. A gray cone and a pink cube.", "Camera pan left, then tilt up. A brown cylinder.",
]


def random_generator(seed: int = 0, **sizes) -> WorldPipeline:
    """sizes: PretrainConfig fields (TINY, or nothing for the shipped model's sizes)."""
    import numpy as np

    from studio.codec import TinyWorldCodec
    from studio.pipelines import normalize_prompt_words
    from studio.tinyworld import render_clip

    cfg = replace(PretrainConfig(seed=seed), **sizes)
    clips = np.stack([render_clip(p, num_frames=cfg.num_frames, height=cfg.height, width=cfg.width, seed=seed + i).frames
                      for i, p in enumerate(FIT_PROMPTS)])
    codec = TinyWorldCodec(z_dim=cfg.z_dim, scale_factor_spatial=cfg.codec_scale_spatial)
    codec.fit(TinyWorldCodec.frames_to_video(clips))
    vocabulary = sorted({w for p in FIT_PROMPTS for w in normalize_prompt_words(p)} | {"then", "in", "out", "right", "up", "down"})
    tokenizer, text_encoder, transformer = build_components(cfg, vocabulary)
    return assemble_pipeline(cfg, tokenizer, text_encoder, transformer, codec)
