"""The published architectures of the real models the studio loads, to build them with random weights.

No weights can be downloaded here, so the real-size paths (``load_pipeline`` on a Wan checkpoint, LoRA,
Flow-GRPO, the Depth Anything estimator) are proven on models of the real shape with random weights.
Values are those of the public configs:

- ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``: ``transformer/config.json`` (30 layers, 12 heads × 128 = 1536
  wide, FFN 8960, text_dim 4096), ``vae`` (diffusers' ``AutoencoderKLWan`` defaults are Wan2.1's VAE),
  ``scheduler`` (UniPC on flow sigmas, shift 3.0 for 480p), 512 text tokens.
- ``google/umt5-xxl`` encoder: d_model 4096, d_ff 10240, 24 layers, 64 heads × d_kv 64, vocab 256,384,
  gated-gelu. Its SentencePiece tokenizer is not available offline: a word-level tokenizer with T5's
  special ids stands in (the model's vocabulary size is kept).
- ``depth-anything/Depth-Anything-V2-Small-hf``: a DINOv2-small backbone (384 wide, 12 layers, 6 heads,
  patch 14, features of layers 9–12) and a DPT head (neck 48/96/192/384, fusion 64, head 32).

``num_layers`` arguments build the same width at reduced depth (the tests), everything else unchanged.
"""
from __future__ import annotations

import gc
import time
from pathlib import Path

from studio.pipelines import build_word_tokenizer, normalize_prompt_words

ROOT = Path(__file__).resolve().parents[1]

WAN21_T2V_1_3B_TRANSFORMER = dict(
    patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
    text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
    eps=1e-6, image_dim=None, added_kv_proj_dim=None, rope_max_seq_len=1024,
)
# Spelled out although they are AutoencoderKLWan's defaults, so a change of defaults cannot pass unseen;
# latents_mean / latents_std stay the defaults (Wan2.1's per-channel statistics, 16 values each).
WAN21_VAE = dict(
    base_dim=96, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
    temperal_downsample=[False, True, True], dropout=0.0,
)
WAN21_SCHEDULER = dict(num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
WAN21_MAX_SEQUENCE_LENGTH = 512

UMT5_XXL_ENCODER = dict(
    vocab_size=256384, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
    relative_attention_num_buckets=32, relative_attention_max_distance=128, dropout_rate=0.1,
    layer_norm_epsilon=1e-6, initializer_factor=1.0, feed_forward_proj="gated-gelu",
    pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
)

DINOV2_SMALL = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, mlp_ratio=4, hidden_act="gelu",
    layer_norm_eps=1e-6, image_size=518, patch_size=14, qkv_bias=True, layerscale_value=1.0,
    use_swiglu_ffn=False, reshape_hidden_states=False, apply_layernorm=True,
)
DEPTH_ANYTHING_V2_SMALL = dict(
    patch_size=14, reassemble_hidden_size=384, reassemble_factors=[4, 2, 1, 0.5], neck_hidden_sizes=[48, 96, 192, 384],
    fusion_hidden_size=64, head_in_index=-1, head_hidden_size=32, depth_estimation_type="relative",
)


def count_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


# ------------------------------------------------------------------------------------ Wan2.1
def wan_transformer(num_layers: int | None = None, seed: int = 0):
    """WanTransformer3DModel of Wan2.1-T2V-1.3B (float32, random; 1.42 B parameters at 30 layers)."""
    import torch
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    cfg = dict(WAN21_T2V_1_3B_TRANSFORMER, num_layers=num_layers or WAN21_T2V_1_3B_TRANSFORMER["num_layers"])
    return WanTransformer3DModel(**cfg).eval()


def wan_vae(seed: int = 0):
    """AutoencoderKLWan of Wan2.1 (float32, random)."""
    import torch
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(**WAN21_VAE).eval()


def umt5_config(num_layers: int | None = None, vocab_size: int | None = None):
    from transformers import UMT5Config

    return UMT5Config(**dict(UMT5_XXL_ENCODER, num_layers=num_layers or UMT5_XXL_ENCODER["num_layers"],
                             vocab_size=vocab_size or UMT5_XXL_ENCODER["vocab_size"]))


def _random_transformers_model(model_cls, config, dtype, seed: int):
    """A transformers model with random weights made directly in ``dtype``: built on the meta device,
    given storage, then initialised by the model's own ``_init_weights``. Constructing it normally
    would pass through float32 first (22.7 GB for the UMT5-XXL encoder)."""
    import torch

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device("meta"):
            model = model_cls(config)
    finally:
        torch.set_default_dtype(previous)
    model.to_empty(device="cpu")
    model.tie_weights()  # to_empty gives the shared embedding and encoder.embed_tokens separate tensors
    torch.manual_seed(seed)
    model.initialize_weights()
    return model.eval()


def umt5_encoder(num_layers: int | None = None, vocab_size: int | None = None, dtype="bfloat16", seed: int = 0):
    """UMT5EncoderModel of google/umt5-xxl (random; 5.68 B parameters: 11.4 GB in bfloat16)."""
    import torch
    from transformers import UMT5EncoderModel

    dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return _random_transformers_model(UMT5EncoderModel, umt5_config(num_layers, vocab_size), dtype, seed)


def wan_scheduler():
    from diffusers import UniPCMultistepScheduler

    return UniPCMultistepScheduler(**WAN21_SCHEDULER)


def open_world_words() -> list[str]:
    """The words of the shipped open-world prompts (assets/prompts/open_world.jsonl), in first-seen order."""
    import json

    words: dict[str, None] = {}
    for line in (ROOT / "assets" / "prompts" / "open_world.jsonl").read_text(encoding="utf-8").splitlines():
        if line.strip():
            words.update(dict.fromkeys(normalize_prompt_words(json.loads(line)["prompt"])))
    return list(words)


def save_random_wan_pipeline(
    out_dir: str | Path,
    *,
    transformer_layers: int | None = None,
    text_layers: int | None = None,
    text_vocab_size: int | None = None,
    text_dtype: str = "bfloat16",
    words: list[str] | None = None,
    seed: int = 0,
    max_shard_size: str = "2GB",
) -> dict[str, dict]:
    """Write a diffusers ``WanPipeline`` directory (safetensors) of Wan2.1-T2V-1.3B with random weights.

    The directory is what ``WanPipeline.save_pretrained`` writes (each component's ``save_pretrained``,
    then ``model_index.json``), but the components are built, saved and freed one at a time, so the
    peak memory is that of the largest one (the text encoder), not of all three. The text encoder is
    stored in ``text_dtype``; the transformer and VAE in float32. Returns, per component, its
    parameter count, build and save seconds and bytes on disk.
    """
    import torch
    from diffusers import AutoencoderKLWan, WanPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_word_tokenizer(words if words is not None else open_world_words(), WAN21_MAX_SEQUENCE_LENGTH)
    scheduler = wan_scheduler()
    text_cfg = umt5_config(text_layers, text_vocab_size)
    transformer_cfg = dict(WAN21_T2V_1_3B_TRANSFORMER, num_layers=transformer_layers or WAN21_T2V_1_3B_TRANSFORMER["num_layers"])

    tokenizer.save_pretrained(out / "tokenizer")
    scheduler.save_pretrained(out / "scheduler")

    builders = {
        "transformer": lambda: wan_transformer(transformer_layers, seed),
        "vae": lambda: wan_vae(seed + 1),
        "text_encoder": lambda: umt5_encoder(text_layers, text_vocab_size, text_dtype, seed + 2),
    }
    info = {}
    for name, build in builders.items():
        t0 = time.perf_counter()
        model = build()
        t1 = time.perf_counter()
        model.save_pretrained(out / name, max_shard_size=max_shard_size)
        t2 = time.perf_counter()
        info[name] = dict(params=count_params(model), build_s=t1 - t0, save_s=t2 - t1,
                          bytes=sum(f.stat().st_size for f in (out / name).glob("*.safetensors")))
        del model
        gc.collect()
    # Last, as save_pretrained does (a directory without it is unfinished): model_index.json, from
    # weightless stand-ins of the components, is the same file WanPipeline.save_pretrained writes.
    with torch.device("meta"):
        stand_ins = dict(transformer=WanTransformer3DModel(**transformer_cfg), vae=AutoencoderKLWan(**WAN21_VAE),
                         text_encoder=UMT5EncoderModel(text_cfg))
    WanPipeline(tokenizer=tokenizer, scheduler=scheduler, **stand_ins).save_config(out)
    return info


# ------------------------------------------------------------------------------------ Depth Anything V2
def depth_anything_v2_small_config(num_layers: int | None = None):
    """DepthAnythingConfig of Depth-Anything-V2-Small; reduced depth keeps the DPT head on the last four layers."""
    from transformers import DepthAnythingConfig, Dinov2Config

    n = num_layers or DINOV2_SMALL["num_hidden_layers"]
    if n < 4:
        raise ValueError(f"the DPT head reads four backbone layers; num_layers must be ≥ 4, got {n}")
    backbone = Dinov2Config(**dict(DINOV2_SMALL, num_hidden_layers=n), out_indices=list(range(n - 3, n + 1)))
    return DepthAnythingConfig(backbone_config=backbone, **DEPTH_ANYTHING_V2_SMALL)


def save_random_depth_anything(out_dir: str | Path, num_layers: int | None = None, seed: int = 0) -> dict:
    """Write a random Depth-Anything-V2-Small (``save_pretrained``, safetensors) for the "depth-anything"
    estimator; returns its parameter count and bytes on disk."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    model = DepthAnythingForDepthEstimation(depth_anything_v2_small_config(num_layers)).eval()
    with torch.no_grad():  # a random head ends in ReLU at ~0: lift it so disparities are positive and vary
        model.head.conv3.bias.fill_(1.0)
    out = Path(out_dir)
    model.save_pretrained(out)
    return dict(params=count_params(model), bytes=sum(f.stat().st_size for f in out.glob("*.safetensors")))
