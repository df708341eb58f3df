"""The one pipeline class (WorldPipeline) and what it returns (Clip); see the package docstring."""

from __future__ import annotations

import copy
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from studio.pipelines.text import embed_prompts
from studio.util import TOKENIZER_LOCK
from studio.video import decoded_to_frames

MAX_PROMPT_CHARS = 2000


# ------------------------------------------------------------------------------------ clip
@dataclass
class Clip:
    """A generated clip. frames: uint8 (F, H, W, 3); trajectory: target c2w (F, 4, 4), OpenCV axes,
    relative to the first camera, distances in units of the focus distance; None when the prompt
    has no camera clause."""

    frames: np.ndarray
    prompt: str
    seed: int
    moves: list[str]
    trajectory: np.ndarray | None
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
    def camera_path(self, prompt: str, num_frames: int) -> tuple[list[str], np.ndarray | None]:
        """The prompt's camera moves and target trajectory (F, 4, 4), focus distance 1 (None without a clause)."""
        from studio.camera import camera_trajectory, parse_camera_motion

        moves = parse_camera_motion(prompt)
        return moves, (camera_trajectory(moves, num_frames, focus=1.0) if moves else None)

    def camera_paths(self, prompts, num_frames: int) -> list[np.ndarray | None]:
        """The target trajectory of each prompt (None without a camera clause)."""
        return [self.camera_path(p, num_frames)[1] for p in prompts]

    def latent_shape(self, num_frames: int, height: int, width: int) -> tuple[int, int, int, int]:
        c = self.transformer.config.in_channels
        r, s = self.vae_scale_factor_temporal, self.vae_scale_factor_spatial
        return c, (num_frames - 1) // r + 1, height // s, width // s

    def _plain_noise(self, seeds: list[int], shape) -> "torch.Tensor":
        import torch

        # CPU generators: the same seed gives the same noise on every device.
        noise = [torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds]
        return torch.stack(noise)

    def prepare_latents(self, prompts, seeds, num_frames, height, width, camera_init: bool = False, paths=None):
        """Starting latents (B, C, T, h, w); see the module docstring for the camera modes.

        paths: the target trajectories (camera_paths), when the caller has them; else from the prompts."""
        import torch

        if len(prompts) != len(seeds):
            raise ValueError(f"got {len(prompts)} prompts but {len(seeds)} seeds")
        latents = self._plain_noise(seeds, self.latent_shape(num_frames, height, width))
        if camera_init and self.config.camera_init_mode == "warped_start":
            latents = self._warped_start(latents, self._warp_paths(prompts, num_frames, paths), seeds)
        return latents.to(self.device, torch.float32)

    def _warp_paths(self, prompts, num_frames, paths=None) -> list[np.ndarray | None]:
        """The paths the noise is warped along: None where there is none or the camera stays fixed."""
        if paths is None:
            paths = self.camera_paths(prompts, num_frames)
        if len(paths) != len(prompts):
            raise ValueError(f"got {len(paths)} camera paths for {len(prompts)} prompts")
        return [None if c2w is None or np.allclose(c2w, np.eye(4)) else c2w for c2w in paths]

    def _warped_start(self, fresh, paths, seeds):
        import torch

        from studio.noise_warp import blend_noise, warped_noise

        cfg = self.warp_config
        out = fresh.clone()
        for i, (c2w, seed) in enumerate(zip(paths, seeds)):
            if c2w is not None:
                rng = np.random.default_rng([int(seed), 0x5EED])
                base = fresh[i].double().numpy()
                w = warped_noise(base, c2w, rng, self.vae_scale_factor_temporal, cfg)
                out[i] = torch.from_numpy(blend_noise(w, rng.standard_normal(w.shape), cfg.degradation)).float()
        return out

    def camera_delta(self, latents, prompts, seeds, num_frames, paths=None):
        """Normalised warped-minus-fresh delta (B, C, T, h, w); zero without a camera clause.

        paths: the target trajectories (camera_paths), when the caller has them; else from the prompts."""
        import torch

        from studio.noise_warp import camera_delta

        if self.config.camera_init_mode != "stepwise_delta":
            return torch.zeros_like(latents)
        fresh = self._plain_noise(seeds, tuple(latents.shape[1:]))
        delta = camera_delta(fresh, self._warp_paths(prompts, num_frames, paths), list(seeds),
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
            latents = self.prepare_latents([prompt], [seed], num_frames, height, width, camera_init, paths=[c2w])
            delta = self.camera_delta(latents, [prompt], [seed], num_frames, paths=[c2w]) if camera_init else None
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
