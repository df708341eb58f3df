"""training/evaluate.py: bootstrap statistics against known cases, per-clip
measures, and both CLIs end to end on tiny real components (the tiny WorldPipeline, a tiny LoRA, a
tiny open_clip scorer, the "ground-truth" estimator fed with TinyWorld render depth)."""
import json

import numpy as np
import pytest
import torch

from tiny_pipeline import tiny_world_pipeline_dir
from training import evaluate as E
from training.checkpoints import TRAINER_STATE, TrainerState

PROMPTS = ["Camera move left. A red cube on a checkered floor.",
           "Camera push in. A blue sphere on a checkered floor.",
           "Camera orbit right, then push in. A red sphere on a checkered floor."]
DYNAMIC = ["Camera move right. A blue cube on a checkered floor."]
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}
CLIP_NAME = "tiny-eval-clip"


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def test_bootstrap_ci_known_cases():
    assert E.bootstrap_ci([2.5] * 7) == (2.5, 2.5, 2.5)
    # Two values: resampled means are 0, ½, 1 with probabilities ¼, ½, ¼ → the 95 % interval is [0, 1].
    mean, lo, hi = E.bootstrap_ci([0.0, 1.0], n_boot=4000, seed=3)
    assert (mean, lo, hi) == (0.5, 0.0, 1.0)
    # NaNs are dropped; nothing finite gives NaNs; one value a zero-width interval.
    assert E.bootstrap_ci([1.0, np.nan, 3.0], seed=1)[0] == 2.0
    assert all(np.isnan(E.bootstrap_ci([np.nan, np.nan])))
    assert E.bootstrap_ci([4.0, np.nan]) == (4.0, 4.0, 4.0)


def test_bootstrap_ci_matches_the_normal_interval_for_a_large_sample():
    x = np.random.default_rng(0).normal(10.0, 2.0, 400)
    mean, lo, hi = E.bootstrap_ci(x, n_boot=4000, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert mean == pytest.approx(x.mean())
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert (lo + hi) / 2 == pytest.approx(mean, abs=0.1 * half)
    assert E.bootstrap_ci(x, n_boot=500, seed=7) == E.bootstrap_ci(x, n_boot=500, seed=7)  # seeded


def test_per_prompt_means_average_seeds_and_skip_missing_values():
    recs = [{"prompt_index": 0, "m": 1.0}, {"prompt_index": 0, "m": 3.0}, {"prompt_index": 1, "m": None},
            {"prompt_index": 1, "m": float("nan")}, {"prompt_index": 2, "m": 5.0}, {"prompt_index": 2}]
    np.testing.assert_array_equal(E.per_prompt_means(recs, "m", 4), [2.0, np.nan, 5.0, np.nan])


def test_paired_difference_removes_the_prompt_effect():
    rng = np.random.default_rng(1)
    prompt_effect = rng.normal(0, 5.0, 50)  # prompts differ a lot …
    base = prompt_effect + rng.normal(0, 0.1, 50)
    tuned = base + 0.3  # … but tuning adds exactly 0.3 to every prompt
    s = E.paired_summary(base, tuned, n_boot=2000, seed=0)
    assert s["diff"] == pytest.approx(0.3)
    assert s["ci"] == pytest.approx([0.3, 0.3])
    assert s["tuned_ci"][1] - s["tuned_ci"][0] > 1.0  # the unpaired interval is far wider
    base[3] = np.nan  # a prompt without a value on one side is left out of the pairing
    assert E.paired_summary(base, tuned)["n_paired"] == 49
    only = E.paired_summary(base, None)
    assert only["tuned"] is None and only["diff"] is None and only["ci"] is None


def test_motion_magnitude_is_zero_for_a_frozen_clip_and_tracks_a_shift():
    frozen = np.repeat(np.random.default_rng(0).integers(0, 255, (1, 32, 32, 3), dtype=np.uint8), 5, axis=0)
    still = E.motion_magnitude(frozen)
    assert still["motion_absdiff"] == 0.0 and still["motion_flow_px"] < 0.05
    yy, xx = np.mgrid[0:48, 0:48]
    frames = np.stack([np.repeat(((np.sin((xx - 2 * t) / 3.0) + np.cos(yy / 4.0)) * 60 + 128)[..., None], 3, -1)
                       for t in range(5)]).astype(np.uint8)
    m = E.motion_magnitude(frames)
    assert m["motion_absdiff"] > 5
    assert 1.0 < m["motion_flow_px"] < 3.0  # two pixels per frame


# ---------------------------------------------------------------------------------------------
# Trajectory checks of the noise-floor study
# ---------------------------------------------------------------------------------------------
def test_clause_records_split_a_two_move_clause_and_find_the_missed_move():
    from studio.geometry import analyze
    from studio.tinyworld import render_clip

    asked = "Camera move left, then push in. A red cube on a checkered floor."
    rc = render_clip(asked, num_frames=9, height=32, width=32, seed=0)
    a = analyze(rc.frames, asked, estimator="ground-truth", depth=rc.depth, K=rc.K, clip_scorer=None)
    right = E.clause_records(a, asked)
    assert set(right) == {"trajectory_error_move1_deg", "trajectory_error_move2_deg"}
    assert max(right.values()) < 10.0
    # the same clip judged against "move left, then pull out": the first move is still right,
    # the second is the opposite direction of travel
    wrong = E.clause_records(a, "Camera move left, then pull out. A red cube on a checkered floor.")
    assert wrong["trajectory_error_move1_deg"] == pytest.approx(right["trajectory_error_move1_deg"])
    assert wrong["trajectory_error_move2_deg"] > 150.0
    assert set(E.clause_records(a, PROMPTS[0])) == {"trajectory_error_single_deg"}
    assert E.clause_records(a, "A red cube on a checkered floor.") == {}


# ---------------------------------------------------------------------------------------------
# End to end on tiny components
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_world_pipeline_dir(tmp_path_factory.mktemp("tiny-world"))


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    import open_clip
    from safetensors.torch import save_file

    from studio.scoring import load_scorer

    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / f"{CLIP_NAME}.json").write_text(json.dumps(TINY_CLIP))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model(CLIP_NAME).eval()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "w.safetensors"))
    return load_scorer(CLIP_NAME, pretrained=str(folder / "w.safetensors"))


@pytest.fixture
def with_scorer(monkeypatch, tiny_scorer):
    from studio import rewards

    monkeypatch.setitem(rewards._scorers, CLIP_NAME, tiny_scorer)
    yield CLIP_NAME
    E._PIPELINES.clear()


@pytest.fixture(scope="module")
def lora_run(model_dir, tmp_path_factory):
    """A run folder like training.train writes: checkpoints/checkpoint-000003 with a non-zero LoRA."""
    from peft import LoraConfig, get_peft_model_state_dict

    from studio.pipelines import WorldPipeline, load_pipeline

    pipe = load_pipeline(str(model_dir), device="cpu", cache=False)
    pipe.transformer.add_adapter(LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                                            target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in pipe.transformer.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    run = tmp_path_factory.mktemp("run")
    ckpt = run / "checkpoints" / "checkpoint-000003"
    WorldPipeline.save_lora_weights(str(ckpt), transformer_lora_layers=get_peft_model_state_dict(pipe.transformer),
                                    weight_name="pytorch_lora_weights.safetensors")
    torch.save(TrainerState(epoch=3, elapsed_seconds=1500.0, config={"camera_init": True, "dynamic_steps": 0}).state_dict(),
               ckpt / TRAINER_STATE)
    return run


def _prompt_file(path, prompts):
    from studio.tinyworld import scene_from_prompt

    rows = [{"prompt": p, "seed": i, "scene": scene_from_prompt(p, seed=i, warn=False)[0].to_dict()} for i, p in enumerate(prompts)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _eval_args(model_dir, lora_run, tmp_path, scorer, *extra):
    return ["--baseline", str(model_dir), "--tuned", str(lora_run), "--prompts", _prompt_file(tmp_path / "p.jsonl", PROMPTS),
            "--n-prompts", "3", "--seeds", "0", "1", "--dynamic-prompts", _prompt_file(tmp_path / "d.jsonl", DYNAMIC),
            "--n-dynamic", "1", "--estimator", "ground-truth", "--scorer", scorer, "--out", str(tmp_path / "docs" / "results"),
            "--cache", str(tmp_path / "cache"), "--n-boot", "200", "--threads", "1", "--contact-prompts", "2", *extra]


def test_evaluate_end_to_end_json_shape_outputs_and_cache(model_dir, lora_run, tmp_path, with_scorer):
    argv = _eval_args(model_dir, lora_run, tmp_path, with_scorer, "--no-camera-init")
    assert E.main(argv) == 0
    out = tmp_path / "docs"
    result = json.loads((out / "results.json").read_text())
    assert list(result) == ["command", "train_minutes", "n_prompts", "seeds", "metrics"]
    assert result["command"].startswith("python -m training.evaluate --baseline")
    assert result["train_minutes"] == pytest.approx(25.0)  # 1500 s from the checkpoint's trainer state
    assert result["n_prompts"] == 3 and result["seeds"] == [0, 1]
    for name in E.TABLE_METRICS:
        entry = result["metrics"][name]
        assert list(entry) == ["baseline", "tuned", "diff", "ci"]
        assert all(np.isfinite([entry["baseline"], entry["tuned"], entry["diff"], *entry["ci"]])), name
        assert entry["ci"][0] <= entry["diff"] <= entry["ci"][1]
    for name in ("attr/color_correct", "attr/shape_correct", "dynamic/motion_absdiff", "dynamic/motion_flow_px"):
        assert set(result["metrics"][name]) == {"baseline", "tuned", "diff", "ci"}
    # move by move: two single-move prompts, one two-move prompt (its 1st and 2nd move apart)
    for name in E.CLAUSE_METRICS:
        assert np.isfinite(result["metrics"][f"clause/{name}"]["baseline"]), name
    # the LoRA changes the clips; the no-camera-init ablations get their own files and rows
    assert result["metrics"]["clip_score"]["diff"] != 0.0
    ablations = sorted(p.name for p in out.glob("results.*.json") if p.name != "results.details.json")
    assert len(ablations) == 2 and all("no_camera_init" in a for a in ablations)
    md = (out / "results.md").read_text()
    assert "## Ablations" in md and "## Dynamic split" in md and "## Colour / shape" in md
    assert "## Camera adherence move by move" in md and "n prompts: 2 single-move, 1 two-move." in md
    from PIL import Image

    sheet = Image.open(out / "results.png")
    assert sheet.width > 5 * 32 and sheet.height >= 2 * 2 * 32  # 2 prompts × (baseline row + tuned row)
    details = json.loads((out / "results.details.json").read_text())
    assert len(details["records"]["baseline"]) == 3 * 2
    assert details["cache"]["misses"] > 0

    # a re-run generates and measures nothing and writes the same JSON
    E._PIPELINES.clear()
    assert E.main(argv) == 0
    again = json.loads((out / "results.details.json").read_text())
    assert again["cache"]["misses"] == 0 and again["cache"]["hits"] == details["cache"]["misses"] + details["cache"]["hits"]
    assert json.loads((out / "results.json").read_text()) == result


def test_same_seed_same_clip_for_baseline_across_runs_and_lora_changes_it(model_dir, lora_run, tmp_path, with_scorer):
    settings = E.Settings(num_frames=5, height=32, width=32, steps=3, estimator="ground-truth", scorer=None)
    base = E.System("baseline", str(model_dir))
    tuned = E.System("t", str(model_dir), str(E.resolve_lora_dir(lora_run)))
    a = E.generate_frames(base, PROMPTS[0], 4, settings)
    b = E.generate_frames(tuned, PROMPTS[0], 4, settings)
    c = E.generate_frames(base, PROMPTS[0], 4, settings)
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)
    assert base.fingerprint(settings) != tuned.fingerprint(settings)
    assert base.fingerprint(settings) != E.System("baseline", str(model_dir), camera_init=False).fingerprint(settings)


def test_lora_paths_labels_and_train_minutes(lora_run, tmp_path):
    ckpt = E.resolve_lora_dir(lora_run)
    assert ckpt.name == "checkpoint-000003"
    assert E.lora_label(ckpt) == f"{lora_run.name}@3"
    assert E.run_info(ckpt)["train_minutes"] == pytest.approx(25.0)
    # without trainer state: the run's metrics.jsonl
    run = tmp_path / "r2"
    (run / "checkpoints" / "checkpoint-000001").mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"epoch": 0, "seconds": 30.0}) + "\n" + json.dumps({"epoch": 1, "seconds": 90.0}) + "\n")
    assert E.run_info(run / "checkpoints" / "checkpoint-000001")["train_minutes"] == pytest.approx(1.5)
    # checkpoints/best: the time at which it was chosen, not the run's total
    best = run / "checkpoints" / "best"
    best.mkdir()
    (best / "best.json").write_text(json.dumps({"epoch": 1, "score": 1.0, "elapsed_seconds": 42.0}))
    assert E.run_info(best)["train_minutes"] == pytest.approx(0.7)
    (best / "best.json").write_text(json.dumps({"epoch": 1, "score": 1.0}))  # older runs: from metrics.jsonl
    assert E.run_info(best)["train_minutes"] == pytest.approx(0.5)
    assert E.run_info(best)["config"] is None and E.lora_label(best) == "r2@best"
    with pytest.raises(FileNotFoundError):
        E.resolve_lora_dir(tmp_path / "missing")


def test_baseline_only_evaluation_reports_baseline_and_null_differences(model_dir, tmp_path, with_scorer):
    argv = ["--baseline", str(model_dir), "--prompts", _prompt_file(tmp_path / "p.jsonl", PROMPTS[:2]), "--n-prompts", "2",
            "--seeds", "0", "--n-dynamic", "0", "--estimator", "ground-truth", "--scorer", with_scorer,
            "--out", str(tmp_path / "base"), "--cache", "", "--n-boot", "200", "--threads", "1", "--contact-prompts", "0",
            "--train-minutes", "7"]
    assert E.main(argv) == 0
    result = json.loads((tmp_path / "base.json").read_text())
    assert result["train_minutes"] == 7.0
    entry = result["metrics"]["recon_psnr"]
    assert np.isfinite(entry["baseline"]) and entry["tuned"] is None and entry["diff"] is None and entry["ci"] is None


def test_load_rows_from_the_tinyworld_corpus_and_prompt_files(tmp_path):
    rows = E.load_rows("tinyworld:test", 5)
    assert len(rows) == 5 and all(r["prompt"] and r["scene"]["objects"] for r in rows)
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    assert [r["prompt"] for r in E.load_rows(str(tmp_path / "p.txt"), 2)] == PROMPTS[:2]
    with pytest.raises(ValueError):
        E.load_rows(str(tmp_path / "missing.txt"))


def test_vanilla_baseline_is_the_base_model_without_camera_init_and_the_rows_decompose_the_method(lora_run):
    """World-R1's comparison: base model as released vs camera init + RL; the ablation rows show
    each part alone (camera init without RL, RL without camera init)."""
    systems = E.build_systems(E.parse_args(["--vanilla-baseline", "--no-camera-init", "--tuned", str(lora_run)]))
    assert [s.camera_init for s in systems] == [False, True, True, False]
    assert systems[0].label == "baseline" and systems[1].lora and systems[2].label == "baseline + camera init"
    assert systems[3].lora == systems[1].lora and systems[3].label.endswith("no camera init")
    systems = E.build_systems(E.parse_args(["--vanilla-baseline"]))
    assert [(s.label, s.camera_init) for s in systems] == [("baseline", False), ("baseline + camera init", True)]
    plain = E.build_systems(E.parse_args(["--no-camera-init"]))
    assert [(s.label, s.camera_init) for s in plain] == [("baseline", True), ("baseline, no camera init", False)]


@pytest.mark.parametrize("flags, match", [
    (["--tuned", "CORRUPT"], "corrupt"),
    (["--tuned", "MISSING"], "no such file"),
    (["--baseline", "no-such-model"], "unknown model"),
    (["--estimator", "bogus"], "--estimator"),
])
def test_every_input_is_checked_before_any_clip_is_generated(tmp_path, capsys, flags, match):
    from training.evaluate import parse_args

    bad = tmp_path / "pytorch_lora_weights.safetensors"
    bad.write_bytes(b"not safetensors")
    flags = [str(bad) if f == "CORRUPT" else str(tmp_path / "nope") if f == "MISSING" else f for f in flags]
    with pytest.raises(SystemExit) as e:
        parse_args(flags)
    assert e.value.code == 2 and match in capsys.readouterr().err


def test_validate_geometry_refuses_an_unknown_estimator(monkeypatch, capsys):
    from scripts import validate_geometry

    monkeypatch.setattr("sys.argv", ["validate_geometry", "--estimators", "bogus"])
    with pytest.raises(SystemExit) as e:
        validate_geometry.main()
    assert e.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err
