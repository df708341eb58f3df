"""Generators: the embedded TinyWorld model and Wan2.1/2.2 checkpoints, with LoRA-tuned variants.

One pipeline class, :class:`WorldPipeline` (a diffusers ``DiffusionPipeline``), runs both the
TinyWorld components shipped in ``assets/generator/`` and the components of any diffusers Wan
text-to-video checkpoint. It reads top to bottom as the algorithm::

    check_inputs -> encode_prompt -> prepare_latents (+ camera_delta: noise warping)
    -> denoising loop (predict_velocity, Euler step, inject) -> decode_latents -> Clip

Loading: ``load_pipeline(model="tinyworld", lora=None, ...)`` with ``model`` one of
``"tinyworld"``, a preset (``"Wan2.1-T2V-1.3B"``, ``"Wan2.1-T2V-14B"``, ``"Wan2.2-T2V-A14B"``,
``"Wan2.2-TI2V-5B"``), a hub id or a local diffusers directory, and ``lora`` a diffusers LoRA
safetensors file, a directory holding one, or a hub id. Loaded pipelines are cached; a LoRA
variant is the cached base pipeline with that adapter switched on (a shallow view sharing every
module), so baseline and tuned hold one copy of the base weights. Offline (``HF_HUB_OFFLINE=1``)
a hub id that is not in the local cache fails at once with download instructions.

Contract for the Flow-GRPO trainer (training/flow_grpo.py, training/train.py)
---------------------------------------------------------------------------
All tensors are float32 on ``pipe.device``; latents are (B, C, T, h, w) with C = z_dim,
T = (F - 1) / 4 + 1, h = H / 8, w = W / 8; flow matching x_σ = (1 − σ)·x0 + σ·ε, v = ε − x0.

- ``pipe.transformer``: the ``WanTransformer3DModel`` (add LoRA with
  ``pipe.transformer.add_adapter(LoraConfig(...))``; use ``load_pipeline(..., cache=False)``
  to get a private pipeline for training).
- ``pipe.encode_prompt(prompts, guidance) -> (cond, uncond)``: text embeddings
  (B, L, D); ``uncond`` is the empty prompt's, or None when ``guidance == 1``.
- ``pipe.prepare_latents(prompts, seeds, num_frames, height, width, camera_init=False, paths=None)``:
  the starting latents. Sample i's noise depends only on ``seeds[i]`` (so baseline and tuned
  start from the same noise). In the default ``stepwise_delta`` mode the start is plain noise
  even with ``camera_init`` (the camera enters through ``inject``); in ``warped_start`` mode
  it is the warped noise itself.
- ``pipe.camera_delta(latents, prompts, seeds, num_frames, paths=None) -> delta`` (B, C, T, h, w): the
  normalised low-passed warped-minus-fresh noise (zero for prompts without a camera clause);
  ``pipe.inject(latents, delta, step) -> latents`` after denoising step ``step`` (0-based) adds
  it during the first ``warp_steps`` steps (method doc §5; a no-op afterwards).
- ``pipe.sigmas(steps) -> tensor (steps + 1,)``: σ_0 = 1 > … > σ_N = 0, shifted like the
  scheduler (σ' = s·σ / (1 + (s − 1)·σ), s = the scheduler's flow shift).
- ``pipe.predict_velocity(latents, sigma, cond, uncond, guidance) -> v``: the velocity with
  classifier-free guidance v_u + w·(v_c − v_u) applied (one batched forward pass).
- ``pipe.decode_latents(latents) -> np.ndarray`` uint8 (B, F, H, W, 3).
- ``pipe.camera_path(prompt, num_frames) -> (moves, c2w)``: the target trajectory (None without a camera
  clause); ``pipe.camera_paths(prompts, num_frames)`` one per prompt, which ``prepare_latents`` and
  ``camera_delta`` take as ``paths=`` instead of parsing the prompts again.

Sampling is Euler on ``sigmas(steps)`` for every backend (also Wan, whose checkpoints ship
UniPC), so generation equals the trainer's SDE rollout with noise level 0.
"""

from studio.pipelines.loading import TINYWORLD_DIR, clear_cache, load_pipeline, resolve_lora, resolve_model
from studio.pipelines.lora import (
    BASE_FINGERPRINT_KEY,
    LORA_WEIGHT_NAME,
    base_fingerprint,
    check_lora_base,
    lora_display_name,
    lora_metadata,
    stamp_lora,
)
from studio.pipelines.presets import PRESETS, Preset
from studio.pipelines.text import build_word_tokenizer, embed_prompts, normalize_prompt_words
from studio.pipelines.world import MAX_PROMPT_CHARS, Clip, WorldPipeline

__all__ = [
    "BASE_FINGERPRINT_KEY", "LORA_WEIGHT_NAME", "MAX_PROMPT_CHARS", "PRESETS", "TINYWORLD_DIR", "Clip", "Preset",
    "WorldPipeline", "base_fingerprint", "build_word_tokenizer", "check_lora_base", "clear_cache", "embed_prompts",
    "load_pipeline", "lora_display_name", "lora_metadata", "normalize_prompt_words", "resolve_lora", "resolve_model",
    "stamp_lora",
]
