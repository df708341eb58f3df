"""Camera-aware latent initialization (studio.noise_warp): the statistics method doc §5 promises."""

import numpy as np
import pytest
import torch

from studio.camera import camera_trajectory
from studio.noise_warp import (
    WarpConfig,
    bin_noise,
    blend_noise,
    camera_delta,
    injection_weights,
    inject,
    intrinsics,
    plane_flow,
    upsample_noise,
    warp_noise_frame,
    warped_noise,
)

C, T, H, W = 16, 5, 16, 16
MOVES = ["move_left", "move_right", "push_in", "pull_out", "orbit_left", "pan_right", "tilt_up"]


def _warped(move: str, seed: int = 0, upscale: int = 4) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    fresh = rng.standard_normal((C, T, H, W))
    c2w = camera_trajectory([move], 17, focus=1.0)
    return fresh, warped_noise(fresh, c2w, rng, 4, WarpConfig(upscale=upscale))


@pytest.mark.parametrize("move", MOVES)
def test_warped_noise_keeps_standard_normal_marginals(move):
    _, w = _warped(move)
    assert abs(w.mean()) < 0.03
    assert abs(w.std() - 1.0) < 0.03
    # Every frame, not just the clip as a whole.
    assert np.all(np.abs(w.std(axis=(0, 2, 3)) - 1.0) < 0.06)


@pytest.mark.parametrize("move", MOVES)
def test_warped_frames_have_no_spatial_correlation(move):
    _, w = _warped(move)
    for t in range(1, T):
        f = w[:, t]
        for a, b in ((f[:, :, :-1], f[:, :, 1:]), (f[:, :-1, :], f[:, 1:, :])):
            assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.06


def test_first_frame_is_the_seed_noise():
    fresh, w = _warped("orbit_left")
    np.testing.assert_allclose(w[:, 0], fresh[:, 0], atol=1e-12)


def test_upsample_then_bin_is_exact_and_standard_normal():
    rng = np.random.default_rng(1)
    z = rng.standard_normal((4, 8, 8))
    fine = upsample_noise(z, 8, rng)
    np.testing.assert_allclose(bin_noise(fine, 8), z, atol=1e-12)
    assert abs(fine.std() - 1.0) < 0.02
    assert abs(np.corrcoef(fine[:, :, :-1].ravel(), fine[:, :, 1:].ravel())[0, 1]) < 0.03


def test_pure_shift_moves_noise_along_the_flow():
    """A whole-pixel shift carries every pixel to its new place exactly (new strip is fresh)."""
    rng = np.random.default_rng(2)
    noise = rng.standard_normal((3, 32, 32))
    flow = np.zeros((2, 32, 32))
    flow[0] = 3.0  # everything moves 3 px right
    out = warp_noise_frame(noise, flow, rng)
    np.testing.assert_allclose(out[:, :, 3:], noise[:, :, :-3], atol=1e-12)


@pytest.mark.parametrize("move", ["move_left", "move_right", "pan_left", "pan_right", "tilt_down"])
def test_consecutive_frames_correlate_along_the_flow(move):
    """Warped frame k matches frame k-1 shifted by the flow far better than unshifted or chance."""
    rng = np.random.default_rng(3)

    fresh = rng.standard_normal((C, T, H, W))
    c2w = camera_trajectory([move], 17, focus=1.0)
    # Warp on the latent grid itself (upscale 1) so the flow can be applied to the result directly.
    w = warped_noise(fresh, c2w, rng, 4, WarpConfig(upscale=1))
    K = intrinsics(H, W, 60.0)
    poses = c2w[[0, 4, 8, 12, 16]]
    along, unshifted = [], []
    for k in range(1, T):
        flow = plane_flow(poses[k - 1], poses[k], K, H, W, 1.0)
        v, u = np.mgrid[0:H, 0:W]
        su, sv = np.rint(u - flow[0]).astype(int), np.rint(v - flow[1]).astype(int)
        ok = (su >= 0) & (su < W) & (sv >= 0) & (sv < H)
        along.append(np.corrcoef(w[:, k][:, ok].ravel(), w[:, k - 1][:, sv[ok], su[ok]].ravel())[0, 1])
        unshifted.append(np.corrcoef(w[:, k].ravel(), w[:, k - 1].ravel())[0, 1])
    assert min(along) > 0.5
    assert np.mean(along) > np.mean(unshifted) + 0.3



def test_push_in_expands_from_the_centre():
    rng = np.random.default_rng(4)
    K = intrinsics(32, 32, 60.0)
    c2w = camera_trajectory(["push_in"], 17, focus=1.0)
    flow = plane_flow(c2w[0], c2w[4], K, 32, 32, 1.0)
    assert flow[0, 16, 28] > 0 and flow[0, 16, 3] < 0  # right side moves right, left side left
    assert abs(flow[0, 16, 16]) < 0.6
    del rng


def test_flow_cap():
    K = intrinsics(16, 16, 60.0)
    c2w = camera_trajectory(["pan_right"], 5, focus=1.0)
    flow = plane_flow(c2w[0], c2w[4], K, 16, 16, 1.0, max_flow_px=1.5)
    assert np.nanmax(np.hypot(flow[0], flow[1])) <= 1.5 + 1e-9


def test_blend_is_variance_preserving():
    rng = np.random.default_rng(5)
    a, b = rng.standard_normal((2, 200_000))
    x = blend_noise(a, b, 0.35)
    assert abs(x.std() - 1.0) < 0.01


def test_injection_weights_match_the_method():
    np.testing.assert_allclose(injection_weights(WarpConfig()), np.linspace(1, 0.1, 8) / 4.4)


def test_no_camera_clause_gives_plain_noise():
    fresh = torch.randn(2, C, T, H, W, generator=torch.Generator().manual_seed(0))
    delta = camera_delta(fresh, [None, None], [0, 1])
    assert torch.count_nonzero(delta) == 0
    for step in range(8):
        assert torch.equal(inject(fresh, delta, step), fresh)


def test_camera_delta_is_normalised_lowpassed_and_reproducible():
    fresh = torch.randn(2, C, T, H, W, generator=torch.Generator().manual_seed(0))
    c2w = camera_trajectory(["orbit_left"], 17, focus=1.0)
    d1 = camera_delta(fresh, [c2w, None], [7, 8])
    d2 = camera_delta(fresh, [c2w, None], [7, 8])
    assert torch.equal(d1, d2)
    assert abs(d1[0].std().item() - 1.0) < 1e-3
    assert torch.count_nonzero(d1[1]) == 0
    # Low-passed: neighbours strongly correlated, unlike white noise.
    x = d1[0, :, 1:]
    r = torch.corrcoef(torch.stack([x[..., :-1].flatten(), x[..., 1:].flatten()]))[0, 1]
    assert r > 0.5


def test_inject_restores_mean_and_std_and_stops_after_the_first_steps():
    x = torch.randn(2, C, T, H, W, generator=torch.Generator().manual_seed(1)) * 1.7 + 0.2
    delta = torch.randn_like(x)
    y = inject(x, delta, 0)
    assert not torch.equal(x, y)
    dims = (1, 2, 3, 4)
    torch.testing.assert_close(y.mean(dim=dims), x.mean(dim=dims), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=dims), x.std(dim=dims), atol=1e-4, rtol=1e-4)
    assert torch.equal(inject(x, delta, 8), x)
