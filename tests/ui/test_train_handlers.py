"""The Training tab's handlers (studio.app.training_service) without a browser: knob validation before
launch, the runs table (raw reward, queue place), failure notices, cancel/resume/delete messages,
the time estimate, and the tab's own wiring called through its registered functions."""
import json
from pathlib import Path
import re
import sys
import textwrap
import time

import pytest

from studio.app.jobs import JobManager
from studio.app.training_service import RAW_REWARD, TrainingService, parse_overrides, weighted_raw_reward

# A trainer stand-in that runs until told twice to stop (like one in a long epoch) and logs a step.
SLEEPER = textwrap.dedent('''
    import argparse, json, signal, sys, time
    from pathlib import Path
    ap = argparse.ArgumentParser(); ap.add_argument("--preset"); ap.add_argument("--out"); ap.add_argument("--resume", action="store_true")
    args, rest = ap.parse_known_args()
    signals = []
    def on_signal(*a):
        signals.append(1)
        if len(signals) > 1:
            sys.exit(130)
        print("stopping at the next safe point", flush=True)
    signal.signal(signal.SIGINT, on_signal)
    print("resume" if args.resume else "fresh", flush=True)
    for _ in range(600):
        time.sleep(0.05)
''')


@pytest.fixture
def svc(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "sleeper.py").write_text(SLEEPER)
    service = TrainingService(tmp_path / "data")
    service.jobs.close()
    service.jobs = JobManager(tmp_path / "data" / "runs", python=sys.executable, module="sleeper",
                              env={"PYTHONPATH": str(pkg)}, watch_interval_s=0.2)
    yield service
    for s in service.jobs.list():
        if s.status in ("running", "cancelling"):
            service.jobs.cancel(s.name, force=s.status == "cancelling")
            if service.jobs.get(s.name).status == "cancelling":
                service.jobs.cancel(s.name, force=True)
    service.jobs.close()


def fake_run(svc, name, status="finished", metrics=(), config=None, log=""):
    run = svc.jobs.runs_dir / name
    run.mkdir(parents=True)
    (run / "job.json").write_text(json.dumps({"name": name, "preset": "tinyworld-cpu", "status": status,
                                              "created": time.time(), "returncode": 1 if status == "failed" else 0}))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (run / "config.json").write_text(json.dumps(config or {}))
    (run / "train.log").write_text(log)
    return run


def wait_log(svc, name, text, timeout=30):
    deadline = time.time() + timeout
    while text not in svc.jobs.log_tail(name):
        assert time.time() < deadline, svc.jobs.log_tail(name)
        time.sleep(0.05)


def wait_status(svc, name, statuses, timeout=30):
    deadline = time.time() + timeout
    while svc.jobs.get(name).status not in statuses:
        assert time.time() < deadline, svc.jobs.get(name)
        time.sleep(0.05)
    return svc.jobs.get(name)


# ---- item 20: every knob checked before launch, overrides keep their commas ----
def test_override_values_keep_their_commas_and_may_be_empty():
    assert parse_overrides("lora_targets=to_q,to_k\ndynamic_prompts=") == {"lora_targets": "to_q,to_k", "dynamic_prompts": ""}
    assert parse_overrides("epochs=2, lr=1e-4; seed=3") == {"epochs": "2", "lr": "1e-4", "seed": "3"}
    cfg, overrides, _ = TrainingService.resolve("tinyworld-cpu", {}, "lora_targets=to_q,to_k\ndynamic_prompts=")
    assert cfg.lora_targets == ["to_q", "to_k"] and cfg.dynamic_prompts == ""
    assert overrides == {"lora_targets": "to_q,to_k", "dynamic_prompts": ""}
    with pytest.raises(ValueError, match="'to_k' is not key=value"):
        parse_overrides("lora_targets=to_q\nto_k")


@pytest.mark.parametrize("knobs, extra, field", [
    ({"max_minutes": -1}, "", "max_minutes must be ≥ 0"),
    ({"max_minutes": float("nan")}, "", "max_minutes='nan': expected a finite number"),
    ({}, "max_minutes=inf", "max_minutes='inf': expected a finite number"),
    ({"lr": float("inf")}, "", "lr='inf': expected a finite number"),
    ({"seed": -1}, "", "seed must be ≥ 0"),
    ({}, "train_prompts=", "train_prompts is empty"),
    ({}, "eval_prompts=", "eval_prompts is empty"),
    ({}, "pipeline=", "pipeline is empty"),
    ({}, "lora_targets=", "lora_targets must list module names"),
    ({"w_recon": 0, "w_meta": 0, "w_traj": 0, "w_gen": 0}, "", "every reward weight is 0"),
    ({}, "epochs=1e400", "expected a finite number"),
])
def test_bad_knobs_are_refused_with_the_field_and_the_fix(knobs, extra, field):
    with pytest.raises(ValueError, match=re.escape(field)):
        TrainingService.resolve("tinyworld-cpu", knobs, extra)


def test_missing_prompts_or_generator_are_refused_before_anything_is_queued(svc, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="train_prompts: .*(no prompts|empty)"):
        svc.start("a", "tinyworld-cpu", {}, f"train_prompts={empty}")
    with pytest.raises(ValueError, match="train_prompts: prompt file .* does not exist"):
        svc.start("b", "tinyworld-cpu", {}, f"train_prompts={tmp_path / 'missing.txt'}")
    with pytest.raises(ValueError, match="eval_prompts: .*selects no prompts"):
        svc.start("c", "tinyworld-cpu", {}, "eval_prompts=tinyworld:test[9999:]")
    with pytest.raises(ValueError, match="pipeline: model directory .* does not exist"):
        svc.start("d", "tinyworld-cpu", {}, f"pipeline={tmp_path / 'no-such-model'}")
    assert svc.jobs.list() == []


# ---- item 21: the reward that moves, queue places, failure notices, delete, estimate ----
def test_the_runs_table_shows_the_raw_weighted_reward_not_the_normalised_total(svc):
    weights = {"w_recon": 1.0, "w_meta": 0.5, "w_traj": 2.0, "w_3d": 1.0, "w_gen": 1.0}
    rows = [{"step": 1, "epoch": 0, "frac_3d": 1.0, "reward/total/mean": 1e-15, "reward/s_recon/mean": 0.33,
             "reward/s_meta/mean": 0.1, "reward/s_traj/mean": 0.48, "reward/r_gen/mean": -0.18},
            {"step": 2, "epoch": 1, "frac_3d": 0.0, "reward/total/mean": 0.0, "reward/s_recon/mean": None,
             "reward/s_meta/mean": None, "reward/s_traj/mean": None, "reward/r_gen/mean": -0.1},
            {"eval": True, "epoch": 1, "step": 2, "eval/reward/s_traj/mean": 0.5}]
    fake_run(svc, "r", metrics=rows, config=weights)
    raw_first = 0.33 + 0.5 * 0.1 + 2.0 * 0.48 - 0.18
    assert weighted_raw_reward(rows[0], weights) == pytest.approx(raw_first)
    assert weighted_raw_reward(rows[1], weights) == pytest.approx(-0.1)  # a fluid epoch: R_gen only
    table = svc.runs()
    assert table[0]["reward"] == pytest.approx(-0.1) and table[0]["step"] == 2  # the eval row is not "last"
    metrics = svc.status("r")["metrics"]
    assert metrics[0][RAW_REWARD] == pytest.approx(raw_first) and RAW_REWARD not in metrics[2]
    # 20 % of the items with R_3D on: their means count for that share
    assert weighted_raw_reward({**rows[0], "frac_3d": 0.2}, weights) == pytest.approx(0.2 * (raw_first + 0.18) - 0.18)


def test_queue_places_cancel_messages_and_a_forced_cancel(svc):
    from studio.ui.train_tab import table_rows

    for name in ("a", "b", "c"):
        svc.jobs.submit(name, "p")
    rows = {r["name"]: r for r in svc.runs()}
    assert (rows["a"]["queue"], rows["b"]["queue"], rows["c"]["queue"]) == (None, 1, 2)
    assert {r[0]: r[1] for r in table_rows(svc.runs())} == {"a": "running", "b": "queued (#1)", "c": "queued (#2)"}
    assert svc.status("c")["queue"] == 2
    assert "dropped from the queue" in svc.cancel("c")["message"]
    wait_log(svc, "a", "fresh")  # the stand-in has its signal handler
    first = svc.cancel("a")
    assert first["status"] == "cancelling" and "saves a checkpoint at its next safe point" in first["message"]
    time.sleep(0.5)
    assert svc.jobs.get("a").status == "cancelling"
    forced = svc.cancel("a")
    assert forced["forced"] and "Forcing a to stop now" in forced["message"]
    assert wait_status(svc, "a", {"cancelled"}).returncode == 130
    assert wait_status(svc, "b", {"running"}).status == "running"  # the queue moved on by itself


def test_resume_continues_from_a_checkpoint_or_starts_over_without_one(svc):
    fake_run(svc, "none", status="cancelled")
    assert "starts over from epoch 0" in svc.resume("none")["message"]
    wait_log(svc, "none", "fresh")
    svc.cancel("none")
    svc.cancel("none")  # forced
    wait_status(svc, "none", {"cancelled"})
    ckpt = svc.jobs.runs_dir / "none" / "checkpoints" / "checkpoint-000001"
    ckpt.mkdir(parents=True)
    (ckpt / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    assert "continues from its latest checkpoint" in svc.resume("none", "max_minutes=120")["message"]
    assert svc.jobs.get("none").overrides["max_minutes"] == "120" and svc.jobs.get("none").resume
    with pytest.raises(ValueError, match="already|only a stopped run"):
        svc.resume("none")
    fake_run(svc, "other", status="cancelled")
    with pytest.raises(ValueError, match="max_minutes must be ≥ 0"):
        svc.resume("other", "max_minutes=-5")


def test_a_run_that_fails_meanwhile_is_reported_once_with_its_reason(svc):
    rows = [{"name": "x", "status": "running"}]
    messages, seen = svc.notices(None, rows)
    assert messages == [] and seen == {"x": "running"}
    fake_run(svc, "x", status="failed", log="config: ...\nerror: prompt file 'p.txt' does not exist\n")
    messages, seen = svc.notices(seen, [{"name": "x", "status": "failed"}])
    assert messages == ["Run x failed: error: prompt file 'p.txt' does not exist"]
    assert svc.notices(seen, [{"name": "x", "status": "failed"}])[0] == []  # once
    assert svc.notices(None, [{"name": "x", "status": "failed"}])[0] == []  # a fresh page: no old news
    assert svc.status("x")["error"] == "error: prompt file 'p.txt' does not exist"


def test_delete_only_stopped_runs_inside_the_runs_dir_and_forget_them_in_the_tuned_slot(svc):
    run = fake_run(svc, "done")
    ckpt = run / "checkpoints" / "checkpoint-000001"
    ckpt.mkdir(parents=True)
    (ckpt / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    svc.use_checkpoint("done")
    fake_run(svc, "busy", status="queued")  # nothing polls here, so it stays queued
    with pytest.raises(ValueError, match="cancel it"):
        svc.delete("busy")
    for bad in ("../data", "done/..", "/etc"):
        with pytest.raises(ValueError):
            svc.delete(bad)
    message = svc.delete("done")
    assert "tuned slot held one of its checkpoints" in message and not run.exists()
    assert svc.tuned_lora() != str(ckpt / "pytorch_lora_weights.safetensors")


def test_the_default_budget_comes_with_an_estimate(svc):
    text = svc.estimate("tinyworld-cpu")
    assert text.startswith("≈ 30 s per epoch (bench_train figure for tinyworld-cpu)")
    # 75 min / 30.5 s per epoch, less the epoch the trainer keeps in hand
    assert "the 75-minute budget stops it after ≈ 146 epochs (≈ 292 optimizer steps)" in text
    assert "within the 75-minute budget" in svc.estimate("tinyworld-cpu", {"epochs": 10})
    assert svc.estimate("world-r1-small").startswith("no estimate for 'Wan2.1-T2V-1.3B'")
    assert svc.estimate("tinyworld-cpu", {"max_minutes": -1}).startswith("no estimate: max_minutes")
    # A run of the same generator measures it: 4 epochs in 20 s at half the clips per epoch.
    fake_run(svc, "m", metrics=[{"step": 8, "epoch": 3, "seconds": 20.0}],
             config={"preset": "tinyworld-cpu", "num_batches_per_epoch": 2})
    text = svc.estimate("tinyworld-cpu", {"epochs": 100, "max_minutes": 0})
    assert text == "≈ 10 s per epoch (measured on run m); 100 epochs ≈ 17 min"


def test_the_tab_builds_and_its_refresh_handler_reports_a_failure(svc):
    import gradio as gr

    from studio.ui.train_tab import build_train_tab

    with gr.Blocks() as demo:
        build_train_tab(svc)
    refresh = next(f.fn for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "on_refresh")
    fake_run(svc, "f", status="failed", log="error: something broke\n")
    out = refresh("f", None, {"f": "running"})
    assert len(out) == 8 and out[-1] == {"f": "failed"}
    assert out[4].endswith(">>> failed: error: something broke")


def test_the_tab_and_its_api_show_run_files_by_name_never_by_server_path(svc, tmp_path, monkeypatch):
    import gradio as gr

    from studio.ui.train_tab import build_train_tab

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "served"))
    run = fake_run(svc, "r")
    ckpt = run / "checkpoints" / "checkpoint-000002"
    ckpt.mkdir(parents=True)
    (ckpt / "pytorch_lora_weights.safetensors").write_bytes(b"x")
    sample = run / "samples" / "epoch-0002" / "clip-0.mp4"
    sample.parent.mkdir(parents=True)
    sample.write_bytes(b"mp4")
    with gr.Blocks() as demo:
        build_train_tab(svc)
    fns = {getattr(f.fn, "__name__", ""): f.fn for f in demo.fns.values()}
    out = fns["on_refresh"]("r", None, None)
    choices = out[6]["choices"] if isinstance(out[6], dict) else out[6].choices
    assert [value for _, value in choices] == ["checkpoints/checkpoint-000002/pytorch_lora_weights.safetensors"]
    served = [Path(p) for p in out[5]]  # the gallery's clips: copies in a served folder of their own
    assert served == [tmp_path / "served" / "train-samples" / "r" / "epoch-0002-clip-0.mp4"] and served[0].read_bytes() == b"mp4"
    status = fns["train_status"]("r")
    assert status["checkpoints"] == ["checkpoints/checkpoint-000002/pytorch_lora_weights.safetensors"]
    assert status["samples"] == ["samples/epoch-0002/clip-0.mp4"]
    assert str(tmp_path) not in json.dumps(status)
    assert fns["on_use"]("r", "checkpoints/checkpoint-000002/pytorch_lora_weights.safetensors", "") == "r/checkpoints/checkpoint-000002"
    with pytest.raises(gr.Error, match="not one of run"):
        fns["on_use"]("r", "../../etc/passwd", "")
