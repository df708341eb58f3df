"""UI handlers are plain functions: tested here without a browser."""

import os

import pytest

from studio.app.admin import check_admin
from studio.app.training_service import TrainingService
from studio.ui.analyze_section import run_analyze
from studio.ui.generate_tab import with_camera_clause
from studio.ui.study_admin import categorize


def test_camera_picker_rewrites_only_the_camera_clause():
    p = "Camera orbit left, then push in. A red cube on a checkered floor."
    assert with_camera_clause(p, ["pan_right"]) == "Camera pan right. A red cube on a checkered floor."
    assert with_camera_clause("A red cube.", ["tilt_up", "pull_out"]) == "Camera tilt up, then pull out. A red cube."
    assert with_camera_clause(p, []) == "A red cube on a checkered floor."


@pytest.mark.parametrize("prompt, category", [
    ("Camera orbit left. A red cube.", "camera"),
    ("Camera remains fixed. A red cube.", "static"),
    ("A red cube on a floor.", "static"),
    ("Camera pan left. A spinning blue sphere.", "dynamic"),
])
def test_study_prompts_are_categorised_for_the_breakdown(prompt, category):
    assert categorize(prompt) == category


def test_training_knobs_resolve_through_the_preset_and_the_batch_calculator(tmp_path):
    svc = TrainingService(tmp_path)
    cfg, overrides, plan = svc.resolve("tinyworld-cpu", {"group_size": 4, "lr": 0.0001}, "kl_beta=0.05")
    assert (cfg.group_size, cfg.lr, cfg.kl_beta) == (4, 0.0001, 0.05)
    assert plan.ok and plan.verdict.startswith("OK")
    assert svc.verdict("tinyworld-cpu", {"group_size": 3}).startswith("NOT OK")
    with pytest.raises(ValueError, match="unknown preset"):
        svc.resolve("nope")
    with pytest.raises(ValueError, match="not key=value"):
        svc.resolve("tinyworld-cpu", {}, "lr 0.1")
    with pytest.raises(ValueError):
        svc.resolve("tinyworld-cpu", {}, "no_such_key=1")


def test_tuned_slot_only_accepts_a_runs_own_checkpoints(tmp_path):
    svc = TrainingService(tmp_path)
    run = svc.jobs.runs_dir / "r"
    (run / "checkpoints" / "step-1").mkdir(parents=True)
    (run / "job.json").write_text('{"name": "r", "preset": "tinyworld-cpu", "status": "finished"}')
    with pytest.raises(ValueError, match="no LoRA checkpoint"):
        svc.use_checkpoint("r")
    lora = run / "checkpoints" / "step-1" / "pytorch_lora_weights.safetensors"
    lora.write_bytes(b"x")
    assert svc.use_checkpoint("r") == str(lora)
    assert svc.tuned_lora() == str(lora)
    with pytest.raises(ValueError, match="not a checkpoint"):
        svc.use_checkpoint("r", str(tmp_path / "elsewhere.safetensors"))
    assert TrainingService(tmp_path).tuned_lora() == str(lora)  # survives a restart


def test_the_best_checkpoint_on_validation_is_offered_first_and_loaded_by_default(tmp_path):
    svc = TrainingService(tmp_path)
    run = svc.jobs.runs_dir / "r"
    (run / "job.json").parent.mkdir(parents=True)
    (run / "job.json").write_text('{"name": "r", "preset": "tinyworld-cpu", "status": "finished"}')
    paths = {}
    for i, folder in enumerate(["checkpoint-000010", "best", "checkpoint-000020"]):
        (run / "checkpoints" / folder).mkdir(parents=True)
        paths[folder] = run / "checkpoints" / folder / "pytorch_lora_weights.safetensors"
        paths[folder].write_bytes(b"x")
        os.utime(paths[folder], (1000 + i, 1000 + i))
    (run / "checkpoints" / "best" / "best.json").write_text('{"epoch": 10, "score": 0.8836}')
    choices = svc.checkpoint_choices("r")
    assert [c[0] for c in choices] == ["best (epoch 10, score 0.884)", "checkpoint-000020", "checkpoint-000010"]
    assert svc.use_checkpoint("r") == str(paths["best"])
    assert svc.use_checkpoint("r", str(paths["checkpoint-000010"])) == str(paths["checkpoint-000010"])


def test_admin_rights_only_matter_when_the_studio_is_exposed(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.setenv("STUDIO_HOST", "127.0.0.1")
    check_admin(None)  # local use: everyone is admin
    monkeypatch.setenv("STUDIO_HOST", "0.0.0.0")
    monkeypatch.delenv("STUDIO_ADMIN_PASSWORD", raising=False)
    with pytest.raises(PermissionError, match="disabled"):
        check_admin("anything")
    monkeypatch.setenv("STUDIO_ADMIN_PASSWORD", "s3cret")
    check_admin("s3cret")
    with pytest.raises(PermissionError, match="admin only"):
        check_admin("wrong")
    monkeypatch.setenv("STUDIO_ADMIN_ORGS", "world-r1")
    check_admin(None, {"preferred_username": "ann", "orgs": [{"preferred_username": "World-R1"}]})
    with pytest.raises(PermissionError):
        check_admin(None, {"preferred_username": "bob", "orgs": []})


@pytest.mark.parametrize("content, match", [
    (None, "upload a video"),
    (b"definitely not a video", "could not read clip.mp4 as a video"),
    (b"", "empty"),
])
def test_malformed_uploads_get_a_clear_message(tmp_path, content, match):
    path = None
    if content is not None:
        path = tmp_path / "clip.mp4"
        path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        run_analyze(str(path) if path else None, "Camera pan left. A cube.", data_dir=tmp_path)
    assert str(e.value).startswith("Clip to analyse: ")  # the message names the field


def test_tiny_or_single_frame_uploads_are_refused(tmp_path):
    import numpy as np

    from studio.video import write_mp4

    one = write_mp4(np.zeros((1, 64, 64, 3), np.uint8), tmp_path / "one.mp4", min_side=64)
    with pytest.raises(ValueError, match="at least 2"):
        run_analyze(str(one), None, data_dir=tmp_path)
    small = write_mp4(np.zeros((4, 16, 16, 3), np.uint8), tmp_path / "small.mp4", min_side=16)
    with pytest.raises(ValueError, match="at least 32x32"):
        run_analyze(str(small), None, data_dir=tmp_path)


def test_a_signed_in_hugging_face_user_is_the_evaluator_whatever_id_the_page_sends():
    from studio.app.study_service import new_browser_evaluator_id, resolve_evaluator

    assert resolve_evaluator("ann", "anon:1234") == ("hf:ann", "hf")
    browser_id = new_browser_evaluator_id()
    assert browser_id.startswith("anon:") and resolve_evaluator(None, browser_id) == (browser_id, "browser")
    assert resolve_evaluator(None, " lab-7 ") == ("lab-7", "api")
    with pytest.raises(PermissionError, match="reserved"):
        resolve_evaluator(None, "hf:ann")  # nobody votes as a Hugging Face user without signing in
    with pytest.raises(ValueError, match="no evaluator id"):
        resolve_evaluator(None, "  ")


def test_the_sign_in_button_appears_only_on_a_space_with_oauth(monkeypatch, tmp_path):
    from app import build_app

    def has_login(demo) -> bool:
        return any(type(b).__name__ == "LoginButton" for b in demo.blocks.values())

    monkeypatch.delenv("SYSTEM", raising=False)
    monkeypatch.delenv("OAUTH_CLIENT_ID", raising=False)
    assert not has_login(build_app(tmp_path / "local"))
    for k, v in {"SYSTEM": "spaces", "SPACE_ID": "lab/world-r1", "OAUTH_CLIENT_ID": "id", "OAUTH_CLIENT_SECRET": "s",
                 "OAUTH_SCOPES": "openid profile", "OPENID_PROVIDER_URL": "https://huggingface.co"}.items():
        monkeypatch.setenv(k, v)
        if k.startswith(("OAUTH", "OPENID")):  # gradio reads these once, at import
            monkeypatch.setattr(f"gradio.oauth.{k}", v)
    assert has_login(build_app(tmp_path / "space"))
