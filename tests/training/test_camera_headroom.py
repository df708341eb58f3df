"""scripts/camera_headroom.py: wrap-strength sweep and best-of-K on the shipped generator, tiny sizes."""

from __future__ import annotations

import json

import numpy as np

from scripts.camera_headroom import main, parse_warp_setting


def test_sweep_and_best_of_k_report_what_s_traj_would_pick(tmp_path):
    from studio.pipelines import load_pipeline

    own = dict(load_pipeline("tinyworld").config)
    res = main(["--n-prompts", "1", "--strengths", "0.8", "--warp", "warp_box=1,warp_strength=0.5",
                "--warp", "camera_init_mode=warped_start", "--best-of", "3", "--bestof-prompts", "1",
                "--parts", "sweep", "best", "--threads", "1", "--out", str(tmp_path)])
    assert list(res["sweep"]) == ["off", "w=0.8", "box=1,strength=0.5", "camera_init_mode=warped_start"]
    assert all(m["n"] == 1 and m["s_traj"] is not None for m in res["sweep"].values())
    # Different initializations of the same prompt and seed give different clips.
    assert len({m["trajectory_error_deg"] for m in res["sweep"].values()}) > 1
    # The sweep leaves the (cached, shared) pipeline with its own settings.
    after = dict(load_pipeline("tinyworld").config)
    assert {k: after[k] for k in own if k.startswith(("warp_", "camera_init"))} == \
        {k: own[k] for k in own if k.startswith(("warp_", "camera_init"))}

    best = res["best_of_k"]
    assert best["k"] == 3 and best["n_prompts"] == 1
    p = best["prompts"][0]
    assert p["moves"] and p["moves"] != ["fixed"]
    assert p["min_error"] <= p["picked_error"] <= p["max_error"]   # the pick is one of the group
    assert p["min_error"] <= p["mean_error"] <= p["max_error"] and np.isfinite(best["mean_error"])
    assert json.loads((tmp_path / "report.json").read_text())["best_of_k"]["k"] == 3
    assert "Best of K = 3" in (tmp_path / "report.md").read_text()

    # A later run of one part keeps the others' numbers and both commands.
    res = main(["--parts", "sde", "--sde-prompts", "1", "--best-of", "2", "--threads", "1", "--out", str(tmp_path)])
    assert res["best_of_k"]["k"] == 3 and len(res["sweep"]) == 4 and len(res["commands"]) == 2
    spread = res["sde_spread"]
    assert spread["k"] == 2 and spread["n_prompts"] == 1 and len(spread["prompts"][0]["moves"]) == 2
    assert spread["trained_steps"] == [0, 1, 2, 3, 4] and spread["sde_only_std"] >= 0
    assert "What moves the camera path" in (tmp_path / "report.md").read_text()

    # A Flow-GRPO-Fast window is measured as its own row, beside the preset's steps.
    res = main(["--parts", "sde", "--sde-prompts", "1", "--best-of", "2", "--sde-window", "0", "1",
                "--sde-noise-level", "0.5", "--threads", "1", "--out", str(tmp_path)])
    fast = res["sde_spread_w0-1_a0.5"]
    assert fast["trained_steps"] == [0, 1] and fast["noise_level"] == 0.5 and "sde_spread" in res
    assert "| [0, 1] | 0.5 |" in (tmp_path / "report.md").read_text()


def test_a_warp_setting_names_pipeline_keys_and_rejects_others():
    assert parse_warp_setting("warp_box=1,warp_strength=0.5") == {"warp_box": 1, "warp_strength": 0.5}
    assert parse_warp_setting("camera_init_mode=warped_start") == {"camera_init_mode": "warped_start"}
    import pytest

    with pytest.raises(SystemExit, match="KEY=VALUE"):
        parse_warp_setting("box=1")
    with pytest.raises(SystemExit, match="values of their type"):
        parse_warp_setting("warp_box=wide")
