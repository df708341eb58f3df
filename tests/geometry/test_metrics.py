"""Metric math on hand-built inputs: Umeyama, S_traj (World-R1 formula), trajectory error, depth
consistency, PSNR/SSIM and the splat renderer."""

import numpy as np
import pytest

from studio.camera import camera_trajectory
from studio.geometry import metrics as M
from studio.geometry.fusion import render_points
from studio.geometry.projection import default_intrinsics
from studio.rewards import WORLD_R1_UNITS, trajectory_score


def _rot_y(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])


def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    R, s, t = _rot_y(30), 2.5, np.array([1.0, -2.0, 0.5])
    s_hat, R_hat, t_hat = M.umeyama_sim3(src, s * src @ R.T + t)
    assert s_hat == pytest.approx(s, rel=1e-9)
    np.testing.assert_allclose(R_hat, R, atol=1e-9)
    np.testing.assert_allclose(t_hat, t, atol=1e-9)


@pytest.mark.parametrize("moves", [["orbit_left"], ["pan_right"], ["push_in"], ["fixed"], ["move_left", "tilt_up"]])
def test_s_traj_is_one_for_a_perfect_path_at_any_scale(moves):
    target = camera_trajectory(moves, 17)
    pred = target.copy()
    pred[:, :3, 3] *= 3.7                         # odometry has its own unknown scale
    world = np.eye(4)
    world[:3, :3] = _rot_y(40)
    world[:3, 3] = [5, 1, 2]
    cmp = M.compare_trajectories(world[None] @ pred, target, unit_length=3.7)  # any first pose
    assert trajectory_score(cmp) == pytest.approx(1.0, abs=1e-9)
    assert M.trajectory_error_deg(cmp) == pytest.approx(0.0, abs=1e-6)


def test_s_traj_matches_the_formula_by_hand_for_a_translation_only_target():
    target = camera_trajectory(["push_in"], 5)       # centres 0, .15, .3, .45, .6 along z
    pred = target.copy()
    pred[:, :3, 3] = np.array([[0, 0, 0], [0, 0, 0.1], [0, 0, 0.3], [0, 0, 0.3], [0, 0, 0.6]])
    cmp = M.compare_trajectories(pred, target)
    c_p = cmp["centres_pred"]
    # With both paths on +z the Umeyama scale is the least-squares fit of centred coordinates.
    z_p, z_t = np.array([0, .1, .3, .3, .6]), np.array([0, .15, .3, .45, .6])
    zp, zt = z_p - z_p.mean(), z_t - z_t.mean()
    s = (zp * zt).sum() / (zp ** 2).sum()
    np.testing.assert_allclose(c_p[:, 2], s * z_p, atol=1e-12)
    P = 0.5 * (1 + (z_p @ z_t) / np.linalg.norm(z_p) / np.linalg.norm(z_t))  # cosine of the sequences
    E = np.exp(-abs(np.log(s * 0.6 / 0.6)))
    # Lengths enter World-R1's constants in its units (scene plane at depth 1000, ours at 1).
    u = WORLD_R1_UNITS
    M_ = np.exp(-u * np.abs(s * z_p - z_t).mean() / (2 * max(u * 0.6 / 4, 1)))
    T = 0.4 * P + 0.3 * E + 0.3 * M_
    R = 1.0  # the target does not rotate and neither does the prediction: exp(-0/5)
    assert trajectory_score(cmp) == pytest.approx(0.8 * T + 0.2 * R, abs=1e-12)


def test_wrong_direction_of_travel_is_caught_by_trajectory_error():
    push, pull = camera_trajectory(["push_in"], 17), camera_trajectory(["pull_out"], 17)
    cmp = M.compare_trajectories(pull, push)
    assert cmp["translation_direction_error_deg"] == pytest.approx(180.0)
    assert M.trajectory_error_deg(cmp) == pytest.approx(180.0)
    assert trajectory_score(cmp) < 0.7
    pan_l, pan_r = camera_trajectory(["pan_left"], 17), camera_trajectory(["pan_right"], 17)
    cmp = M.compare_trajectories(pan_r, pan_l)
    # Rotation errors grow linearly to 28 degrees: mean over frames 1..16 of 28 * f / 16.
    assert M.trajectory_error_deg(cmp) == pytest.approx(np.mean(28 * np.arange(1, 17) / 16), rel=1e-6)


def test_no_camera_clause_gives_no_target():
    assert M.target_trajectory("a red cube on a checker floor", 17) is None
    assert M.target_trajectory(None, 17) is None
    assert M.target_trajectory("A red cube. Camera orbit left.", 17).shape == (17, 4, 4)


def _plane_scene(num=4, shift=0.1):
    """Fronto-parallel textured plane at depth 3 seen by a camera trucking right."""
    h = w = 32
    K = default_intrinsics(h, w)
    c2w = np.tile(np.eye(4), (num, 1, 1))
    c2w[:, 0, 3] = shift * np.arange(num)
    depth = np.full((num, h, w), 3.0, np.float32)
    return depth, K, c2w


def test_depth_consistency_is_zero_with_true_poses_and_grows_with_wrong_ones():
    depth, K, c2w = _plane_scene()
    assert M.depth_consistency_l1(depth, K, c2w) == pytest.approx(0.0, abs=1e-9)
    wrong = c2w.copy()
    wrong[:, 2, 3] = 0.3 * np.arange(len(c2w))   # claims a push the depth maps do not show
    assert M.depth_consistency_l1(depth, K, wrong) > 0.05


def test_psnr_and_ssim_of_identical_and_noisy_images():
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(16, 16, 3)).astype(np.float32)
    mask = np.ones((16, 16), bool)
    assert M.psnr(a, a, mask) == 60.0
    assert M.ssim(a, a, mask) == pytest.approx(1.0, abs=1e-5)
    b = np.clip(a + 0.1, 0, 1)
    assert 19.0 < M.psnr(a, b, mask) < 21.5          # MSE <= 0.01 -> about 20 dB
    assert M.ssim(a, b, mask) < 0.999


def test_splat_renderer_projects_and_keeps_the_nearest_surface():
    h, w = 20, 30                                     # non-square: native aspect ratio
    K = default_intrinsics(h, w)
    # A point on the optical axis lands on the centre pixels; a nearer one in front of it wins.
    pts = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 2.0]])
    cols = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], np.float32)
    img, depth, cov = render_points(pts, cols, K, np.eye(4)[None], h, w, fill_holes=0)
    assert img.shape == (1, h, w, 3)
    ys, xs = np.nonzero(cov[0])
    assert set(ys) == {h // 2 - 1, h // 2} and set(xs) == {w // 2 - 1, w // 2}
    np.testing.assert_allclose(img[0, h // 2, w // 2], [0, 0, 1])
    assert depth[0, h // 2, w // 2] == pytest.approx(2.0)
    # Behind the camera: nothing drawn.
    img, depth, cov = render_points(-pts, cols, K, np.eye(4)[None], h, w)
    assert not cov.any()


def test_splat_blends_only_the_pixels_own_surface():
    # On a receding floor the next row is nearer: its spill-over must not replace this pixel's surface.
    h, w = 8, 12
    K = default_intrinsics(h, w)
    z_a, z_b = 2.0, 1.9                                # 5 % apart, outside the 3 % tolerance
    u_a, u_b = 5.0, 5.7                                # continuous pixel indices: A in pixel 5, B in pixel 6
    pts = np.array([[(u_a + 0.5 - K[0, 2]) / K[0, 0] * z_a, (3.5 - K[1, 2]) / K[1, 1] * z_a, z_a],
                    [(u_b + 0.5 - K[0, 2]) / K[0, 0] * z_b, (3.5 - K[1, 2]) / K[1, 1] * z_b, z_b]])
    cols = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    img, depth, cov = render_points(pts, cols, K, np.eye(4)[None], h, w, fill_holes=0)
    np.testing.assert_allclose(img[0, 3, 5], [1, 0, 0], atol=1e-6)   # B spills 30 % onto pixel 5, A keeps it
    np.testing.assert_allclose(img[0, 3, 6], [0, 1, 0], atol=1e-6)
    assert depth[0, 3, 5] == pytest.approx(z_a) and depth[0, 3, 6] == pytest.approx(z_b)


@pytest.fixture(scope="module")
def fixed_clip():
    from studio.tinyworld import render_clip

    return render_clip("a red cube and a blue sphere on a checker floor. The camera remains fixed.", seed=0)


def test_leave_one_out_render_reproduces_a_still_clip_from_the_other_frames(fixed_clip):
    clip = fixed_clip
    frames = clip.frames.copy()
    frames[8] = 255                                    # frame 8 white: its own pixels must not come back
    images, covered = M.render_leave_one_out(frames, clip.depth, clip.K, clip.c2w_relative)
    judged = covered[8] & (clip.depth[8] > 0)
    assert judged.mean() > 0.5
    scores = M.recon_scores(clip.frames[8:9], images[8:9], covered[8:9], clip.depth[8:9])
    assert scores["recon_psnr"] >= 59.0                 # exact: every other frame shows the same view
    assert M.psnr(images[8], np.ones_like(images[8]), judged) < 10
    assert M.leave_one_out_pairs(17)[:4] == [(0, 1), (0, 2), (0, 4), (0, 8)]
    assert all(t != s for t, s in M.leave_one_out_pairs(17))


def _roll(deg):
    a = np.deg2rad(deg)
    return np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])


@pytest.mark.parametrize("moves", [["orbit_left"], ["push_in"], ["pan_right"], ["fixed"], ["move_left", "tilt_up"]])
def test_prompt_paths_are_smooth(moves):
    sm = M.trajectory_smoothness(camera_trajectory(moves, 17))
    assert sm["trajectory_smoothness"] > 0.99 and sm["trajectory_jerk_deg"] < 1e-6


def test_smoothness_of_a_shaking_camera_matches_the_jerk_by_hand():
    # Roll alternating +1, -1 degree: steps of -2, +2, -2 ... degrees, whose second difference is 8 degrees.
    c2w = np.tile(np.eye(4), (9, 1, 1))
    c2w[:, :3, :3] = [_roll(1.0 if k % 2 == 0 else -1.0) for k in range(9)]
    sm = M.trajectory_smoothness(c2w)
    assert sm["trajectory_jerk_deg"] == pytest.approx(8.0, rel=1e-6)
    assert sm["trajectory_jerk_rel"] == pytest.approx(0.0, abs=1e-12)
    assert sm["trajectory_smoothness"] == pytest.approx(np.exp(-8.0 / M.JERK_ROT_DEG), rel=1e-6)
    # Centres alternating 0, d along x: third difference 4 d, in units of the scene depth.
    c2w = np.tile(np.eye(4), (9, 1, 1))
    c2w[1::2, 0, 3] = 0.03
    sm = M.trajectory_smoothness(c2w, unit_length=3.0)
    assert sm["trajectory_jerk_rel"] == pytest.approx(4 * 0.03 / 3.0, rel=1e-9)
    assert sm["trajectory_smoothness"] == pytest.approx(np.exp(-0.04 / M.JERK_REL), rel=1e-6)
    assert M.trajectory_smoothness(c2w[:3])["trajectory_smoothness"] is None   # needs 4 frames


def test_move_segments_follow_the_layout_of_camera_trajectory():
    assert M.move_segments(1, 17) == [(0, 16)]
    assert M.move_segments(2, 17) == [(0, 8), (8, 16)]       # frame 8 is where the first move ends
    assert M.move_segments(3, 17) == [(0, 6), (5, 11), (10, 16)]
    with pytest.raises(ValueError):
        M.move_segments(0, 17)


def test_move_trajectory_errors_say_which_move_of_a_compound_clause_was_missed():
    prompt = "Camera orbit left, then push in. A red cube."
    target = camera_trajectory(["orbit_left", "push_in"], 17)
    assert M.move_trajectory_errors(target, prompt) == pytest.approx([0.0, 0.0], abs=1e-6)
    # A clip that orbits as asked but then pulls out: the first move is right, the second is 180 degrees off.
    wrong_second = camera_trajectory(["orbit_left", "pull_out"], 17)
    first, second = M.move_trajectory_errors(wrong_second, prompt)
    assert first == pytest.approx(0.0, abs=1e-6)
    assert second == pytest.approx(180.0, abs=1e-6)
    # The whole-clip error mixes both moves and sits in between.
    whole = M.trajectory_error_deg(M.compare_trajectories(wrong_second, target))
    assert 0.0 < whole < 180.0
    assert M.move_trajectory_errors(target, "A red cube.") is None
