import threading
from types import SimpleNamespace

import numpy as np
import pytest

from studio.rewards import (
    FailedAnalysis,
    RewardSet,
    as_frames,
    combine,
    normalise,
    r_gen,
    s_meta,
    s_recon,
    s_traj,
)
from training.config import TrainConfig
from training.rewards import RewardPool, world_r1_rewards


def clip(value=128, frames=3):
    return np.full((frames, 8, 8, 3), value, np.uint8)


def analysis(**metrics):
    return SimpleNamespace(metrics=metrics)


GOOD = analysis(recon_psnr=35.0, recon_ssim=1.0, depth_consistency_l1=0.0, s_traj=1.0, clip_score=0.9)
BAD = analysis(recon_psnr=8.0, recon_ssim=0.0, depth_consistency_l1=2.0, s_traj=-0.2, clip_score=0.1)


def test_components_read_the_analysis_and_stay_in_unit_range():
    prompts, clips = ["a", "b"], [clip(), clip()]
    ctx = {"analyses": [GOOD, BAD]}
    assert s_recon(prompts, clips, **ctx) == [1.0, 0.0]
    assert s_meta(prompts, clips, **ctx) == [0.0, 0.0]  # no reconstruction to render from
    assert s_traj(prompts, clips, **ctx) == [1.0, 0.0]
    assert r_gen(prompts, clips, **ctx) == [0.9, 0.1]
    mid = analysis(recon_psnr=22.5, recon_ssim=0.5)
    assert s_recon(["a"], [clip()], analyses=[mid]) == [pytest.approx(0.5)]
    half_covered = analysis(recon_psnr=35.0, recon_ssim=1.0, recon_coverage=0.5)
    assert s_recon(["a"], [clip()], analyses=[half_covered]) == [pytest.approx(0.5)]
    assert s_meta(["a"], [clip()], analyses=[analysis(s_meta=0.7)]) == [0.7]
    failed = FailedAnalysis("no valid depth")
    assert [f(["a"], [clip()], analyses=[failed])[0] for f in (s_recon, s_meta, s_traj)] == [0.0, 0.0, 0.0]
    assert s_traj(["a"], [clip()], analyses=[analysis()]) == [0.0]  # no camera phrase → 0


def test_r3d_is_switched_off_per_item_without_analysing_those_clips():
    analysed = []

    def fake_3d(prompts, clips, **ctx):
        return [1.0 if a is not None else 0.5 for a in ctx["analyses"]]

    reward = RewardSet(
        functions={"s_recon": fake_3d, "s_meta": fake_3d, "s_traj": fake_3d, "r_gen": lambda p, c, **_: [0.25] * len(c)},
        weights={"s_recon": 1.0, "s_meta": 1.0, "s_traj": 2.0, "r_gen": 4.0},
        context={"analyses": [GOOD, None, GOOD]},
    )
    out = reward(["a", "b", "c"], [clip()] * 3, use_3d=[True, False, True])
    assert out["s_traj"].tolist() == [1.0, 0.0, 1.0]
    assert out["r_3d"].tolist() == [3.0, 0.0, 3.0]
    total = reward.total(out, use_3d=[True, False, True])
    assert total.tolist() == [1 + 1 + 2 + 1.0, 1.0, 5.0]


def test_reward_set_runs_the_geometry_analysis_once_per_rigid_clip(monkeypatch):
    import sys
    import types

    calls = []

    def analyze(frames, prompt, **kw):
        calls.append(prompt)
        return GOOD

    class FakeScorer:
        def score(self, frames, text):
            return 0.5

    monkeypatch.setitem(sys.modules, "studio.geometry", types.SimpleNamespace(analyze=analyze))
    monkeypatch.setitem(sys.modules, "studio.scoring", types.SimpleNamespace(load_scorer=lambda name: FakeScorer()))
    monkeypatch.setattr("studio.rewards._scorers", {})
    cfg = TrainConfig()
    reward = world_r1_rewards(cfg)
    out = reward(["rigid", "fluid"], [clip(), clip()], use_3d=[True, False])
    assert calls == ["rigid"]
    assert out["r_3d"].tolist() == [2.0, 0.0]  # s_meta 0: the fake analysis has no point cloud to render
    assert out["r_gen"].tolist() == [0.9, 0.5]  # rigid: the analysis's CLIP score; fluid: the scorer


def test_group_and_batch_normalisation():
    values = np.array([1.0, 3.0, 5.0, 5.0])
    groups = np.array([0, 0, 1, 1])
    assert normalise(values, groups, "group").tolist() == [-1.0, 1.0, 0.0, 0.0]
    b = normalise(values, groups, "batch")
    assert abs(b.mean()) < 1e-12 and abs(b.std() - 1) < 1e-12
    assert normalise(values, groups, "none").tolist() == values.tolist()
    comps = {"s_traj": [1.0, 3.0, 5.0, 5.0], "r_gen": [0.0, 1.0, 0.0, 1.0]}
    total = combine(comps, {"s_traj": 1.0, "r_gen": 2.0}, use_3d=[True, True, False, False], group_ids=groups, norm="group")
    assert total.tolist() == [-1 - 2, 1 + 2, -2, 2]


def test_clip_validation():
    with pytest.raises(ValueError, match="uint8"):
        as_frames(np.zeros((2, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"\(F, H, W, 3\)"):
        as_frames(np.zeros((4, 4, 3), np.uint8))
    assert as_frames(SimpleNamespace(frames=clip())).shape == (3, 8, 8, 3)


def test_reward_pool_overlaps_the_caller():
    started = threading.Event()
    release = threading.Event()

    def slow(prompts, clips, **_):
        started.set()
        release.wait(10)
        return [1.0] * len(clips)

    with RewardPool(RewardSet({"slow": slow}, {"slow": 1.0}), workers=1) as pool:
        fut = pool.submit(["a"], [clip()])
        assert started.wait(10)
        assert not fut.done()  # the caller is free while the reward runs
        release.set()
        res = fut.result(10)
    assert res.values["slow"].tolist() == [1.0] and res.seconds >= 0


def _plane_analysis(shift: float):
    """A fronto-parallel textured plane at depth 2 seen by two cameras `shift` apart along x."""
    h = w = 32
    K = np.array([[32.0, 0, 16], [0, 32.0, 16], [0, 0, 1]])
    u, v = np.meshgrid(np.linspace(-3, 3, 200), np.linspace(-3, 3, 200))
    points = np.stack([u.ravel(), v.ravel(), np.full(u.size, 2.0)], 1)
    colors = np.stack([(u.ravel() > 0) * 1.0, (v.ravel() > 0) * 1.0, np.full(u.size, 0.5)], 1).astype(np.float32)
    c2w = np.stack([np.eye(4), np.eye(4)])
    c2w[1, 0, 3] = shift
    return SimpleNamespace(points=points, colors=colors, K=K, c2w=c2w, depth=np.full((2, h, w), 2.0, np.float32), metrics={})


def test_novel_view_renders_beyond_the_farthest_camera(monkeypatch):
    from studio.rewards import novel_view

    image, coverage, far = novel_view(_plane_analysis(0.5), push=1.5)
    assert far == 1
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and coverage > 0.9
    # the novel camera sits at x = 1.5 × 0.5 = 0.75: the plane's red/black boundary (x = 0) appears at
    # column 16 + 32·(0 − 0.75)/2 = 4 instead of 16
    assert image[:, 6:16, 0].min() > 200 and image[:, :3, 0].max() < 50
    assert novel_view(SimpleNamespace(points=np.zeros((0, 3)), metrics={})) is None

    class FakeScorer:
        def score(self, frames, text):
            return 0.8

    monkeypatch.setattr("studio.rewards._scorers", {"fake": FakeScorer()})
    value = s_meta(["p"], [clip()], analyses=[_plane_analysis(0.5)], scorer="fake")[0]
    _, coverage_at_far, _ = novel_view(_plane_analysis(0.5))
    assert value == pytest.approx(coverage_at_far)  # the view scores like the frame: ratio 1


def _geometry_available():
    try:
        from studio.geometry import analyze  # noqa: F401
        from studio.tinyworld.render import render_clip  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.skipif(not _geometry_available(), reason="needs studio.geometry and the TinyWorld renderer")
def test_components_on_ground_truth_clips_beat_broken_ones():
    """Ground-truth renders analysed with their true depth score near the top; the same scene with
    the wrong camera move, or with colours that change from frame to frame, scores far lower."""
    from studio.geometry import analyze
    from studio.tinyworld.render import render_clip

    prompt = "Camera move left. A red cube on a checkered floor."
    good = render_clip(prompt, seed=0)
    wrong_move = render_clip("Camera move right. A red cube on a checkered floor.", seed=0)
    rng = np.random.default_rng(0)
    flicker = np.clip(good.frames.astype(np.int16) + rng.integers(-90, 90, good.frames.shape), 0, 255).astype(np.uint8)

    def run(frames, src):
        return analyze(frames, prompt, estimator="ground-truth", depth=src.depth, K=src.K, clip_scorer=None)

    analyses = [run(good.frames, good), run(wrong_move.frames, wrong_move), run(flicker, good)]
    clips = [good.frames, wrong_move.frames, flicker]
    traj = s_traj([prompt] * 3, clips, analyses=analyses)
    recon = s_recon([prompt] * 3, clips, analyses=analyses)
    assert traj[0] > 0.9 and traj[1] < traj[0] - 0.25
    assert recon[0] > 0.6 and recon[2] < recon[0] - 0.2


@pytest.mark.skipif(not _geometry_available(), reason="needs studio.geometry and the TinyWorld renderer")
def test_the_opposite_camera_move_scores_far_below_the_right_one():
    from studio.geometry import analyze
    from studio.tinyworld.render import render_clip

    wrong = render_clip("Camera move right. A red cube on a checkered floor.", seed=0)
    a = analyze(wrong.frames, "Camera move left. A red cube on a checkered floor.", estimator="ground-truth",
                depth=wrong.depth, K=wrong.K, clip_scorer=None)
    right = analyze(wrong.frames, "Camera move right. A red cube on a checkered floor.", estimator="ground-truth",
                    depth=wrong.depth, K=wrong.K, clip_scorer=None)
    # World-R1's formula keeps the path-length term E (0.3 of T) for a reversed path of the right
    # length, so ~0.44 is its floor for an exactly opposite move; the right move scores ~1.
    wrong_score = s_traj(["x"], [wrong.frames], analyses=[a])[0]
    right_score = s_traj(["x"], [wrong.frames], analyses=[right])[0]
    assert wrong_score < 0.5 and right_score > 0.9


def test_the_collapse_watch_judges_colour_and_shape_of_single_object_prompts():
    """Ground-truth renders of single-object prompts score high; a clip of the wrong colour scores 0;
    prompts with two objects are not judged."""
    from studio.tinyworld import render_clip
    from training.validation import attribute_watch

    prompts = ["A red cube on a checkered floor.", "A blue sphere on a striped floor.",
               "A red cube and a blue sphere on a checkered floor."]
    clips = [render_clip(p, num_frames=17, height=64, width=64, seed=0).frames for p in prompts]
    watch = attribute_watch("tinyworld", prompts, clips)
    assert watch["eval/attribute_clips"] == 2
    assert watch["eval/colour_right"] == 1.0
    wrong = attribute_watch("tinyworld", ["A green cube on a checkered floor."], clips[:1])
    assert wrong["eval/colour_right"] == 0.0
    assert attribute_watch("tinyworld", prompts[2:], clips[2:]) == {}


def test_blank_frozen_and_noise_clips_score_at_the_bottom_against_a_real_render():
    """All-black frames re-render perfectly (PSNR 60 dB, SSIM 1) and used to get S_recon 1.0 and
    S_meta 0.999 against 0.73 / 0.81 for a real render: a reward a policy could hack."""
    from studio.geometry import analyze
    from studio.tinyworld import render_clip

    prompt = "Camera orbit left, then push in. A red cube and a blue sphere on a checkered floor."
    real = render_clip(prompt, num_frames=17, height=64, width=64, seed=0).frames
    rng = np.random.default_rng(0)
    clips = [real, np.zeros_like(real), np.repeat(real[:1], 17, 0), rng.integers(0, 256, real.shape, dtype=np.uint8)]
    analyses = [analyze(c, prompt) for c in clips]
    assert [a.degenerate is not None for a in analyses] == [False, True, True, True]
    prompts = [prompt] * len(clips)
    scores = {f.__name__: f(prompts, clips, analyses=analyses) for f in (s_recon, s_meta, s_traj)}
    for name, values in scores.items():
        assert values[0] > 0.3, (name, values)
        assert values[1:] == [0.0, 0.0, 0.0], (name, values)


def test_a_still_clip_keeps_its_score_when_the_prompt_asks_for_a_fixed_camera():
    from studio.geometry import analyze
    from studio.tinyworld import render_clip

    fixed = "Camera remains fixed. A red cube and a blue sphere on a checkered floor."
    still = render_clip(fixed, num_frames=17, height=64, width=64, seed=0).frames
    a = analyze(still, fixed)
    assert a.degenerate.startswith("frozen")
    assert s_recon([fixed], [still], analyses=[a])[0] > 0.9
    assert s_traj([fixed], [still], analyses=[a])[0] > 0.9
    moving = "Camera orbit left. A red cube and a blue sphere on a checkered floor."
    assert s_recon([moving], [still], analyses=[a]) == [0.0]
