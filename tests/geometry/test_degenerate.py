"""Blank, noise and frozen clips have no 3D consistency to measure: the analysis says so."""

import numpy as np
import pytest

from studio.camera import MOVES
from studio.geometry import analyze
from studio.geometry.metrics import degenerate_reason
from studio.tinyworld import render_clip

PROMPT = "Camera orbit left, then push in. A red cube and a blue sphere on a checkered floor."


@pytest.fixture(scope="module")
def real():
    return render_clip(PROMPT, num_frames=17, height=64, width=64, seed=0).frames


def degenerate_clips(real):
    rng = np.random.default_rng(0)
    frozen = np.repeat(real[:1], len(real), 0)
    return {
        "blank": np.zeros_like(real),
        "blank-grey": np.full_like(real, 128),
        "noise": rng.integers(0, 256, real.shape, dtype=np.uint8),
        "frozen": frozen,
        # a repeated frame with fresh per-pixel noise on every frame still does not move
        "frozen-jitter": np.clip(frozen.astype(int) + rng.integers(-10, 11, real.shape), 0, 255).astype(np.uint8),
    }


@pytest.mark.parametrize("move", [m for m in MOVES if m != "fixed"])
@pytest.mark.parametrize("frames, size", [(17, 64), (33, 128)])
def test_real_renders_of_every_camera_move_are_not_degenerate(move, frames, size):
    clip = render_clip(f"Camera {move.replace('_', ' ')}. A red cube on a checkered floor.", num_frames=frames,
                       height=size, width=size, seed=1)
    assert degenerate_reason(clip.frames) is None


def test_blank_noise_and_frozen_clips_are_named(real):
    for name, frames in degenerate_clips(real).items():
        reason = degenerate_reason(frames)
        assert reason is not None and reason.startswith(name.split("-")[0]), (name, reason)


def test_the_analysis_reports_a_degenerate_clip_and_a_real_one_is_not(real):
    blank = analyze(np.zeros_like(real), PROMPT)
    # the numbers alone look perfect: that is why the clip must be flagged
    assert blank.metrics["recon_psnr"] >= 59 and blank.degenerate.startswith("blank")
    assert blank.to_dict()["degenerate"] == blank.degenerate
    assert any("degenerate" in w for w in blank.warnings)
    good = analyze(real, PROMPT)
    assert good.degenerate is None and good.to_dict()["degenerate"] is None
