"""The tiny random Wan checkpoint the tests build instead of downloading one: a word tokenizer,
a 1-layer UMT5 encoder, a 2-layer Wan transformer and a 4-channel Wan VAE (seconds on a CPU)."""
from __future__ import annotations

import torch

WORDS = "a red blue cube sphere on checkered floor camera move left right push in pull out then orbit".split()


def tiny_wan_components(seed: int = 0, words: list[str] | None = None) -> dict:
    """tokenizer, text_encoder, transformer and vae, seeded; the caller picks the scheduler."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    from studio.pipelines import build_word_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_word_tokenizer(words or WORDS, 16)
    text_encoder = UMT5EncoderModel(UMT5Config(
        vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=4,
        relative_attention_num_buckets=8, dropout_rate=0.0, feed_forward_proj="gated-gelu",
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )).eval()
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=16, in_channels=4, out_channels=4,
        text_dim=32, freq_dim=32, ffn_dim=64, num_layers=2, rope_max_seq_len=32,
    ).eval()
    vae = AutoencoderKLWan(
        base_dim=8, z_dim=4, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True],
        latents_mean=[0.0] * 4, latents_std=[1.0] * 4,
    ).eval()
    return dict(tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae)
