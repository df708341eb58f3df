import math

import pytest
import torch

from training.flow_grpo import (
    compute_advantages,
    euler_step,
    grpo_loss,
    lora_ema,
    rollout,
    sde_step_with_logprob,
    trained_steps,
)


def _inputs(seed=0, shape=(3, 4, 2, 5, 5)):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g), torch.randn(shape, generator=g)


def test_mean_and_std_follow_the_formulas():
    v, x = _inputs()
    a, sigma, sigma_next = 0.7, 0.6, 0.45
    _, _, mean, std = sde_step_with_logprob(v, x, sigma, sigma_next, a)
    dt = sigma_next - sigma
    g = a * math.sqrt(sigma / (1 - sigma))
    expected = x * (1 + g**2 * dt / (2 * sigma)) + v * (1 + g**2 * (1 - sigma) / (2 * sigma)) * dt
    torch.testing.assert_close(mean, expected)
    assert std.shape == (3, 1, 1, 1, 1)
    torch.testing.assert_close(std.flatten(), torch.full((3,), g * math.sqrt(-dt)))


def test_log_prob_equals_normal_mean_over_elements():
    v, x = _inputs(1)
    prev, log_prob, mean, std = sde_step_with_logprob(v, x, 0.8, 0.7, 0.7, generator=torch.Generator().manual_seed(3))
    ref = torch.distributions.Normal(mean, std.expand_as(mean)).log_prob(prev).mean(dim=(1, 2, 3, 4))
    assert log_prob.shape == (3,) and log_prob.dtype == torch.float32
    torch.testing.assert_close(log_prob, ref)


def test_scoring_a_given_sample_and_gradient_through_mean():
    v, x = _inputs(2)
    prev, lp, _, _ = sde_step_with_logprob(v, x, 0.5, 0.4, generator=torch.Generator().manual_seed(0))
    v2 = v.clone().requires_grad_(True)
    prev2, lp2, _, _ = sde_step_with_logprob(v2, x, 0.5, 0.4, prev_sample=prev)
    torch.testing.assert_close(prev2, prev)
    torch.testing.assert_close(lp2, lp)
    lp2.sum().backward()
    assert v2.grad is not None and v2.grad.abs().sum() > 0


def test_per_item_sigmas_and_low_precision_inputs():
    v, x = _inputs(3)
    sig = torch.tensor([0.9, 0.5, 0.2])
    nxt = sig - 0.1
    prev, lp, mean, _ = sde_step_with_logprob(v.bfloat16(), x.bfloat16(), sig, nxt, generator=torch.Generator().manual_seed(0))
    assert prev.dtype == lp.dtype == mean.dtype == torch.float32
    for i in range(3):
        _, _, m_i, _ = sde_step_with_logprob(v[i : i + 1].bfloat16(), x[i : i + 1].bfloat16(), float(sig[i]), float(nxt[i]))
        torch.testing.assert_close(mean[i : i + 1], m_i)


def test_noise_level_zero_is_the_euler_step():
    v, x = _inputs(4)
    prev, lp, mean, std = sde_step_with_logprob(v, x, 0.7, 0.55, noise_level=0.0)
    dt = torch.tensor(0.55) - torch.tensor(0.7)  # the step size as float32, like the step computes it
    assert torch.equal(prev, x + dt * v)
    assert torch.equal(prev, euler_step(v, x, 0.7, 0.55))
    assert torch.equal(lp, torch.zeros(3)) and torch.equal(std, torch.zeros_like(std))


def test_sigma_one_uses_the_next_sigma_and_stays_finite():
    v, x = _inputs(5)
    prev, lp, mean, std = sde_step_with_logprob(v, x, 1.0, 0.9, 0.7, generator=torch.Generator().manual_seed(0))
    g = 0.7 * math.sqrt(1.0 / (1 - 0.9))
    torch.testing.assert_close(std.flatten(), torch.full((3,), g * math.sqrt(0.1)))
    assert torch.isfinite(prev).all() and torch.isfinite(lp).all()


def test_generator_makes_draws_repeat():
    v, x = _inputs(6)
    a = sde_step_with_logprob(v, x, 0.5, 0.4, generator=torch.Generator().manual_seed(7))[0]
    b = sde_step_with_logprob(v, x, 0.5, 0.4, generator=torch.Generator().manual_seed(7))[0]
    c = sde_step_with_logprob(v, x, 0.5, 0.4, generator=[torch.Generator().manual_seed(i) for i in range(3)])[0]
    assert torch.equal(a, b) and not torch.equal(a, c)


def _gaussian_velocity(m, s0):
    """Exact v(x, σ) = E[ε − x0 | x_σ = x] for x0 ~ N(m, s0²), x_σ = (1−σ)x0 + σε."""

    def velocity(x, sigma):
        var = (1 - sigma) ** 2 * s0**2 + sigma**2
        centred = x - (1 - sigma) * m
        return (sigma / var) * centred - (m + (1 - sigma) * s0**2 / var * centred)

    return velocity


@pytest.mark.parametrize("m, s0", [(0.0, 0.5), (1.0, 2.0)])
def test_sde_path_has_the_ode_marginals(m, s0):
    # Both samplers carry O(1/N) discretisation error (the SDE's first step from σ = 1 adds noise of
    # std a whatever N is); with 200 steps both are within 3 % of the exact marginal.
    n_steps, n = 200, 40_000
    sigmas = torch.linspace(1.0, 0.0, n_steps + 1)
    velocity = _gaussian_velocity(m, s0)
    start = torch.randn(n, 1, generator=torch.Generator().manual_seed(0))
    x_sde, x_ode = start.clone(), start.clone()
    gen = torch.Generator().manual_seed(1)
    for k in range(n_steps):
        s, s_next = float(sigmas[k]), float(sigmas[k + 1])
        x_sde = sde_step_with_logprob(velocity(x_sde, s), x_sde, s, s_next, 0.7, generator=gen)[0]
        x_ode = euler_step(velocity(x_ode, s), x_ode, s, s_next)
        if (k + 1) % 50 == 0:
            sig = float(sigmas[k + 1])
            mean_true, std_true = (1 - sig) * m, math.sqrt((1 - sig) ** 2 * s0**2 + sig**2)
            for x in (x_sde, x_ode):
                assert abs(float(x.mean()) - mean_true) < 0.03 * max(std_true, 1)
                assert abs(float(x.std()) / std_true - 1) < 0.03
    # the SDE explores: its endpoints are not a function of the start noise like the ODE's
    assert float(torch.corrcoef(torch.stack([x_sde[:, 0], x_ode[:, 0]]))[0, 1]) < 0.9


def test_trained_steps_fraction_and_fast_window():
    assert trained_steps(50, 0.49) == list(range(24))
    assert trained_steps(10, 0.5) == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError):
        trained_steps(10, 0.05)
    seen = set()
    for s in range(30):
        w = trained_steps(20, window_size=3, window_range=0.5, generator=torch.Generator().manual_seed(s))
        assert len(w) == 3 and w == list(range(w[0], w[0] + 3)) and 0 <= w[0] and w[-1] < 10
        seen.add(w[0])
    assert len(seen) > 3
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert trained_steps(20, window_size=3, generator=g1) == trained_steps(20, window_size=3, generator=g2)


def test_rollout_records_trained_steps_and_is_euler_elsewhere():
    velocity = _gaussian_velocity(0.3, 0.5)
    sigmas = torch.linspace(1.0, 0.0, 7)
    x0 = torch.randn(4, 2, 3, generator=torch.Generator().manual_seed(0))
    ro = rollout(velocity, x0, sigmas, [1, 2], 0.7, torch.Generator().manual_seed(1))
    assert ro.latents.shape == (4, 2, 2, 3) and ro.log_probs.shape == (4, 2)
    x = x0
    for k in range(6):
        v = velocity(x, float(sigmas[k]))
        if k in (1, 2):
            j = k - 1
            torch.testing.assert_close(ro.latents[:, j], x)
            _, lp, _, _ = sde_step_with_logprob(v, x, float(sigmas[k]), float(sigmas[k + 1]), 0.7, prev_sample=ro.next_latents[:, j])
            torch.testing.assert_close(lp, ro.log_probs[:, j])
            x = ro.next_latents[:, j]
        else:
            x = euler_step(v, x, float(sigmas[k]), float(sigmas[k + 1]))
    torch.testing.assert_close(x, ro.final_latents)


def test_advantages_per_prompt_group():
    rewards = [1.0, 3.0, 10.0, 10.0, 0.0, 4.0, 8.0, 0.0]
    groups = [0, 0, 1, 1, 2, 2, 2, 2]
    adv = compute_advantages(rewards, groups)
    torch.testing.assert_close(adv.values[:2], torch.tensor([-1.0, 1.0]) / (1.0 + 1e-4) * 1.0)
    assert adv.values[2] == 0 and adv.values[3] == 0 and adv.zero_std[2] and not adv.zero_std[0]
    g2 = torch.tensor([0.0, 4.0, 8.0, 0.0])
    torch.testing.assert_close(adv.values[4:], (g2 - g2.mean()) / (g2.std(unbiased=False) + 1e-4))
    assert adv.zero_std_ratio == pytest.approx(1 / 3)
    # each group's advantages sum to zero
    for g in (0, 1, 2):
        assert abs(float(adv.values[torch.tensor(groups) == g].sum())) < 1e-5


def test_advantages_global_std_and_clip():
    rewards = torch.tensor([0.0, 1.0, 5.0, 7.0])
    groups = [0, 0, 1, 1]
    adv = compute_advantages(rewards, groups, global_std=True)
    gstd = float(rewards.std(unbiased=False))
    torch.testing.assert_close(adv.values, torch.tensor([-0.5, 0.5, -1.0, 1.0]) / (gstd + 1e-4))
    big = compute_advantages([0.0] * 39 + [1.0], [0] * 40)  # the outlier's A = sqrt(39) > 5
    assert float(big.values.max()) == 5.0
    with pytest.raises(ValueError):
        compute_advantages([float("nan"), 1.0], [0, 0])


def test_ppo_clip_stops_gradients_outside_the_trust_region():
    eps = 0.1
    old = torch.zeros(4)
    # log-ratios: inside, above 1+ε, below 1−ε, above 1+ε
    delta = torch.tensor([0.05, 0.3, -0.3, 0.3], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    terms = grpo_loss(old + delta, old, adv, eps)
    terms.loss.backward()
    ratio = torch.exp(delta.detach())
    # inside: d/dδ of −A·e^δ / N; A>0 above 1+ε and A<0 below 1−ε are clipped (zero gradient);
    # A<0 above 1+ε is not clipped (the pessimistic branch is the unclipped one)
    expected = torch.tensor([-1.0 * ratio[0], 0.0, 0.0, 1.0 * ratio[3]]) / 4
    torch.testing.assert_close(delta.grad, expected)
    assert float(terms.clip_frac) == pytest.approx(0.75)
    assert float(terms.approx_kl) == pytest.approx(0.5 * float((delta.detach() ** 2).mean()))


class ToyPolicy(torch.nn.Module):
    """v = W·x + b on 6-d states: small enough to check gradients by hand."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(6, 6)

    def forward(self, x):
        return self.lin(x)


def test_kl_gradient_on_a_toy_policy():
    torch.manual_seed(0)
    policy, ref = ToyPolicy(), ToyPolicy()
    ref.load_state_dict(policy.state_dict())
    x = torch.randn(5, 6)
    sigma, sigma_next = 0.6, 0.5
    # identical policies: KL 0 with zero gradient
    _, _, mean, std = sde_step_with_logprob(policy(x), x, sigma, sigma_next)
    ref_mean = sde_step_with_logprob(ref(x), x, sigma, sigma_next)[2]
    lp = torch.zeros(5, requires_grad=True)
    terms = grpo_loss(lp, lp.detach(), torch.zeros(5), 1e-3, mean, ref_mean, std, kl_beta=1.0)
    terms.loss.backward()
    assert float(terms.kl.detach()) == 0.0 and all(float(p.grad.abs().max()) == 0 for p in policy.parameters())
    # perturbed: gradient of KL w.r.t. the mean is (μθ − μref)/(s²·D·B)
    with torch.no_grad():
        policy.lin.bias.add_(0.3)
    _, _, mean, std = sde_step_with_logprob(policy(x), x, sigma, sigma_next)
    mean.retain_grad()
    terms = grpo_loss(lp.detach(), lp.detach(), torch.zeros(5), 1e-3, mean, ref_mean.detach(), std, kl_beta=1.0)
    terms.loss.backward()
    expected = (mean - ref_mean).detach() / (std**2) / (6 * 5)
    torch.testing.assert_close(mean.grad, expected)
    kl_by_hand = (((mean - ref_mean) ** 2) / (2 * std**2)).mean()
    torch.testing.assert_close(terms.kl, kl_by_hand.detach())


def test_policy_gradient_moves_log_prob_toward_positive_advantage():
    torch.manual_seed(1)
    policy = ToyPolicy()
    x = torch.randn(8, 6)
    with torch.no_grad():
        prev, old_lp, _, _ = sde_step_with_logprob(policy(x), x, 0.6, 0.5, generator=torch.Generator().manual_seed(0))
    adv = torch.tensor([1.0, -1.0] * 4)
    opt = torch.optim.SGD(policy.parameters(), lr=1e-2)
    _, lp, _, _ = sde_step_with_logprob(policy(x), x, 0.6, 0.5, prev_sample=prev)
    grpo_loss(lp, old_lp, adv, clip_range=1.0).loss.backward()
    opt.step()
    with torch.no_grad():
        new_lp = sde_step_with_logprob(policy(x), x, 0.6, 0.5, prev_sample=prev)[1]
    change = new_lp - old_lp
    assert float((change * adv).sum()) > 0


def test_ema_decay_schedule_and_swap():
    from training.policy import ema_weights

    p = torch.nn.Parameter(torch.zeros(3))
    ema = lora_ema([p], decay_cap=0.9)
    expected = torch.zeros(3)
    for n in range(30):
        with torch.no_grad():
            p.add_(1.0)
        d = min((1 + n) / (10 + n), 0.9)  # 0.1 at the first update
        expected = d * expected + (1 - d) * p.detach()
        ema.step([p])
    torch.testing.assert_close(ema.shadow_params[0], expected)
    raw = p.detach().clone()
    with ema_weights(ema, [p]):
        torch.testing.assert_close(p.detach(), expected)
    assert torch.equal(p.detach(), raw)
    other = lora_ema([torch.nn.Parameter(torch.zeros(3))])
    other.load_state_dict(ema.state_dict())
    assert other.optimization_step == 30 and torch.equal(other.shadow_params[0], ema.shadow_params[0])
