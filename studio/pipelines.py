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
- ``pipe.prepare_latents(prompts, seeds, num_frames, height, width, camera_init=False)``:
  the starting latents. Sample i's noise depends only on ``seeds[i]`` (so baseline and tuned
  start from the same noise). In the default ``stepwise_delta`` mode the start is plain noise
  even with ``camera_init`` (the camera enters through ``inject``); in ``warped_start`` mode
  it is the warped noise itself.
- ``pipe.camera_delta(latents, prompts, seeds, num_frames) -> delta`` (B, C, T, h, w): the
  normalised low-passed warped-minus-fresh noise (zero for prompts without a camera clause);
  ``pipe.inject(latents, delta, step) -> latents`` after denoising step ``step`` (0-based) adds
  it during the first ``warp_steps`` steps (method doc §5; a no-op afterwards).
- ``pipe.sigmas(steps) -> tensor (steps + 1,)``: σ_0 = 1 > … > σ_N = 0, shifted like the
  scheduler (σ' = s·σ / (1 + (s − 1)·σ), s = the scheduler's flow shift).
- ``pipe.predict_velocity(latents, sigma, cond, uncond, guidance) -> v``: the velocity with
  classifier-free guidance v_u + w·(v_c − v_u) applied (one batched forward pass).
- ``pipe.decode_latents(latents) -> np.ndarray`` uint8 (B, F, H, W, 3).
- ``pipe.camera_path(prompt, num_frames) -> (moves, c2w)``: the target trajectory.

Sampling is Euler on ``sigmas(steps)`` for every backend (also Wan, whose checkpoints ship
UniPC), so generation equals the trainer's SDE rollout with noise level 0.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from studio.util import TOKENIZER_LOCK
from studio.video import decoded_to_frames

ROOT = Path(__file__).resolve().parents[1]
TINYWORLD_DIR = ROOT / "assets" / "generator"
MAX_PROMPT_CHARS = 2000
LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# Safetensors metadata key of a LoRA file: the fingerprint of the base transformer it was trained on.
BASE_FINGERPRINT_KEY = "studio.base_fingerprint"


@dataclass(frozen=True)
class Preset:
    """A known checkpoint with the generation settings it is meant for."""

    repo_id: str
    height: int
    width: int
    num_frames: int
    steps: int
    guidance: float
    fps: int = 16
    warp_strength: float = 0.35


PRESETS: dict[str, Preset] = {
    # World-R1's settings: 480×832, 81 frames, 50 steps, CFG 5; wrap strength 0.35 / 0.40.
    "Wan2.1-T2V-1.3B": Preset("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 480, 832, 81, 50, 5.0, 16, 0.35),
    "Wan2.1-T2V-14B": Preset("Wan-AI/Wan2.1-T2V-14B-Diffusers", 480, 832, 81, 50, 5.0, 16, 0.40),
    "Wan2.2-T2V-A14B": Preset("Wan-AI/Wan2.2-T2V-A14B-Diffusers", 480, 832, 81, 40, 4.0, 16, 0.40),
    "Wan2.2-TI2V-5B": Preset("Wan-AI/Wan2.2-TI2V-5B-Diffusers", 704, 1280, 121, 50, 5.0, 24, 0.35),
}


# ------------------------------------------------------------------------------------ text
def normalize_prompt_words(text: str) -> list[str]:
    """The TinyWorld tokenizer's view of a prompt: lower-case words, punctuation dropped."""
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).split()


def build_word_tokenizer(vocabulary: list[str], max_length: int):
    """A word-level tokenizer (``PreTrainedTokenizerFast``) with T5's specials: <pad>=0, </s>=1, <unk>=2."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2}
    for word in vocabulary:
        vocab.setdefault(word, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace(Regex("[^a-z0-9]+"), " ")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>", model_max_length=max_length
    )


def embed_prompts(tokenizer, text_encoder, prompts: list[str], max_sequence_length: int):
    """Text embeddings (B, L, D), zero beyond each prompt's tokens (Wan's convention).

    Shared by the pipeline and the TinyWorld pre-training, so both see the same padding.
    """
    prompts = [" ".join(p.split()) for p in prompts]
    with TOKENIZER_LOCK:
        inputs = tokenizer(
            prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
            add_special_tokens=True, return_attention_mask=True, return_tensors="pt",
        )
    device = next(text_encoder.parameters()).device
    ids, mask = inputs.input_ids.to(device), inputs.attention_mask.to(device)
    hidden = text_encoder(ids, mask).last_hidden_state
    return hidden * mask[..., None].to(hidden.dtype)


# ------------------------------------------------------------------------------------ clip
@dataclass
class Clip:
    """A generated clip. frames: uint8 (F, H, W, 3); trajectory: target c2w (F, 4, 4), OpenCV axes,
    relative to the first camera, distances in units of the focus distance."""

    frames: np.ndarray
    prompt: str
    seed: int
    moves: list[str]
    trajectory: np.ndarray
    camera_init: bool
    steps: int
    guidance: float
    model: str = ""
    adapter: str | None = None
    fps: int = 8
    timings: dict[str, float] = field(default_factory=dict)

    def to_mp4(self, path: str | Path, fps: int | None = None) -> Path:
        """Write H.264 MP4 at the clip's size with the project's one writer (studio.video: in-process, no ffmpeg fork)."""
        from studio.video import write_mp4

        t0 = time.perf_counter()
        path = write_mp4(self.frames, path, fps=fps or self.fps, min_side=1)
        self.timings["mp4_s"] = time.perf_counter() - t0
        return path


# ------------------------------------------------------------------------------------ pipeline
def _diffusers_base():
    from diffusers import DiffusionPipeline
    from diffusers.loaders import WanLoraLoaderMixin

    return DiffusionPipeline, WanLoraLoaderMixin


_DiffusionPipeline, _WanLoraLoaderMixin = _diffusers_base()


class WorldPipeline(_DiffusionPipeline, _WanLoraLoaderMixin):
    """Text-to-video flow matching with camera-aware initialization, for TinyWorld and Wan components.

    Components: ``tokenizer``, ``text_encoder`` (UMT5 encoder), ``transformer``
    (``WanTransformer3DModel``), ``vae`` (``AutoencoderKLWan`` or ``studio.codec.TinyWorldCodec``),
    ``scheduler`` (its flow shift sets the sigmas), optional ``transformer_2`` (Wan2.2 A14B's
    low-noise expert, used below ``boundary_ratio``).
    """

    model_cpu_offload_seq = "text_encoder->transformer->transformer_2->vae"
    _optional_components = ["transformer_2"]

    def __init__(
        self,
        tokenizer,
        text_encoder,
        transformer,
        vae,
        scheduler,
        transformer_2=None,
        boundary_ratio: float | None = None,
        expand_timesteps: bool = False,
        max_sequence_length: int = 512,
        fps: int = 16,
        warp_strength: float = 0.35,
        warp_degradation: float = 0.35,
        warp_box: int = 9,
        warp_steps: int = 8,
        warp_upscale: int = 4,
        warp_fov_deg: float = 60.0,
        camera_init_mode: str = "stepwise_delta",
        default_height: int = 480,
        default_width: int = 832,
        default_num_frames: int = 81,
        default_steps: int = 50,
        default_guidance: float = 5.0,
    ):
        super().__init__()
        self.register_modules(
            tokenizer=tokenizer, text_encoder=text_encoder, transformer=transformer, vae=vae,
            scheduler=scheduler, transformer_2=transformer_2,
        )
        self.register_to_config(
            boundary_ratio=boundary_ratio, expand_timesteps=expand_timesteps,
            max_sequence_length=max_sequence_length, fps=fps, warp_strength=warp_strength,
            warp_degradation=warp_degradation, warp_box=warp_box, warp_steps=warp_steps,
            warp_upscale=warp_upscale, warp_fov_deg=warp_fov_deg, camera_init_mode=camera_init_mode,
            default_height=default_height, default_width=default_width, default_num_frames=default_num_frames,
            default_steps=default_steps, default_guidance=default_guidance,
        )
        self.vae_scale_factor_temporal = getattr(vae.config, "scale_factor_temporal", 4) if vae is not None else 4
        self.vae_scale_factor_spatial = getattr(vae.config, "scale_factor_spatial", 8) if vae is not None else 8
        self.model_name = ""  # set by load_pipeline
        self.base_fingerprint = ""  # set by load_pipeline: base_fingerprint(transformer), checked against LoRAs
        self.adapter: str | None = None  # the LoRA adapter this view switches on (None: base model)
        self._studio_adapters: dict[str, float] = {}  # adapters load_pipeline added -> scale
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ settings
    @property
    def warp_config(self):
        from studio.noise_warp import WarpConfig

        c = self.config
        return WarpConfig(
            wrap_strength=c.warp_strength, degradation=c.warp_degradation, box=c.warp_box,
            inject_steps=c.warp_steps, upscale=c.warp_upscale, fov_deg=c.warp_fov_deg, focus=1.0,
        )

    @property
    def flow_shift(self) -> float:
        cfg = self.scheduler.config
        return float(cfg.get("flow_shift", None) or cfg.get("shift", 1.0) or 1.0)

    def defaults(self) -> dict:
        """The generation settings this model is meant for (a preset's, or the shipped model's)."""
        c = self.config
        return {"num_frames": c.default_num_frames, "height": c.default_height, "width": c.default_width,
                "steps": c.default_steps, "guidance": c.default_guidance}

    @property
    def max_sequence_length(self) -> int:
        """Text tokens the model reads: the config's limit, or the tokenizer's if that is smaller."""
        return int(min(self.config.max_sequence_length, getattr(self.tokenizer, "model_max_length", 10**9)))

    @property
    def patch_multiple(self) -> int:
        return self.vae_scale_factor_spatial * self.transformer.config.patch_size[1]

    # ------------------------------------------------------------------ 1. inputs
    def check_inputs(self, prompt, seed, num_frames, height, width, steps, guidance) -> None:
        """Every argument checked before any heavy work; messages say what was expected."""
        if not isinstance(prompt, str):
            raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
        if not prompt.strip():
            raise ValueError("prompt is empty; describe the scene, e.g. 'Camera orbit left. A red cube on a checkered floor.'")
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"prompt is {len(prompt)} characters; shorten it to at most {MAX_PROMPT_CHARS}")
        n_tokens = len(self.prompt_token_ids(prompt))
        if n_tokens > self.max_sequence_length:
            raise ValueError(
                f"prompt is {n_tokens} tokens; this model reads at most {self.max_sequence_length}: shorten it"
            )
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**63:
            raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
        r = self.vae_scale_factor_temporal
        if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or not 1 <= num_frames <= 1 + 64 * r:
            raise ValueError(f"num_frames must be an integer in [1, {1 + 64 * r}], got {num_frames!r}")
        if (num_frames - 1) % r:
            lo = (num_frames - 1) // r * r + 1
            raise ValueError(f"num_frames must be {r}k+1 (e.g. {lo} or {lo + r}), got {num_frames}")
        m = self.patch_multiple
        for name, value in (("height", height), ("width", width)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not m <= value <= 2048:
                raise ValueError(f"{name} must be an integer in [{m}, 2048], got {value!r}")
            if value % m:
                raise ValueError(f"{name} must be a multiple of {m} (e.g. {value // m * m or m}), got {value}")
        if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or not 1 <= steps <= 500:
            raise ValueError(f"steps must be an integer in [1, 500], got {steps!r}")
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float, np.floating)) or not 0.0 <= guidance <= 20.0:
            raise ValueError(f"guidance must be a number in [0, 20] (1 turns guidance off), got {guidance!r}")

    # ------------------------------------------------------------------ 2. text
    def prompt_token_ids(self, prompt: str) -> list[int]:
        """The prompt's token ids as the text encoder reads them (with the end token, no padding)."""
        with TOKENIZER_LOCK:
            return list(self.tokenizer(" ".join(prompt.split()), add_special_tokens=True).input_ids)

    def prompt_warnings(self, prompt: str) -> list[str]:
        """What the model cannot read in a prompt: a prompt of unknown words only conditions nothing."""
        unk = getattr(self.tokenizer, "unk_token_id", None)
        if unk is None or not prompt.strip():
            return []
        ids = self.prompt_token_ids(prompt)
        special = set(getattr(self.tokenizer, "all_special_ids", [])) - {unk}
        words = [i for i in ids if i not in special]
        if all(i == unk for i in words):  # also true when the tokenizer dropped every character
            return ["none of the prompt's words are known to this model, so the clip is not conditioned on it; "
                    "the TinyWorld generator reads English words for colours, shapes, grounds, skies and camera "
                    "moves, e.g. 'Camera orbit left. A red cube on a checkered floor.'"]
        if unk in words:
            return [f"{words.count(unk)} word(s) of the prompt are unknown to this model and were ignored"]
        return []

    def encode_prompt(self, prompts: list[str], guidance: float = 5.0):
        """(cond, uncond) text embeddings (B, L, D); uncond (the empty prompt) is None when guidance == 1."""
        import torch

        with torch.no_grad():
            L = self.max_sequence_length
            cond = embed_prompts(self.tokenizer, self.text_encoder, list(prompts), L)
            uncond = None
            if guidance != 1.0:
                uncond = embed_prompts(self.tokenizer, self.text_encoder, [""], L).expand_as(cond)
            dtype = self.transformer.dtype
            return cond.to(self.device, dtype), (None if uncond is None else uncond.to(self.device, dtype))

    # ------------------------------------------------------------------ 3. latents + camera
    def camera_path(self, prompt: str, num_frames: int) -> tuple[list[str], np.ndarray]:
        """The prompt's camera moves and target trajectory (F, 4, 4), focus distance 1."""
        from studio.camera import camera_trajectory, parse_camera_motion

        moves = parse_camera_motion(prompt)
        return moves, camera_trajectory(moves, num_frames, focus=1.0)

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        c = self.transformer.config.in_channels
        r, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        return c, (num_frames - 1) // r + 1, height // s, width // s

    def _plain_noise(self, seeds: list[int], shape) -> "torch.Tensor":
        import torch

        # CPU generators: the same seed gives the same noise on every device.
        noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
        return torch.stack(noise)

    def prepare_latents(self, prompts, seeds, num_frames, height, width, camera_init: bool = False):
        """Starting latents (B, C, T, h, w); see the module docstring for the camera modes."""
        import torch

        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        latents = self._plain_noise(seeds, self.latent_shape(num_frames, height, width))
        if camera_init and self.config.camera_init_mode == "warped_start":
            latents = self._warped_start(latents, prompts, seeds, num_frames)
        return latents.to(self.device, torch.float32)

    def _trajectories(self, prompts, num_frames) -> list[np.ndarray | None]:
        out = []
        for p in prompts:
            moves, c2w = self.camera_path(p, num_frames)
            out.append(c2w if moves and moves != ["fixed"] else None)
        return out

    def _warped_start(self, fresh, prompts, seeds, num_frames):
        import torch

        from studio.noise_warp import blend_noise, warped_noise

        cfg = self.warp_config
        out = fresh.clone()
        for i, (c2w, seed) in enumerate(zip(self._trajectories(prompts, num_frames), seeds)):
            if c2w is not None:
                rng = np.random.default_rng([int(seed), 0x5EED])
                base = fresh[i].double().numpy()
                w = warped_noise(base, c2w, rng, self.vae_scale_factor_temporal, cfg)
                out[i] = torch.from_numpy(blend_noise(w, rng.standard_normal(w.shape), cfg.degradation)).float()
        return out

    def camera_delta(self, latents, prompts, seeds, num_frames):
        """Normalised warped-minus-fresh delta (B, C, T, h, w); zero without a camera clause."""
        import torch

        from studio.noise_warp import camera_delta

        if self.config.camera_init_mode != "stepwise_delta":
            return torch.zeros_like(latents)
        fresh = self._plain_noise(seeds, tuple(latents.shape[1:]))
        delta = camera_delta(fresh, self._trajectories(prompts, num_frames), list(seeds),
                             self.vae_scale_factor_temporal, self.warp_config)
        return delta.to(latents.device, latents.dtype)

    def inject(self, latents, delta, step: int):
        """After denoising step ``step``: add w·c_k·std(x)·delta and restore mean and std (first steps only)."""
        from studio.noise_warp import inject

        return inject(latents, delta, step, self.warp_config)

    # ------------------------------------------------------------------ 4. denoising
    def sigmas(self, steps: int):
        """σ_0 = 1 > σ_1 > … > σ_N = 0, shifted like the scheduler: σ' = s·σ / (1 + (s − 1)·σ)."""
        import torch

        s = self.flow_shift
        sigma = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)
        return (s * sigma / (1 + (s - 1) * sigma)).float()

    def predict_velocity(self, latents, sigma, cond, uncond=None, guidance: float = 1.0):
        """v = v_u + guidance·(v_c − v_u) at noise level sigma (scalar or (B,)); one batched pass."""
        import torch

        b = latents.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=latents.device)
        sigma = sigma.expand(b) if sigma.ndim == 0 else sigma
        model = self.transformer
        if self.transformer_2 is not None and self.config.boundary_ratio is not None:
            if float(sigma[0]) < self.config.boundary_ratio:
                model = self.transformer_2  # Wan2.2 A14B: the low-noise expert
        timestep = sigma * self.scheduler.config.num_train_timesteps
        if self.config.expand_timesteps:  # Wan2.2 TI2V takes one timestep per token
            _, t, h, w = latents.shape[1:]
            p = model.config.patch_size
            timestep = timestep[:, None].expand(b, (t // p[0]) * (h // p[1]) * (w // p[2]))
        x = latents.to(model.dtype)
        use_cfg = uncond is not None and guidance != 1.0
        if use_cfg:
            x, timestep, text = torch.cat([x, x]), torch.cat([timestep, timestep]), torch.cat([cond, uncond])
        else:
            text = cond
        out = model(hidden_states=x, timestep=timestep, encoder_hidden_states=text, return_dict=False)[0].float()
        if not use_cfg:
            return out
        v_cond, v_uncond = out.chunk(2)
        return v_uncond + guidance * (v_cond - v_uncond)

    # ------------------------------------------------------------------ 5. decode
    def decode_latents(self, latents) -> np.ndarray:
        """Latents (B, C, T, h, w) -> uint8 frames (B, F, H, W, 3)."""
        import torch

        with torch.no_grad():
            z = latents.to(self.vae.device, self.vae.dtype)
            cfg = self.vae.config
            if "latents_mean" in cfg:  # Wan VAE latents are normalised per channel
                mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1).to(z)
                std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1).to(z)
                z = z * std + mean
            return decoded_to_frames(self.vae.decode(z, return_dict=False)[0])

    # ------------------------------------------------------------------ adapters
    def _activate_adapter(self) -> None:
        """Switch this view's LoRA adapter on (or every adapter off for the base view)."""
        if not getattr(self, "_studio_adapters", None):
            return
        if self.adapter is None:
            self.disable_lora()
        else:
            self.enable_lora()
            self.set_adapters([self.adapter], [self._studio_adapters[self.adapter]])

    def with_adapter(self, name: str | None) -> "WorldPipeline":
        """A view of this pipeline (same modules, same weights) with adapter ``name`` switched on."""
        view = copy.copy(self)
        view.adapter = name
        return view

    # ------------------------------------------------------------------ generate
    def generate(
        self,
        prompt: str,
        seed: int = 0,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        steps: int | None = None,
        guidance: float | None = None,
        camera_init: bool = True,
        progress: Callable | None = None,
    ) -> Clip:
        """Generate one clip. Unset sizes/steps/guidance take the model's defaults
        (TinyWorld: 17 frames, 64×64, 20 steps, CFG 5; Wan presets: 81, 480×832, 50, 5).
        ``progress(fraction, desc=...)`` is called after every step (gr.Progress fits)."""
        import torch

        d = self.defaults()
        num_frames = d["num_frames"] if num_frames is None else num_frames
        height = d["height"] if height is None else height
        width = d["width"] if width is None else width
        steps = d["steps"] if steps is None else steps
        guidance = d["guidance"] if guidance is None else guidance
        self.check_inputs(prompt, seed, num_frames, height, width, steps, guidance)
        seed, guidance = int(seed), float(guidance)
        timings: dict[str, float] = {}
        with self._lock, torch.inference_mode():
            self._activate_adapter()
            t0 = time.perf_counter()
            cond, uncond = self.encode_prompt([prompt], guidance)
            t1 = time.perf_counter()
            moves, c2w = self.camera_path(prompt, num_frames)
            latents = self.prepare_latents([prompt], [seed], num_frames, height, width, camera_init)
            delta = self.camera_delta(latents, [prompt], [seed], num_frames) if camera_init else None
            if delta is not None and not bool(delta.abs().amax() > 0):
                delta = None
            t2 = time.perf_counter()
            sigmas = self.sigmas(steps).tolist()
            for k in range(steps):
                v = self.predict_velocity(latents, sigmas[k], cond, uncond, guidance)
                latents = latents + (sigmas[k + 1] - sigmas[k]) * v
                if delta is not None:
                    latents = self.inject(latents, delta, k)
                if progress is not None:
                    progress((k + 1) / steps, desc=f"denoising {k + 1}/{steps}")
            t3 = time.perf_counter()
            frames = self.decode_latents(latents)[0]
            t4 = time.perf_counter()
        timings.update(encode_s=t1 - t0, init_s=t2 - t1, denoise_s=t3 - t2, decode_s=t4 - t3, total_s=t4 - t0)
        return Clip(
            frames=frames, prompt=prompt, seed=seed, moves=moves, trajectory=c2w, camera_init=bool(camera_init),
            steps=steps, guidance=guidance, model=self.model_name, adapter=self.adapter, fps=self.config.fps,
            timings=timings,
        )

    __call__ = generate


# ------------------------------------------------------------------------------------ loading
_CACHE: dict[tuple, WorldPipeline] = {}
_CACHE_LOCK = threading.Lock()
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_snapshot(repo_id: str, what: str) -> Path:
    """Local snapshot of a hub repo; offline and uncached -> FileNotFoundError at once."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as cached_error:  # noqa: BLE001 - any miss in the cache
        if _offline():
            raise FileNotFoundError(
                f"{what} {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1. "
                f"Download it where there is internet: `hf download {repo_id}` (or "
                f"`huggingface-cli download {repo_id} --local-dir DIR`), then copy the cache "
                f"(~/.cache/huggingface/hub) here or pass the local directory instead of the hub id."
            ) from cached_error
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - wrong id, gated repo, no network
        raise ValueError(f"could not download {what} {repo_id!r} from the Hugging Face hub: {e}") from e


def resolve_model(model: str) -> tuple[Path, str]:
    """(local directory, display name) for a model id; raises before anything heavy."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if model == "tinyworld":
        if not (TINYWORLD_DIR / "model_index.json").exists():
            raise FileNotFoundError(
                f"the TinyWorld generator is missing from {TINYWORLD_DIR}; train and export it with "
                "`python -m training.pretrain_generator all`"
            )
        return TINYWORLD_DIR, "tinyworld"
    if model in PRESETS:
        return _hub_snapshot(PRESETS[model].repo_id, "model"), model
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a diffusers pipeline directory (no model_index.json)")
        return path.resolve(), str(path)
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return _hub_snapshot(model, "model"), model
    if os.sep in model or model.startswith((".", "~")):
        raise FileNotFoundError(f"model directory {model!r} does not exist")
    raise ValueError(
        f"unknown model {model!r}; expected 'tinyworld', a preset ({', '.join(PRESETS)}), "
        "a local diffusers directory, or a hub id like 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers'"
    )


def resolve_lora(lora: str | os.PathLike) -> Path:
    """Path of a LoRA safetensors file (file, directory holding one, or hub id), checked to be one."""
    from safetensors import safe_open

    lora_str = str(lora)
    path = Path(lora_str).expanduser()
    if not path.exists():
        if _HUB_ID.match(lora_str) and not lora_str.startswith((".", "/", "~")):
            path = _hub_snapshot(lora_str, "LoRA")
        else:
            raise FileNotFoundError(f"LoRA {lora_str!r} does not exist (expected a .safetensors file, a directory holding one, or a hub id)")
    if path.is_dir():
        if (path / LORA_WEIGHT_NAME).is_file():
            path = path / LORA_WEIGHT_NAME
        else:
            files = sorted(path.glob("*.safetensors"))
            if len(files) != 1:
                raise FileNotFoundError(
                    f"LoRA directory {lora_display_name(path)} must hold {LORA_WEIGHT_NAME} (or exactly one .safetensors file); found {len(files)}"
                )
            path = files[0]
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA {lora_display_name(path)} is not a .safetensors file; only safetensors LoRA weights are loaded")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001 - truncated or not safetensors at all
        raise ValueError(f"LoRA {lora_display_name(path)} is corrupt or not a safetensors file ({type(e).__name__}); re-export it with save_lora_weights") from e
    if not keys or not any("lora" in k for k in keys):
        raise ValueError(f"{lora_display_name(path)} holds no LoRA weights (no 'lora_A'/'lora_B' keys); save it with WorldPipeline.save_lora_weights")
    return path.resolve()


def _resolve_dtype(dtype, device: str, is_tinyworld: bool):
    import torch

    if dtype is None:
        return torch.bfloat16 if (device.startswith("cuda") and not is_tinyworld) else torch.float32
    if isinstance(dtype, str):
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in table:
            raise ValueError(f"dtype must be one of {', '.join(table)}, got {dtype!r}")
        return table[dtype]
    return dtype


def load_pipeline(
    model: str = "tinyworld",
    lora: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    dtype=None,
    cpu_offload: str | None = None,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    lora_scale: float = 1.0,
    cache: bool = True,
) -> WorldPipeline:
    """Load (or fetch from the cache) a generator, optionally with a LoRA adapter switched on.

    device: "cpu", "cuda", "cuda:1" … (default: cuda if available); dtype: "bfloat16" / "float16" /
    "float32" (default bf16 for Wan on GPU, fp32 otherwise); cpu_offload: None, "model" or
    "sequential" (diffusers offloading, for GPUs with little memory); vae_tiling / vae_slicing:
    the Wan VAE's memory savers. ``cache=False`` returns a private pipeline (e.g. for training).
    """
    import torch

    if cpu_offload not in (None, "model", "sequential"):
        raise ValueError(f"cpu_offload must be None, 'model' or 'sequential', got {cpu_offload!r}")
    if not isinstance(lora_scale, (int, float)) or not 0.0 <= lora_scale <= 4.0:
        raise ValueError(f"lora_scale must be a number in [0, 4], got {lora_scale!r}")
    path, name = resolve_model(model)
    lora_path = resolve_lora(lora) if lora is not None else None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use device='cpu'")
    torch_dtype = _resolve_dtype(dtype, device, name == "tinyworld")
    key = (str(path), device, str(torch_dtype), cpu_offload, vae_tiling, vae_slicing)

    with _CACHE_LOCK:
        pipe = _CACHE.get(key) if cache else None
        if pipe is None:
            pipe = _load_base(path, name, device, torch_dtype, cpu_offload, vae_tiling, vae_slicing)
            if cache:
                _CACHE[key] = pipe
        if lora_path is None:
            return pipe
        adapter = "lora_" + hashlib.sha1(str(lora_path).encode()).hexdigest()[:10]
        with pipe._lock:
            if adapter not in pipe._studio_adapters:
                check_lora_base(lora_path, pipe)
                try:
                    pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name, adapter_name=adapter)
                    if adapter not in (getattr(pipe.transformer, "peft_config", None) or {}):
                        # diffusers only warns when no key names a layer of this transformer
                        raise ValueError(
                            "none of its weights name a layer of this model's transformer (it was made for "
                            "another architecture, e.g. a U-Net)")
                except Exception as e:  # noqa: BLE001 - wrong shapes, wrong targets, corrupt tensors
                    try:
                        pipe.delete_adapters([adapter])
                    except Exception:  # noqa: BLE001 - nothing was added
                        pass
                    raise ValueError(f"LoRA {lora_display_name(lora_path)} does not fit model {name!r}: {e}") from e
            pipe._studio_adapters[adapter] = float(lora_scale)
        return pipe.with_adapter(adapter)


# ------------------------------------------------------------------------------------ base fingerprint
def base_fingerprint(transformer) -> str:
    """A short digest of a transformer's base weights, the same with or without LoRA adapters attached.

    It hashes each base tensor's name, shape and first 256 values rounded to bf16, so a checkpoint
    loaded in fp32 or bf16, on any device, gives the same digest, and it costs milliseconds even at
    Wan-14B size (no full pass over the weights).
    """
    import torch

    h = hashlib.sha256()
    for name, t in sorted(transformer.state_dict().items()):
        if "lora_" in name:
            continue
        name = name.replace(".base_layer", "")
        head = t.detach().flatten()[:256].to("cpu", torch.bfloat16).float().numpy()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(head.tobytes())
    return h.hexdigest()[:16]


def lora_metadata(path: Path | str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def stamp_lora(path: Path | str, fingerprint: str) -> None:
    """Record the base model's fingerprint in a LoRA safetensors file (its other metadata kept), atomically."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    meta = {**lora_metadata(path), BASE_FINGERPRINT_KEY: fingerprint}
    meta.setdefault("format", "pt")
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(load_file(str(path)), str(tmp), metadata=meta)
    os.replace(tmp, path)


def check_lora_base(lora_path: Path, pipe: "WorldPipeline") -> None:
    """Refuse a LoRA whose recorded base fingerprint is not this pipeline's (unstamped LoRAs pass)."""
    recorded = lora_metadata(lora_path).get(BASE_FINGERPRINT_KEY)
    if recorded and recorded != pipe.base_fingerprint:
        raise ValueError(
            f"LoRA {lora_display_name(lora_path)} was trained on another base model (fingerprint {recorded}; "
            f"{pipe.model_name or 'this model'} is {pipe.base_fingerprint}); a LoRA only fits the base it was "
            "trained on: train one on this base in the Training tab, or pick a LoRA made for it")


def lora_display_name(path: Path | str) -> str:
    """A LoRA's name for messages and the UI: the folder under assets/lora or runs, never a server path."""
    path = Path(path)
    folder = path.parent if path.name == LORA_WEIGHT_NAME else path
    parts = folder.parts
    for anchor in ("lora", "runs"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor):]) or folder.name
    return folder.name


def _load_base(path: Path, name: str, device: str, torch_dtype, cpu_offload, vae_tiling, vae_slicing) -> WorldPipeline:
    import json

    index = json.loads((path / "model_index.json").read_text())
    if index.get("_class_name") not in ("WanPipeline", "WorldPipeline"):
        raise ValueError(
            f"{path} holds a {index.get('_class_name')!r}; only Wan text-to-video checkpoints "
            "(WanPipeline) and the TinyWorld generator are supported"
        )
    import importlib

    for entry in index.values():
        # Our own components (the TinyWorld codec) live in this package; diffusers loads a
        # custom class only once its module is imported. Other modules are never imported.
        if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0].startswith("studio."):
            importlib.import_module(entry[0])
    kwargs = {}
    if name in PRESETS:
        p = PRESETS[name]
        kwargs.update(default_height=p.height, default_width=p.width, default_num_frames=p.num_frames,
                      default_steps=p.steps, default_guidance=p.guidance, fps=p.fps, warp_strength=p.warp_strength)
    pipe = WorldPipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True, **kwargs)
    for module in (pipe.text_encoder, pipe.transformer, pipe.transformer_2, pipe.vae):
        if module is not None:
            module.eval()  # T5 dropout would otherwise make outputs random
    if cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    if vae_slicing and hasattr(pipe.vae, "enable_slicing"):
        pipe.vae.enable_slicing()
    pipe.model_name = name
    pipe.base_fingerprint = base_fingerprint(pipe.transformer)
    return pipe


def clear_cache() -> None:
    """Forget every cached pipeline (frees their memory once nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
