"""studio.pipelines: the Wan path on a tiny random Wan checkpoint built here, LoRA on/off, input
checks, and the shipped TinyWorld generator (skipped until assets/generator/ exists)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from studio import pipelines
from studio.pipelines import Clip, WorldPipeline, load_pipeline
from tiny_wan import tiny_wan_components

PROMPT = "Camera move left. A red cube on a checkered floor."
STILL = "A red cube on a checkered floor."
SMALL = dict(num_frames=9, height=32, width=32, steps=3)


def _tiny_components(seed: int = 0):
    from diffusers import UniPCMultistepScheduler

    # What Wan checkpoints ship: UniPC with flow sigmas and a flow shift.
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return dict(**tiny_wan_components(seed), scheduler=scheduler)


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory) -> Path:
    """A tiny checkpoint saved by diffusers' own WanPipeline, i.e. laid out like a hub Wan repo."""
    from diffusers import WanPipeline

    out = tmp_path_factory.mktemp("tiny-wan")
    WanPipeline(**_tiny_components()).save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory, wan_dir) -> Path:
    """A LoRA on the tiny transformer, with non-zero B so it changes the output."""
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = WorldPipeline.from_pretrained(wan_dir)
    transformer = pipe.transformer
    transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    out = tmp_path_factory.mktemp("tiny-lora")
    WorldPipeline.save_lora_weights(out, transformer_lora_layers=get_peft_model_state_dict(transformer))
    return out


@pytest.fixture(autouse=True)
def _fresh_cache():
    pipelines.clear_cache()
    yield
    pipelines.clear_cache()


# ------------------------------------------------------------------------------------ Wan path
def test_wan_checkpoint_generates_a_clip(wan_dir):
    pipe = load_pipeline(str(wan_dir))
    clip = pipe.generate(PROMPT, seed=3, **SMALL)
    assert isinstance(clip, Clip)
    assert clip.frames.shape == (9, 32, 32, 3) and clip.frames.dtype == np.uint8
    assert clip.seed == 3 and clip.moves == ["move_left"]
    assert clip.trajectory.shape == (9, 4, 4)
    assert clip.trajectory[-1, 0, 3] < 0  # moves left: -x
    assert {"encode_s", "init_s", "denoise_s", "decode_s", "total_s"} <= set(clip.timings)


def test_same_seed_same_clip_and_different_seed_differs(wan_dir):
    pipe = load_pipeline(str(wan_dir))
    a = pipe.generate(PROMPT, seed=1, **SMALL).frames
    b = pipe.generate(PROMPT, seed=1, **SMALL).frames
    c = pipe.generate(PROMPT, seed=2, **SMALL).frames
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_pipeline_is_cached(wan_dir):
    assert load_pipeline(str(wan_dir)) is load_pipeline(str(wan_dir))
    assert load_pipeline(str(wan_dir), cache=False) is not load_pipeline(str(wan_dir))


def test_wan_layout_round_trips_through_the_world_pipeline(wan_dir, tmp_path):
    pipe = load_pipeline(str(wan_dir))
    assert pipe.flow_shift == 3.0  # read from the checkpoint's UniPC scheduler
    pipe.save_pretrained(tmp_path / "copy")
    again = WorldPipeline.from_pretrained(tmp_path / "copy")
    for k, v in pipe.transformer.state_dict().items():
        assert torch.equal(v, again.transformer.state_dict()[k])


def test_camera_init_changes_camera_prompts_only(wan_dir):
    pipe = load_pipeline(str(wan_dir))
    on = pipe.generate(PROMPT, seed=0, camera_init=True, **SMALL).frames
    off = pipe.generate(PROMPT, seed=0, camera_init=False, **SMALL).frames
    assert not np.array_equal(on, off)
    still_on = pipe.generate(STILL, seed=0, camera_init=True, **SMALL).frames
    still_off = pipe.generate(STILL, seed=0, camera_init=False, **SMALL).frames
    assert np.array_equal(still_on, still_off)


def test_trainer_contract(wan_dir):
    pipe = load_pipeline(str(wan_dir))
    prompts, seeds = [PROMPT, STILL], [5, 6]
    cond, uncond = pipe.encode_prompt(prompts, 5.0)
    assert cond.shape[0] == 2 and uncond.shape == cond.shape
    assert pipe.encode_prompt(prompts, 1.0)[1] is None
    lat = pipe.prepare_latents(prompts, seeds, 9, 32, 32, camera_init=True)
    assert lat.shape == (2, 4, 3, 4, 4)
    # Sample i's start depends on its seed only, and camera init does not change the start.
    alone = pipe.prepare_latents([STILL], [6], 9, 32, 32, camera_init=False)
    assert torch.equal(lat[1:], alone)
    delta = pipe.camera_delta(lat, prompts, seeds, 9)
    assert delta.shape == lat.shape
    assert delta[0].abs().max() > 0 and torch.count_nonzero(delta[1]) == 0
    # The target paths, computed once by the caller, give the same delta as the prompts.
    paths = pipe.camera_paths(prompts, 9)
    assert paths[0].shape == (9, 4, 4) and paths[1] is None
    assert torch.equal(pipe.camera_delta(lat, prompts, seeds, 9, paths=paths), delta)
    assert torch.equal(pipe.inject(lat, delta, 20), lat)
    sig = pipe.sigmas(10)
    assert sig.shape == (11,) and sig[0] == 1 and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    with torch.no_grad():
        v5 = pipe.predict_velocity(lat, sig[2], cond, uncond, 5.0)
        v_c = pipe.predict_velocity(lat, sig[2], cond, None, 1.0)
        v_u = pipe.predict_velocity(lat, sig[2], uncond, None, 1.0)
    torch.testing.assert_close(v5, v_u + 5.0 * (v_c - v_u), atol=1e-4, rtol=1e-4)
    frames = pipe.decode_latents(lat)
    assert frames.shape == (2, 9, 32, 32, 3) and frames.dtype == np.uint8


def test_mp4_export(wan_dir, tmp_path):
    import imageio.v3 as iio

    clip = load_pipeline(str(wan_dir)).generate(PROMPT, seed=0, num_frames=9, height=32, width=32, steps=2)
    path = clip.to_mp4(tmp_path / "clip.mp4")
    assert path.stat().st_size > 0
    frames = iio.imread(path, plugin="pyav")
    assert frames.shape[0] == 9 and frames.shape[-1] == 3


# ------------------------------------------------------------------------------------ LoRA
def test_lora_variant_shares_base_weights_and_switches_adapter(wan_dir, lora_dir):
    base = load_pipeline(str(wan_dir))
    before = base.generate(PROMPT, seed=4, **SMALL).frames
    tuned = load_pipeline(str(wan_dir), lora=str(lora_dir))
    assert tuned.transformer is base.transformer  # one copy of the base weights
    assert tuned.adapter is not None and base.adapter is None
    tuned_frames = tuned.generate(PROMPT, seed=4, **SMALL).frames
    assert not np.array_equal(tuned_frames, before)
    # Adapter off again: the baseline is exactly what it was.
    assert np.array_equal(base.generate(PROMPT, seed=4, **SMALL).frames, before)
    assert np.array_equal(tuned.generate(PROMPT, seed=4, **SMALL).frames, tuned_frames)
    # Baseline and tuned start from the same noise.
    assert torch.equal(base.prepare_latents([PROMPT], [4], 9, 32, 32), tuned.prepare_latents([PROMPT], [4], 9, 32, 32))
    # Loading the same LoRA again reuses the adapter.
    assert load_pipeline(str(wan_dir), lora=str(lora_dir)).adapter == tuned.adapter


def test_lora_file_path_also_works(wan_dir, lora_dir):
    tuned = load_pipeline(str(wan_dir), lora=str(lora_dir / "pytorch_lora_weights.safetensors"))
    assert tuned.adapter is not None


def test_corrupt_lora_is_a_value_error(wan_dir, tmp_path):
    bad = tmp_path / "pytorch_lora_weights.safetensors"
    bad.write_bytes(b"\x00\x01 this is not safetensors")
    with pytest.raises(ValueError, match="corrupt"):
        load_pipeline(str(wan_dir), lora=str(tmp_path))


def test_lora_for_another_model_is_a_value_error(wan_dir, tmp_path):
    from safetensors.torch import save_file

    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 999),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(999, 4)},
              str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ValueError):
        load_pipeline(str(wan_dir), lora=str(tmp_path))
    # The failed load left the base usable.
    assert load_pipeline(str(wan_dir)).generate(STILL, seed=0, **SMALL).frames.shape == (9, 32, 32, 3)


def test_missing_lora_is_file_not_found(wan_dir, tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pipeline(str(wan_dir), lora=str(tmp_path / "nope" / "lora.safetensors"))
    with pytest.raises(FileNotFoundError):
        load_pipeline(str(wan_dir), lora=str(tmp_path))  # an empty directory


# ------------------------------------------------------------------------------------ inputs
@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(prompt=""), "empty"),
        (dict(prompt="   "), "empty"),
        (dict(prompt="a red cube " * 400), "shorten"),
        (dict(prompt="red " * 40), "tokens"),
        (dict(num_frames=10), "4k\\+1"),
        (dict(num_frames=0), "num_frames"),
        (dict(height=40), "multiple of 16"),
        (dict(width=8), "width"),
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(guidance=-1.0), "guidance"),
        (dict(guidance=100.0), "guidance"),
        (dict(seed=-1), "seed"),
        (dict(seed="7"), "seed"),
    ],
)
def test_bad_inputs_fail_before_any_work(wan_dir, kwargs, match):
    pipe = load_pipeline(str(wan_dir))
    args = dict(prompt=PROMPT, seed=0, **SMALL)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        pipe.generate(**args)


def test_unknown_model_is_a_value_error():
    with pytest.raises(ValueError, match="unknown model"):
        load_pipeline("definitely not a model")
    with pytest.raises(ValueError):
        load_pipeline("")


def test_missing_local_dir_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_pipeline(str(tmp_path / "missing" / "model"))


def test_dir_without_model_index_is_a_value_error(tmp_path):
    with pytest.raises(ValueError, match="model_index.json"):
        load_pipeline(str(tmp_path))


def test_non_wan_checkpoint_is_a_value_error(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    with pytest.raises(ValueError, match="Wan"):
        load_pipeline(str(tmp_path))


@pytest.mark.parametrize("model", ["Wan2.1-T2V-1.3B", "Wan2.1-T2V-14B", "someone/not-cached-wan-model"])
def test_offline_uncached_hub_id_fails_with_download_instructions(model, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hf download"):
        load_pipeline(model)


def test_presets_hold_world_r1_settings():
    for name in ("Wan2.1-T2V-1.3B", "Wan2.1-T2V-14B"):
        p = pipelines.PRESETS[name]
        assert (p.height, p.width, p.num_frames, p.steps, p.guidance) == (480, 832, 81, 50, 5.0)
    assert pipelines.PRESETS["Wan2.1-T2V-14B"].warp_strength == 0.40


def test_bad_memory_options_are_value_errors(wan_dir):
    with pytest.raises(ValueError, match="cpu_offload"):
        load_pipeline(str(wan_dir), cpu_offload="everything")
    with pytest.raises(ValueError, match="dtype"):
        load_pipeline(str(wan_dir), dtype="float8")


# ------------------------------------------------------------------------------------ TinyWorld layout
def test_tinyworld_codec_pipeline_round_trips(tmp_path):
    """The TinyWorld layout (custom codec as the VAE) saves and loads through the same class."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from studio.codec import TinyWorldCodec

    comps = _tiny_components()
    codec = TinyWorldCodec(z_dim=4, refiner_channels=8, refiner_blocks=1)
    video = torch.rand(3, 3, 9, 32, 32) * 2 - 1
    codec.fit(video)
    with torch.no_grad():
        codec.refiner_out.weight.normal_(0, 0.01)  # a non-trivial refiner
    comps.update(vae=codec.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe = WorldPipeline(**comps, max_sequence_length=16, default_height=32, default_width=32,
                         default_num_frames=9, default_steps=3, warp_box=3)
    pipe.save_pretrained(tmp_path / "tw")
    loaded = load_pipeline(str(tmp_path / "tw"))
    assert isinstance(loaded.vae, TinyWorldCodec)
    a = pipe.generate(PROMPT, seed=2)
    b = loaded.generate(PROMPT, seed=2)
    assert a.frames.shape == (9, 32, 32, 3)
    assert np.array_equal(a.frames, b.frames)


def test_codec_linear_round_trip_is_exact_on_its_own_span():
    from studio.codec import TinyWorldCodec

    codec = TinyWorldCodec(z_dim=4, refiner_channels=8, refiner_blocks=1)
    video = torch.rand(8, 3, 5, 16, 16) * 2 - 1
    codec.fit(video)
    z = codec.encode(video)
    assert z.shape == (8, 4, 2, 2, 2)
    torch.testing.assert_close(codec.encode(codec.decode_linear(z)), z, atol=1e-3, rtol=1e-3)
    # The refiner starts as the identity on the linear reconstruction.
    torch.testing.assert_close(codec.decode(z).sample, codec.decode_linear(z))


@pytest.mark.parametrize("scale", [8, 4])  # the 8x8 and the 16x16 latent grid of a 64-px clip
def test_upsample_decoder_starts_linear_decodes_frame_subsets_and_round_trips(tmp_path, scale):
    """The VAE-style decoder: identity residual at init, per-frame decoding, save/load exact."""
    from studio.codec import TinyWorldCodec

    codec = TinyWorldCodec(z_dim=4, decoder_type="upsample", decoder_channels=(16, 12, 8, 6), scale_factor_spatial=scale)
    video = torch.rand(6, 3, 9, 32, 32) * 2 - 1
    codec.fit(video)
    z = codec.encode(video[:2])
    torch.testing.assert_close(codec.decode(z).sample, codec.decode_linear(z))
    with torch.no_grad():
        codec.decoder.out.weight.normal_(0, 0.05)  # a non-trivial decoder
    full = codec.decode(z).sample
    assert full.shape == (2, 3, 9, 32, 32)
    assert not torch.allclose(full, codec.decode_linear(z))
    frames = torch.tensor([0, 3, 8])
    part = codec.refine(z, codec.decode_linear(z)[:, :, frames], frames)
    torch.testing.assert_close(part, full[:, :, frames], atol=1e-5, rtol=1e-5)
    codec.save_pretrained(tmp_path / "vae")
    loaded = TinyWorldCodec.from_pretrained(tmp_path / "vae")
    assert loaded.config.decoder_type == "upsample"
    torch.testing.assert_close(loaded.decode(z).sample, full)
    with pytest.raises(ValueError, match="decoder_type"):
        TinyWorldCodec(decoder_type="gan")


def test_codec_round_trip_of_the_eval_gives_uint8_clips_close_to_the_input():
    """eval_generator's codec ceiling: renders through the pipeline's own codec and back."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from studio.codec import TinyWorldCodec
    from training.eval_generator import codec_round_trip

    comps = _tiny_components()
    codec = TinyWorldCodec(z_dim=4, refiner_channels=8, refiner_blocks=1)
    rng = np.random.default_rng(0)
    patch = rng.integers(0, 256, (3, 1, 8, 8, 3), dtype=np.uint8)
    clips = np.tile(patch, (1, 5, 2, 2, 1))  # static clips, one 8×8 patch repeated: 3 patch vectors
    codec.fit(TinyWorldCodec.frames_to_video(clips))
    comps.update(vae=codec.eval(), scheduler=FlowMatchEulerDiscreteScheduler(shift=1.0))
    pipe = WorldPipeline(**comps, max_sequence_length=16, default_height=16, default_width=16,
                         default_num_frames=5, default_steps=3, warp_box=3)
    out = codec_round_trip(pipe, clips, batch=2)
    assert out.shape == clips.shape and out.dtype == np.uint8
    # Three patch vectors span at most 3 of the 4 PCA directions per stream: the round trip is near exact.
    assert np.abs(out.astype(int) - clips.astype(int)).max() <= 2


def test_generated_latents_keep_the_render_layout_and_are_seeded():
    """The decoder's generator-made training latents: same shape, reproducible, near their render."""
    from training.pretrain_generator import generated_latents

    comps = _tiny_components()
    pipe = WorldPipeline(**comps, max_sequence_length=16, default_height=32, default_width=32,
                         default_num_frames=9, default_steps=3, warp_box=3)
    z0 = torch.randn(3, *pipe.latent_shape(9, 32, 32))
    a = generated_latents(pipe, z0, ["a red cube"] * 3, 10, np.random.default_rng(0), batch=2)
    b = generated_latents(pipe, z0, ["a red cube"] * 3, 10, np.random.default_rng(0), batch=2)
    assert a.shape == z0.shape and torch.isfinite(a).all()
    torch.testing.assert_close(a, b)
    # Started at sigma <= 0.7, the result stays correlated with its own render latent.
    corr = [float(np.corrcoef(a[i].flatten(), z0[i].flatten())[0, 1]) for i in range(3)]
    assert min(corr) > 0.2, corr


def test_a_16x16_latent_grid_with_4x4_transformer_patches_runs_end_to_end(tmp_path):
    """codec_scale_spatial=4 + patch=4: the finer grid keeps the token count of the shipped model
    (grid/patch = 4 per side) and flows through codec fit, the transformer and the pipeline."""
    from training.pretrain_generator import PretrainConfig, assemble_pipeline, build_components, fit_codec

    rng = np.random.default_rng(0)
    clips = rng.integers(0, 256, (6, 17, 64, 64, 3)).astype(np.uint8)
    (tmp_path / "data").mkdir()
    np.save(tmp_path / "data" / "clips.npy", clips)
    cfg = PretrainConfig(data_dir=str(tmp_path / "data"), run_dir=str(tmp_path / "run"), z_dim=8, codec_scale_spatial=4,
                         patch=4, layers=1, heads=2, head_dim=16, ffn_dim=32, text_dim=16, text_heads=2, text_ff=32,
                         text_layers=1, max_sequence_length=16, threads=1)
    fit_codec(cfg)
    latents = np.load(tmp_path / "data" / "latents.npy")
    assert latents.shape == (6, 8, 5, 16, 16)
    from studio.codec import TinyWorldCodec

    codec = TinyWorldCodec.from_pretrained(tmp_path / "data" / "codec")
    tokenizer, text_encoder, transformer = build_components(cfg, ["a", "red", "cube", "camera", "orbit", "left"])
    assert tuple(transformer.config.patch_size) == (1, 4, 4)
    pipe = assemble_pipeline(cfg, tokenizer, text_encoder, transformer, codec)
    clip = pipe.generate("Camera orbit left. A red cube.", seed=0, num_frames=17, height=64, width=64, steps=2)
    assert clip.frames.shape == (17, 64, 64, 3) and clip.frames.dtype == np.uint8
    again = pipe.generate("Camera orbit left. A red cube.", seed=0, num_frames=17, height=64, width=64, steps=2)
    assert np.array_equal(clip.frames, again.frames)


# ------------------------------------------------------------------------------------ shipped model
TINYWORLD = Path(__file__).resolve().parents[1] / "assets" / "generator" / "model_index.json"
needs_tinyworld = pytest.mark.skipif(not TINYWORLD.exists(), reason="assets/generator/ not trained yet")


@needs_tinyworld
def test_tinyworld_generates_deterministic_clips():
    pipe = load_pipeline("tinyworld")
    assert pipe is load_pipeline("tinyworld")
    a = pipe.generate("Camera orbit left. A red cube on a checkered floor.", seed=11)
    b = pipe.generate("Camera orbit left. A red cube on a checkered floor.", seed=11)
    assert a.frames.shape == (17, 64, 64, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert a.moves == ["orbit_left"] and a.fps == pipe.config.fps
    c = pipe.generate("Camera orbit left. A red cube on a checkered floor.", seed=12)
    assert not np.array_equal(a.frames, c.frames)


@needs_tinyworld
def test_tinyworld_weights_fit_the_budget():
    total = sum(f.stat().st_size for f in TINYWORLD.parent.rglob("*") if f.is_file())
    assert total <= 60e6
    assert not list(TINYWORLD.parent.rglob("*.bin")) and not list(TINYWORLD.parent.rglob("*.pt"))


SHIPPED_LORAS = sorted(p for p in (TINYWORLD.parents[1] / "lora").glob("*") if p.is_dir())


@needs_tinyworld
@pytest.mark.parametrize("lora_dir", SHIPPED_LORAS, ids=[p.name for p in SHIPPED_LORAS])
def test_every_shipped_lora_loads_as_the_tuned_variant_and_records_its_run(lora_dir):
    """assets/lora/*: diffusers LoRA safetensors on the shared base, with the run's config and the
    validation-chosen checkpoint's own training time inside the 90-minute budget."""
    import json

    prompt = "Camera push in. A blue sphere on a checkered floor."
    base = load_pipeline("tinyworld").generate(prompt, seed=3, steps=4)
    tuned = load_pipeline("tinyworld", lora=str(lora_dir)).generate(prompt, seed=3, steps=4)
    assert tuned.frames.shape == base.frames.shape
    assert not np.array_equal(tuned.frames, base.frames)             # the adapter is on
    again = load_pipeline("tinyworld").generate(prompt, seed=3, steps=4)
    assert np.array_equal(again.frames, base.frames)                 # and off again for the baseline
    best = json.loads((lora_dir / "best.json").read_text())
    config = json.loads((lora_dir / "config.json").read_text())
    assert 0 < best["elapsed_seconds"] <= 90 * 60 and best["step"] > 0
    assert config["preset"] == "tinyworld-cpu" and config["max_minutes"] <= 90


def test_the_generator_train_stage_runs_from_the_command_line_and_says_where(tmp_path, capsys):
    """pretrain_generator render -> codec -> train on a tiny model: EMA checkpoint, loss log and an
    exported pipeline; --device auto picks the CPU here, and asking for CUDA without one is refused."""
    from training.pretrain_generator import main

    common = ["--data-dir", str(tmp_path / "data"), "--run-dir", str(tmp_path / "run"), "--num-clips", "4",
              "--render-workers", "1", "--codec-fit-clips", "4", "--z-dim", "4", "--layers", "1", "--heads", "2",
              "--head-dim", "16", "--ffn-dim", "32", "--text-dim", "16", "--text-heads", "2", "--text-ff", "32",
              "--text-layers", "1", "--max-sequence-length", "16", "--threads", "1", "--batch-size", "2"]
    main(["render", *common])
    main(["codec", *common])
    main(["train", *common, "--max-steps", "3", "--log-every", "1", "--device", "auto", "--bf16"])
    out = capsys.readouterr().out
    assert "training on cpu" in out and "bf16" not in out.split("training on cpu")[1].splitlines()[0]
    log = [json.loads(x) for x in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in log)
    assert (tmp_path / "run" / "ema-final.safetensors").is_file()
    assert (tmp_path / "run" / "pipeline-final" / "model_index.json").is_file()
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit, match="no CUDA device"):
            main(["train", *common, "--max-steps", "1", "--device", "cuda"])
    with pytest.raises(SystemExit, match="not a torch device"):
        main(["train", *common, "--max-steps", "1", "--device", "gpu0"])


def test_eval_generator_samples_with_another_flow_shift_and_restores_the_shared_pipeline(tmp_path):
    """--shift re-times the sampler for one evaluation; the cached pipeline keeps its own scheduler."""
    from studio.pipelines import load_pipeline
    from training.eval_generator import main

    own = load_pipeline("tinyworld").flow_shift
    report = main(["--num-prompts", "2", "--camera-prompts", "0", "--shift", "6", "--steps", "4",
                   "--threads", "1", "--sheet-rows", "2", "--out", str(tmp_path)])
    assert report["shift"] == 6.0 and report["num_prompts"] == 2
    assert load_pipeline("tinyworld").flow_shift == own
    with pytest.raises(SystemExit, match="--shift must be > 0"):
        main(["--num-prompts", "1", "--camera-prompts", "0", "--shift", "0", "--out", str(tmp_path)])
    assert load_pipeline("tinyworld").flow_shift == own


def test_eval_generator_judges_another_split_with_another_scorer(tmp_path):
    """--split dynamic takes its prompts from the dynamic split; --scorer names the judge's
    checkpoint, and a missing one fails before any clip is generated."""
    from training.eval_generator import main, test_rows

    assert {r["split"] for r in test_rows(5, "dynamic")} == {"dynamic"}
    assert test_rows(5, "dynamic")[0]["prompt"] != test_rows(5)[0]["prompt"]
    report = main(["--split", "dynamic", "--scorer", "assets/clip", "--num-prompts", "2", "--camera-prompts", "0",
                   "--steps", "2", "--threads", "1", "--sheet-rows", "2", "--out", str(tmp_path)])
    assert report["split"] == "dynamic" and report["scorer"] == "assets/clip" and report["num_prompts"] == 2
    with pytest.raises(FileNotFoundError, match="TinyWorld CLIP not found"):
        main(["--scorer", str(tmp_path / "nope"), "--num-prompts", "1", "--camera-prompts", "0", "--steps", "2",
              "--out", str(tmp_path)])


# ------------------------------------------------------------------------------------ concurrency
def test_tokenizer_calls_from_many_threads_never_pad_each_other(wan_dir):
    """check_inputs (no padding) and encode_prompt (pads to max length) share one fast tokenizer,
    whose padding is state on the Rust object: every embedding must keep the model's length."""
    from concurrent.futures import ThreadPoolExecutor

    pipe = load_pipeline(str(wan_dir))
    length = pipe.max_sequence_length

    def work(i: int):
        if i % 2:
            pipe.check_inputs(PROMPT, 0, 9, 32, 32, 3, 5.0)
            return None
        cond, _ = pipe.encode_prompt([STILL], 1.0)
        return tuple(cond.shape)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, as a loaded server does
    try:
        with ThreadPoolExecutor(8) as pool:
            shapes = [s for s in pool.map(work, range(2000)) if s is not None]
    finally:
        sys.setswitchinterval(interval)
    assert shapes and set(shapes) == {(1, length, 32)}


def test_eight_concurrent_identical_requests_give_the_single_request_clip(wan_dir, lora_dir):
    """The studio's queue runs requests side by side on one cached pipeline (baseline and tuned
    views share its modules): each clip must be bit-identical to the clip made alone."""
    from concurrent.futures import ThreadPoolExecutor

    base, tuned = load_pipeline(str(wan_dir)), load_pipeline(str(wan_dir), lora=str(lora_dir))
    alone = {name: p.generate(PROMPT, seed=5, **SMALL).frames for name, p in (("base", base), ("tuned", tuned))}
    assert not np.array_equal(alone["base"], alone["tuned"])
    jobs = [("base", base), ("tuned", tuned)] * 4
    with ThreadPoolExecutor(8) as pool:
        clips = list(pool.map(lambda job: (job[0], job[1].generate(PROMPT, seed=5, **SMALL).frames), jobs))
    for name, frames in clips:
        assert np.array_equal(frames, alone[name]), name


# ------------------------------------------------------------------------------------ LoRA checks
def test_a_lora_that_names_no_layer_of_the_model_fails_at_load_not_at_generation(wan_dir, tmp_path):
    from safetensors.torch import save_file

    # An SD U-Net LoRA: well-formed, but no key names a layer of a Wan transformer.
    save_file({"unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
               "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 4)},
              str(tmp_path / "pytorch_lora_weights.safetensors"))
    with pytest.raises(ValueError, match="another architecture"):
        load_pipeline(str(wan_dir), lora=str(tmp_path))
    assert load_pipeline(str(wan_dir)).generate(STILL, seed=0, **SMALL).frames.shape == (9, 32, 32, 3)


def test_base_fingerprint_ignores_adapters_and_dtype_and_tells_bases_apart(wan_dir):
    from peft import LoraConfig

    from studio.pipelines import base_fingerprint

    pipe = load_pipeline(str(wan_dir), cache=False)
    fp = base_fingerprint(pipe.transformer)
    assert fp == pipe.base_fingerprint and len(fp) == 16
    assert load_pipeline(str(wan_dir), dtype="bfloat16", cache=False).base_fingerprint == fp
    pipe.transformer.add_adapter(LoraConfig(r=2, lora_alpha=2, target_modules=["to_q"]))
    assert base_fingerprint(pipe.transformer) == fp
    other = WorldPipeline(**_tiny_components(seed=1))
    assert base_fingerprint(other.transformer) != fp


def test_a_lora_stamped_for_another_base_is_refused_with_a_message(wan_dir, lora_dir, tmp_path):
    import shutil

    from studio.pipelines import lora_metadata, stamp_lora

    right, wrong = tmp_path / "right", tmp_path / "wrong"
    for d in (right, wrong):
        shutil.copytree(lora_dir, d)
    base = load_pipeline(str(wan_dir))
    stamp_lora(right / "pytorch_lora_weights.safetensors", base.base_fingerprint)
    stamp_lora(wrong / "pytorch_lora_weights.safetensors", "0123456789abcdef")
    assert lora_metadata(right / "pytorch_lora_weights.safetensors")["studio.base_fingerprint"] == base.base_fingerprint
    tuned = load_pipeline(str(wan_dir), lora=str(right))
    assert not np.array_equal(tuned.generate(PROMPT, seed=2, **SMALL).frames, base.generate(PROMPT, seed=2, **SMALL).frames)
    with pytest.raises(ValueError, match="trained on another base model"):
        load_pipeline(str(wan_dir), lora=str(wrong))
    with pytest.raises(ValueError) as err:
        load_pipeline(str(wan_dir), lora=str(wrong))
    assert str(tmp_path) not in str(err.value)  # names, not server paths


def test_a_prompt_of_unknown_words_is_flagged_as_unconditioned(wan_dir):
    pipe = load_pipeline(str(wan_dir))
    assert pipe.prompt_warnings(PROMPT) == []
    assert "not conditioned" in pipe.prompt_warnings("Камера слева. Красный куб 🚀")[0]
    assert "unknown to this model" in pipe.prompt_warnings("A red cube near a zebra")[0]


@needs_tinyworld
def test_shipped_loras_record_the_shipped_base():
    from studio.pipelines import lora_metadata

    base = load_pipeline("tinyworld")
    for lora in SHIPPED_LORAS:
        assert lora_metadata(lora / "pytorch_lora_weights.safetensors")["studio.base_fingerprint"] == base.base_fingerprint


def test_seam_ratio_is_one_without_a_grid_and_grows_with_block_edges():
    from training.eval_generator import seam_ratio

    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 255, (2, 3, 64, 64, 3)).astype(np.uint8)  # no structure: every edge alike
    assert abs(seam_ratio(smooth, 8) - 1.0) < 0.02
    blocks = np.kron(rng.integers(0, 255, (2, 3, 8, 8, 3)), np.ones((1, 1, 8, 8, 1))).astype(np.uint8)
    blocks = np.clip(blocks.astype(int) + rng.integers(-3, 4, blocks.shape), 0, 255)  # a little texture inside
    assert seam_ratio(blocks, 8) > 5 and seam_ratio(blocks, 16) > 5
    assert seam_ratio(blocks, 8) > seam_ratio(blocks, 3)


def test_eval_generator_camera_figures_on_renders_split_single_and_two_move_clauses():
    from studio.tinyworld.corpus import scene_of
    from studio.tinyworld.render import render_scene
    from training.eval_generator import camera_adherence, test_rows

    rows = [r for r in test_rows(40) if r["scene"]["moves"] != ["fixed"]]
    rows = [r for r in rows if len(r["scene"]["moves"]) == 1][:2] + [r for r in rows if len(r["scene"]["moves"]) == 2][:2]
    clips = [render_scene(scene_of(r), 17, 64, 64)["frames"] for r in rows]
    report = camera_adherence(clips, rows)
    assert report["n"] == 4 and report["1_move"]["n"] == 2 and report["2_move"]["n"] == 2
    assert report["trajectory_error_deg_median"] < 5 and report["move_match_exact"] >= 0.75  # renders: the ceiling
    assert 0.5 < report["s_traj_mean"] <= 1.0
