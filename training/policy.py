"""The policy Flow-GRPO trains: the generator's transformer with a LoRA adapter. The reference policy
is the same network with the adapter switched off; the EMA of the adapter is what evaluation and the
saved LoRA use. Pipelines follow studio.pipelines.WorldPipeline's contract (encode_prompt,
prepare_latents, predict_velocity with CFG, sigmas, decode_latents, optional camera_delta/inject)."""
from __future__ import annotations

import contextlib

import numpy as np

from training.config import ConfigError, TrainConfig


def add_lora(transformer, cfg: TrainConfig) -> list:
    """Freeze the transformer, add the LoRA adapter, return its trainable parameters (fp32)."""
    import torch
    from peft import LoraConfig

    transformer.requires_grad_(False)
    torch.manual_seed(cfg.seed)
    transformer.add_adapter(
        LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, init_lora_weights="gaussian", target_modules=list(cfg.lora_targets))
    )
    params = lora_parameters(transformer)
    if not params:
        raise ConfigError(f"lora_targets {cfg.lora_targets} matched no module of the transformer")
    for p in params:
        p.data = p.data.float()
    return params


def lora_parameters(transformer) -> list:
    """The adapter's parameters, in the transformer's order (the only ones with requires_grad)."""
    return [p for p in transformer.parameters() if p.requires_grad]


@contextlib.contextmanager
def adapter_disabled(transformer):
    """The reference policy: the same network with its LoRA adapter switched off."""
    transformer.disable_adapters()
    try:
        yield
    finally:
        transformer.enable_adapters()


@contextlib.contextmanager
def ema_weights(ema, params: list):
    """The EMA weights in the model for the duration of the block (nothing changes without an EMA)."""
    if ema is None:
        yield
        return
    ema.store(params)
    ema.copy_to(params)
    try:
        yield
    finally:
        ema.restore(params)


def sampling_sigmas(pipe, num_steps: int):
    """The pipeline's schedule σ_0 > … > σ_N = 0 as a float32 CPU tensor of N + 1 values."""
    import torch

    sigmas = torch.as_tensor(pipe.sigmas(num_steps), dtype=torch.float32).flatten().cpu()
    if float(sigmas[-1]) != 0.0:
        sigmas = torch.cat([sigmas, torch.zeros(1)])
    if len(sigmas) != num_steps + 1 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise RuntimeError(f"pipeline sigmas must decrease from σ_0 to 0 over {num_steps} steps, got {sigmas.tolist()}")
    return sigmas


def per_sample(t, n: int):
    """A (1, ...) embedding (the empty prompt) expanded to n items; None and (n, ...) pass through."""
    if t is None:
        return None
    return t.expand(n, *t.shape[1:]) if t.shape[0] == 1 and n > 1 else t


def camera_injector(pipe, latents, prompts, seeds, cfg: TrainConfig, paths=None):
    """after_step(x, k) adding the camera-aware stepwise delta (method §5), or None when the camera
    init is off, the pipeline has none, or no prompt in the batch has a camera clause.
    paths: the prompts' target trajectories (pipe.camera_paths), when the caller has them."""
    if not cfg.camera_init or not hasattr(pipe, "camera_delta"):
        return None
    delta = pipe.camera_delta(latents, prompts, seeds, cfg.num_frames, paths=paths)
    if not bool(delta.abs().amax() > 0):
        return None
    return lambda x, k: pipe.inject(x, delta, k)


def step_loss(pipe, cfg: TrainConfig, sigma, sigma_next, x, x_next, old_log_prob, advantages, cond, uncond, autocast):
    """GRPO loss terms of one trained step for a micro-batch: the policy's log-prob of the stored
    SDE transition x → x_next (with CFG, as in the rollout) and the KL of its mean to the reference's."""
    import torch

    from training.flow_grpo import grpo_loss, sde_step_with_logprob

    with autocast():
        v = pipe.predict_velocity(x, sigma, cond, uncond, cfg.guidance_scale)
    _, log_prob, mean, std = sde_step_with_logprob(v, x, sigma, sigma_next, cfg.noise_level, prev_sample=x_next)
    ref_mean = None
    if cfg.kl_beta > 0:
        with torch.no_grad(), adapter_disabled(pipe.transformer), autocast():
            v_ref = pipe.predict_velocity(x, sigma, cond, uncond, cfg.guidance_scale)
        ref_mean = sde_step_with_logprob(v_ref, x, sigma, sigma_next, cfg.noise_level, prev_sample=x_next)[2]
    return grpo_loss(log_prob, old_log_prob, advantages, cfg.clip_range, mean, ref_mean, std, cfg.kl_beta)


def sample_ode(pipe, cfg: TrainConfig, prompts: list[str], seeds: list[int], sigmas, autocast) -> np.ndarray:
    """Deterministic (Euler) samples with CFG and the camera init, decoded: uint8 (B, F, H, W, 3)."""
    import torch

    from training.flow_grpo import euler_step

    cond, uncond = pipe.encode_prompt(prompts, cfg.guidance_scale)
    uncond = per_sample(uncond, len(prompts))
    x = pipe.prepare_latents(prompts, seeds, cfg.num_frames, cfg.height, cfg.width, camera_init=cfg.camera_init)
    inject = camera_injector(pipe, x, prompts, seeds, cfg)
    with torch.no_grad(), autocast():
        for k in range(len(sigmas) - 1):
            v = pipe.predict_velocity(x, float(sigmas[k]), cond, uncond, cfg.guidance_scale)
            x = euler_step(v, x, float(sigmas[k]), float(sigmas[k + 1]))
            x = inject(x, k) if inject is not None else x
        return np.asarray(pipe.decode_latents(x))
