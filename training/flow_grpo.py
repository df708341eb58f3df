"""Flow-GRPO: stochastic flow-matching steps with log-probabilities, GRPO advantages and loss, LoRA EMA.

Notation follows docs/../shared/world-r1-method.md §1–2: x_σ = (1−σ)·x0 + σ·ε, the network predicts
v = ε − x0, a schedule σ_0 > … > σ_N = 0 and step k goes σ_k → σ_{k+1} with Δ_k = σ_{k+1} − σ_k < 0.
Everything that enters a log-probability is computed in float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# ---------------------------------------------------------------------------------------------
# SDE step
# ---------------------------------------------------------------------------------------------
def _per_item(value: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) sigma as float32 of shape (B, 1, 1, ...) broadcastable against `like`."""
    value = torch.as_tensor(value, dtype=torch.float32, device=like.device)
    if value.ndim == 0:
        value = value.expand(like.shape[0])
    if value.shape != (like.shape[0],):
        raise ValueError(f"sigma must be a scalar or have shape ({like.shape[0]},), got {tuple(value.shape)}")
    return value.view(-1, *([1] * (like.ndim - 1)))


def _randn(shape: Sequence[int], generator, device) -> torch.Tensor:
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([torch.randn((1, *shape[1:]), generator=g, device=g.device).to(device) for g in generator])
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=torch.float32).to(device)


def sde_step_with_logprob(
    velocity: torch.Tensor,
    sample: torch.Tensor,
    sigma: float | torch.Tensor,
    sigma_next: float | torch.Tensor,
    noise_level: float = 0.7,
    prev_sample: torch.Tensor | None = None,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """One Flow-GRPO step σ → σ_next; returns (prev_sample, log_prob, mean, std), all float32.

    mean = x·(1 + g²Δ/(2σ)) + v·(1 + g²(1−σ)/(2σ))·Δ, std = g·sqrt(|Δ|), g = a·sqrt(σ/(1−σ)).
    Where σ = 1 the denominator uses σ_next (σ = 1 can only be the first step, so σ_next is the
    schedule's σ_1). `log_prob` has one value per batch item: the Gaussian log-density averaged
    (not summed) over all other dimensions. With `prev_sample` given, that sample is scored
    instead of drawing a new one (gradients flow through `mean` only). With noise_level = 0 the
    step is the deterministic Euler step x + Δ·v and log_prob is zero (there is no density).
    `std` has shape (B, 1, 1, ...).
    """
    if velocity.shape != sample.shape:
        raise ValueError(f"velocity {tuple(velocity.shape)} and sample {tuple(sample.shape)} differ in shape")
    x = sample.float()
    v = velocity.float()
    s = _per_item(sigma, x)
    s_next = _per_item(sigma_next, x)
    dt = s_next - s

    # σ = 1 would divide by zero; the schedule's next sigma stands in for it (Flow-GRPO's choice).
    denom = 1.0 - torch.where(s >= 1.0, s_next, s)
    g = noise_level * torch.sqrt(s / denom)
    mean = x * (1.0 + g**2 * dt / (2.0 * s)) + v * (1.0 + g**2 * (1.0 - s) / (2.0 * s)) * dt
    std = g * torch.sqrt(-dt)

    if noise_level == 0:
        out = mean if prev_sample is None else prev_sample.float()
        return out, torch.zeros(x.shape[0], device=x.device), mean, std

    if prev_sample is None:
        prev_sample = mean + std * _randn(x.shape, generator, x.device)
    prev_sample = prev_sample.detach().float()
    log_prob = -((prev_sample - mean) ** 2) / (2.0 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    return prev_sample, log_prob.mean(dim=tuple(range(1, x.ndim))), mean, std


def euler_step(velocity: torch.Tensor, sample: torch.Tensor, sigma, sigma_next) -> torch.Tensor:
    """The deterministic ODE step x + Δ·v (evaluation sampling and steps outside the SDE window)."""
    x = sample.float()
    return x + (_per_item(sigma_next, x) - _per_item(sigma, x)) * velocity.float()


# ---------------------------------------------------------------------------------------------
# Which steps are stochastic and trained
# ---------------------------------------------------------------------------------------------
def trained_steps(
    num_steps: int,
    timestep_fraction: float = 0.5,
    window_size: int = 0,
    window_range: float = 0.5,
    generator: torch.Generator | None = None,
) -> list[int]:
    """Indices of the sampling steps that run as SDE and are trained; all others are ODE steps.

    window_size = 0: the first ⌊N·timestep_fraction⌋ steps (the high-noise end; World-R1: 50 × 0.49 → 24).
    window_size > 0 (Flow-GRPO-Fast): `window_size` consecutive steps starting at a random index
    inside the first ⌊N·window_range⌋ steps, drawn from `generator` (so seeded runs repeat).
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be ≥ 1, got {num_steps}")
    if window_size <= 0:
        count = int(math.floor(num_steps * timestep_fraction + 1e-9))
        if count < 1:
            raise ValueError(f"timestep_fraction {timestep_fraction} × {num_steps} steps trains no step")
        return list(range(min(count, num_steps)))
    span = max(int(math.floor(num_steps * window_range + 1e-9)), window_size)
    if span > num_steps:
        raise ValueError(f"an SDE window of {window_size} steps does not fit in {num_steps} steps")
    start = int(torch.randint(0, span - window_size + 1, (1,), generator=generator).item())
    return list(range(start, start + window_size))


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------
@dataclass
class Advantages:
    values: torch.Tensor  # (N,) float32, clipped
    zero_std: torch.Tensor  # (N,) bool: the sample's group had (numerically) identical rewards
    zero_std_ratio: float  # fraction of groups with zero std


def compute_advantages(
    rewards: torch.Tensor | Sequence[float],
    group_ids: torch.Tensor | Sequence[int],
    global_std: bool = False,
    clip: float = 5.0,
    eps: float = 1e-4,
    zero_std_tol: float = 1e-6,
) -> Advantages:
    """GRPO advantages A_i = (r_i − mean_p)/(std_p + eps), per prompt group p, clipped to ±clip.

    global_std uses the std over all rewards instead of the group's (Flow-GRPO's option); the
    mean is always the group's. Groups whose rewards are all equal get A = 0 (with the global std
    they would be 0 anyway; with the group std they would be 0/eps noise). Stds are population stds.
    """
    r = torch.as_tensor(rewards, dtype=torch.float32).flatten()
    gid = torch.as_tensor(group_ids).flatten()
    if r.shape != gid.shape:
        raise ValueError(f"{r.numel()} rewards but {gid.numel()} group ids")
    if not torch.isfinite(r).all():
        raise ValueError("rewards contain NaN or inf")
    uniq, inverse = torch.unique(gid, return_inverse=True)
    n_groups = len(uniq)
    count = torch.zeros(n_groups).index_add_(0, inverse, torch.ones_like(r))
    mean = torch.zeros(n_groups).index_add_(0, inverse, r) / count
    var = torch.zeros(n_groups).index_add_(0, inverse, (r - mean[inverse]) ** 2) / count
    std = var.sqrt()
    group_zero = std <= zero_std_tol
    scale = r.std(unbiased=False) if global_std else std[inverse]
    adv = (r - mean[inverse]) / (scale + eps)
    zero = group_zero[inverse]
    adv = torch.where(zero, torch.zeros_like(adv), adv).clamp(-clip, clip)
    return Advantages(adv, zero, float(group_zero.float().mean()) if n_groups else 0.0)


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------
@dataclass
class LossTerms:
    loss: torch.Tensor  # policy_loss + kl_beta · kl, differentiable
    policy_loss: torch.Tensor
    kl: torch.Tensor
    approx_kl: torch.Tensor  # ½·mean(Δlogp²), detached
    clip_frac: torch.Tensor  # fraction of items with |ratio − 1| > ε, detached
    ratio_mean: torch.Tensor


def grpo_loss(
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    clip_range: float,
    mean: torch.Tensor | None = None,
    ref_mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    kl_beta: float = 0.0,
) -> LossTerms:
    """PPO-clipped GRPO loss for one trained step of a micro-batch, plus β·KL to the reference.

    ratio = exp(logπ_θ − logπ_old); L = mean_i max(−A·ratio, −A·clip(ratio, 1−ε, 1+ε)).
    KL = mean_i mean_d (μ_θ − μ_ref)²/(2 s²): the exact KL between the two Gaussian step
    distributions (same std), averaged per element like the log-prob.
    """
    log_prob = log_prob.float()
    old_log_prob = old_log_prob.detach().float()
    adv = advantages.detach().float().to(log_prob.device)
    ratio = torch.exp(log_prob - old_log_prob)
    unclipped = -adv * ratio
    clipped = -adv * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    policy_loss = torch.maximum(unclipped, clipped).mean()

    if kl_beta > 0:
        if mean is None or ref_mean is None or std is None:
            raise ValueError("kl_beta > 0 needs mean, ref_mean and std")
        dims = tuple(range(1, mean.ndim))
        kl = (((mean.float() - ref_mean.detach().float()) ** 2) / (2.0 * std.detach().float() ** 2)).mean(dim=dims).mean()
    else:
        kl = torch.zeros((), device=log_prob.device)

    with torch.no_grad():
        delta = log_prob - old_log_prob
        approx_kl = 0.5 * (delta**2).mean()
        clip_frac = ((ratio - 1.0).abs() > clip_range).float().mean()
    return LossTerms(policy_loss + kl_beta * kl, policy_loss, kl, approx_kl, clip_frac, ratio.detach().mean())


# ---------------------------------------------------------------------------------------------
# EMA of the trained (LoRA) parameters
# ---------------------------------------------------------------------------------------------
def lora_ema(params: Iterable[torch.nn.Parameter], decay_cap: float = 0.9):
    """diffusers' EMAModel over the LoRA parameters with Flow-GRPO's decay min((1+n)/(10+n), decay_cap)
    after n updates, from the first update on: the warm-up term makes early averages follow the
    fast-moving weights instead of the initial LoRA (EMAModel's own schedule copies the weights at
    its first update and starts the ramp one update later)."""
    from diffusers.training_utils import EMAModel

    class FlowGRPOEMA(EMAModel):
        def get_decay(self, optimization_step: int) -> float:
            return min(optimization_step / (9.0 + optimization_step), self.decay)

    return FlowGRPOEMA(params, decay=decay_cap)


# ---------------------------------------------------------------------------------------------
# Rollout: sample with the policy, recording what training needs
# ---------------------------------------------------------------------------------------------
@dataclass
class Rollout:
    """One batch of SDE rollouts. Step tensors are kept only for the trained steps."""

    final_latents: torch.Tensor  # (B, C, T, h, w) float32
    steps: list[int]  # indices k of the trained (stochastic) steps
    sigmas: torch.Tensor  # (N+1,) the full schedule
    latents: torch.Tensor  # (B, S, C, T, h, w) input x_k of each trained step
    next_latents: torch.Tensor  # (B, S, C, T, h, w) SDE output x_{k+1} (before any camera injection)
    log_probs: torch.Tensor  # (B, S) log π_old(x_{k+1} | x_k)


def rollout(
    velocity_fn: Callable[[torch.Tensor, float], torch.Tensor],
    latents: torch.Tensor,
    sigmas: torch.Tensor,
    steps: Sequence[int],
    noise_level: float,
    generator: torch.Generator | None = None,
    after_step: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
) -> Rollout:
    """Run the whole schedule: SDE with log-probs on `steps`, Euler elsewhere.

    velocity_fn(latents, sigma) -> v (classifier-free guidance included); after_step(latents, k)
    lets the camera-aware initialization add its stepwise delta after step k. The injection is a
    fixed function of the state, so it is not part of π(x_{k+1} | x_k): log-probs score the SDE
    output before it.
    """
    steps = sorted(set(int(k) for k in steps))
    x = latents.float()
    stored_in, stored_out, log_probs = [], [], []
    for k in range(len(sigmas) - 1):
        sigma, sigma_next = float(sigmas[k]), float(sigmas[k + 1])
        v = velocity_fn(x, sigma)
        if k in steps:
            x_next, log_prob, _, _ = sde_step_with_logprob(v, x, sigma, sigma_next, noise_level, generator=generator)
            stored_in.append(x)
            stored_out.append(x_next)
            log_probs.append(log_prob)
        else:
            x_next = euler_step(v, x, sigma, sigma_next)
        x = after_step(x_next, k) if after_step is not None else x_next
    return Rollout(
        final_latents=x,
        steps=steps,
        sigmas=sigmas.detach().float().cpu(),
        latents=torch.stack(stored_in, dim=1),
        next_latents=torch.stack(stored_out, dim=1),
        log_probs=torch.stack(log_probs, dim=1),
    )
