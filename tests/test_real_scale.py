"""The real-model paths at the real models' width, reduced depth, random weights (studio/real_configs.py):
Wan2.1-T2V-1.3B's transformer (1536 wide, 12 heads × 128, FFN 8960; 2 of its 30 layers), its full VAE,
the UMT5-XXL encoder (4096 wide, 64 heads, FFN 10240; 2 of its 24 layers, vocabulary cut from 256,384
to 1,024 so the embedding is 8 MB instead of 2.1 GB), saved as a diffusers WanPipeline directory and
run through load_pipeline, generate and a LoRA made by the trainer; Depth-Anything-V2-Small (384 wide;
4 of its 12 layers) through analyze. Full depth and the timings: python -m benchmarks.bench_real_scale."""
import json

import numpy as np
import pytest
import torch

from studio import real_configs as rc
from studio.geometry import analyze
from studio.pipelines import clear_cache, load_pipeline
from studio.tinyworld import render_clip
from training.config import get_preset
from training.train import LORA_WEIGHT_NAME, add_lora, write_lora

PROMPT = "Camera move left. A cinematic view of a snow-covered castle on a ridge."
SMALLEST = dict(num_frames=5, height=16, width=16)  # 2 latent frames of 2×2: the VAE's and patch's minimum
DTYPES = {"text_encoder": torch.bfloat16, "default": torch.float32}  # as the bench: UMT5-XXL stays bf16


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("wan-real-width") / "pipeline"
    rc.save_random_wan_pipeline(out, transformer_layers=2, text_layers=2, text_vocab_size=1024)
    yield out
    clear_cache()


def test_published_sizes():
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import DepthAnythingForDepthEstimation, UMT5EncoderModel

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**rc.WAN21_T2V_1_3B_TRANSFORMER)
        vae = AutoencoderKLWan(**rc.WAN21_VAE)
        text = UMT5EncoderModel(rc.umt5_config())
        depth = DepthAnythingForDepthEstimation(rc.depth_anything_v2_small_config())
    # the published checkpoints' sizes: 5.68 GB fp32, 508 MB fp32, 11.4 GB bf16, 99 MB fp32
    assert rc.count_params(transformer) == pytest.approx(1.419e9, rel=1e-3)
    assert rc.count_params(vae) == pytest.approx(126.9e6, rel=1e-3)
    assert rc.count_params(text) == pytest.approx(5.681e9, rel=1e-3)
    assert rc.count_params(depth) == pytest.approx(24.8e6, rel=1e-2)
    assert depth.config.backbone_config.out_indices == [9, 10, 11, 12]


def test_saved_directory_is_a_wan_pipeline_at_full_width(wan_dir):
    index = json.loads((wan_dir / "model_index.json").read_text())
    assert index["_class_name"] == "WanPipeline" and index["transformer_2"] == [None, None]
    transformer = json.loads((wan_dir / "transformer" / "config.json").read_text())
    assert (transformer["num_attention_heads"], transformer["attention_head_dim"], transformer["ffn_dim"],
            transformer["text_dim"], transformer["num_layers"]) == (12, 128, 8960, 4096, 2)
    text = json.loads((wan_dir / "text_encoder" / "config.json").read_text())
    assert (text["d_model"], text["d_ff"], text["num_heads"], text["d_kv"], text["num_layers"]) == (4096, 10240, 64, 64, 2)
    assert text["dtype"] == "bfloat16"
    assert json.loads((wan_dir / "scheduler" / "scheduler_config.json").read_text())["flow_shift"] == 3.0
    assert not list(wan_dir.rglob("*.bin")) and len(list(wan_dir.rglob("*.safetensors"))) == 3


def test_load_generate_and_toggle_a_trainer_lora(wan_dir, tmp_path):
    from diffusers import WanTransformer3DModel

    base = load_pipeline(str(wan_dir), device="cpu", dtype=DTYPES)
    assert base.text_encoder.dtype == torch.bfloat16 and base.transformer.dtype == torch.float32
    assert base.max_sequence_length == 512

    # A LoRA made the trainer's way (world-r1-small: r 32, alpha 64, to_q/to_k/to_v/to_out.0), saved by write_lora.
    cfg = get_preset("world-r1-small")
    transformer = WanTransformer3DModel.from_pretrained(wan_dir / "transformer")
    params = add_lora(transformer, cfg)
    assert sum(p.numel() for p in params) == 2 * 8 * 32 * (1536 + 1536)  # 2 layers × 8 attention projections
    with torch.no_grad():  # peft starts B at zero (a no-op adapter); make it change the model
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0.0, 0.02)
    write_lora(tmp_path, transformer, ema=None)
    del transformer

    tuned = load_pipeline(str(wan_dir), lora=str(tmp_path / LORA_WEIGHT_NAME), device="cpu", dtype=DTYPES)
    assert tuned.transformer is base.transformer  # one copy of the base weights

    kwargs = dict(seed=3, steps=2, guidance=5.0, camera_init=True, **SMALLEST)
    baseline = base.generate(PROMPT, **kwargs)
    assert baseline.frames.shape == (5, 16, 16, 3) and baseline.frames.dtype == np.uint8
    assert baseline.moves == ["move_left"] and baseline.frames.std() > 0
    tuned_clip = tuned.generate(PROMPT, **kwargs)
    assert not np.array_equal(tuned_clip.frames, baseline.frames)
    np.testing.assert_array_equal(base.generate(PROMPT, **kwargs).frames, baseline.frames)  # adapter off again


def test_depth_anything_v2_small_at_full_width_through_analyze(tmp_path):
    info = rc.save_random_depth_anything(tmp_path / "da-v2-small", num_layers=4)
    assert info["params"] > 8e6
    prompt = "Camera move left. A red cube and a blue sphere on a checkered floor."
    clip = render_clip(prompt, num_frames=9, height=64, width=64, seed=0)
    result = analyze(clip.frames, prompt, estimator="depth-anything",
                     estimator_kwargs={"model": str(tmp_path / "da-v2-small"), "input_size": 126})
    assert result.depth.shape == (9, 64, 64) and (result.depth > 0).any()
    assert np.isfinite(result.metrics["depth_consistency_l1"])
