"""Depth estimators: registry, ground truth, Depth Anything (tiny random model), TinyWorld net errors."""

import os

import numpy as np
import pytest

from studio.geometry.depth import DEPTH_ANYTHING_DEFAULT, get_estimator

os.environ["HF_HUB_OFFLINE"] = "1"


def _frames(num=3, h=28, w=42):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(num, h, w, 3), dtype=np.uint8)


def test_unknown_estimator_names_the_choices():
    with pytest.raises(ValueError, match="depth-anything.*ground-truth.*tinyworld"):
        get_estimator("midas")


def test_ground_truth_passes_depth_through_with_sky_at_zero_confidence():
    frames = _frames()
    depth = np.full(frames.shape[:3], 2.0, np.float32)
    depth[:, :5] = 0.0
    res = get_estimator("ground-truth", depth=depth).estimate(frames)
    np.testing.assert_array_equal(res.depth, depth)
    assert res.K[0, 0] == pytest.approx(0.5 * 42 / np.tan(np.deg2rad(30)))   # 60 degree horizontal FOV
    assert res.K[0, 2] == 21 and res.K[1, 2] == 14
    assert res.confidence[:, :5].max() == 0 and res.confidence[:, 5:].min() == 1
    with pytest.raises(ValueError, match="shape"):
        get_estimator("ground-truth", depth=depth[:, :-1]).estimate(frames)


def test_depth_anything_without_weights_fails_at_once_naming_the_checkpoint(tmp_path):
    with pytest.raises(RuntimeError) as e:
        get_estimator("depth-anything")
    assert DEPTH_ANYTHING_DEFAULT in str(e.value) and "download" in str(e.value)
    with pytest.raises(RuntimeError, match="not available offline"):
        get_estimator("depth-anything", model=str(tmp_path / "missing"))


@pytest.fixture(scope="module")
def tiny_depth_anything(tmp_path_factory):
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    torch.manual_seed(0)
    backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                            patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
                            reshape_hidden_states=False)
    cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                              fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="relative")
    model = DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():  # a random head ends in ReLU at ~0: lift it so disparities are positive and varied
        model.head.conv3.bias.fill_(1.0)
    path = tmp_path_factory.mktemp("da") / "tiny-depth-anything"
    model.save_pretrained(path)
    return path


def test_depth_anything_runs_a_local_model_on_one_common_scale(tiny_depth_anything):
    est = get_estimator("depth-anything", model=str(tiny_depth_anything), input_size=56, median_depth=4.0)
    frames = _frames(num=3, h=30, w=40)
    res = est.estimate(frames)
    assert res.depth.shape == (3, 30, 40) and res.depth.dtype == np.float32
    assert res.confidence.shape == (3, 30, 40)
    assert np.isfinite(res.depth).all() and (res.depth >= 0).all()
    assert np.median(res.depth[0][res.depth[0] > 0]) == pytest.approx(4.0, rel=1e-5)
    assert est._input_hw(30, 40) == (56, 70)                 # multiples of 14, aspect kept
    np.testing.assert_array_equal(res.depth, est.estimate(frames).depth)   # deterministic
    with pytest.raises(ValueError, match="multiple of 14"):
        get_estimator("depth-anything", model=str(tiny_depth_anything), input_size=50)


def test_tinyworld_estimator_without_weights_says_how_to_get_them(tmp_path):
    with pytest.raises(RuntimeError, match="no weights.*pretrain_depth"):
        get_estimator("tinyworld", path=tmp_path)


@pytest.fixture(scope="module")
def tiny_tinyworld_net(tmp_path_factory):
    """A small untrained TinyWorld depth U-Net saved the way assets/depth/ is."""
    import torch

    from studio.geometry.depth_net import DepthNetConfig, DepthUNet, save_depth_net

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tinyworld-depth")
    save_depth_net(DepthUNet(DepthNetConfig(channels=(4, 8))).eval(), path)
    return path


def test_tinyworld_estimator_runs_one_torch_thread_and_restores_the_setting(tiny_tinyworld_net):
    import torch

    est = get_estimator("tinyworld", path=tiny_tinyworld_net)
    assert est.num_threads == 1
    before = torch.get_num_threads()
    frames = _frames(num=2, h=16, w=24)
    res = est.estimate(frames)
    assert torch.get_num_threads() == before
    assert res.depth.shape == (2, 16, 24) and res.depth.dtype == np.float32 and (res.depth >= 0).all()
    np.testing.assert_array_equal(res.confidence, (res.depth > 0).astype(np.float32))
    np.testing.assert_array_equal(res.depth, est.estimate(frames).depth)


def test_analyze_runs_end_to_end_with_the_default_estimator(tiny_tinyworld_net):
    from studio.geometry import analyze
    from studio.tinyworld import render_clip

    clip = render_clip("a red cube on a checker floor. Camera pan left.", num_frames=5, seed=0)
    a = analyze(clip.frames, clip.prompt, estimator_kwargs={"path": str(tiny_tinyworld_net)}, clip_scorer=None)
    assert a.estimator == "tinyworld" and a.depth.shape == (5, 64, 64) and a.c2w.shape == (5, 4, 4)
    assert {"depth_consistency_l1", "recon_psnr", "recon_ssim", "trajectory_error_deg", "clip_score",
            "trajectory_smoothness"} <= set(a.metrics)
    assert a.trajectory is not None and a.trajectory["num_frames"] == 5
    assert set(a.cpu_timings) == set(a.timings)
