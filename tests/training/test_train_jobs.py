"""Runs launched the way the studio launches them: studio.app.jobs starting the real `python -m
training.train` CLI on a tiny random WorldPipeline (32×32, 5 frames), with the real geometry reward.
Resume through the job command, and cancel in the middle of a long epoch ending with a checkpoint
the run resumes from."""
import time

import pytest

from studio.app.jobs import JobManager
from tiny_pipeline import tiny_world_pipeline_dir
from training.train import list_checkpoints

PROMPTS = ["Camera move left. A red cube on a checkered floor.", "Camera push in. A blue sphere on a checkered floor."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_world_pipeline_dir(tmp_path_factory.mktemp("tiny-world"))


@pytest.fixture
def tiny_run(model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    # R_3D only (S_recon + S_traj): no CLIP scorer to load, so a run starts in a few seconds.
    overrides = dict(pipeline=model_dir, num_frames=5, height=32, width=32, num_steps=4, group_size=2,
                     per_device_batch_size=2, num_batches_per_epoch=1, train_batch_size=2, steps_per_epoch=1,
                     train_prompts=prompts, eval_prompts=prompts, dynamic_prompts="", num_eval_clips=0,
                     w_meta=0, w_gen=0, save_every=1, max_minutes=0, epochs=1, torch_threads=1)
    manager = JobManager(tmp_path / "runs")
    yield manager, {k: str(v) for k, v in overrides.items()}
    manager.close()


def wait_for(manager, name, statuses, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        s = manager.get(name)  # no poll(): the manager's watcher moves the run along
        if s.status in statuses:
            return s
        time.sleep(0.1)
    raise AssertionError(f"{name} stayed {manager.get(name).status}:\n{manager.log_tail(name, 20)}")


def wait_for_log(manager, name, text, timeout=120):
    deadline = time.time() + timeout
    while text not in manager.log_tail(name, 400):
        assert time.time() < deadline, f"{text!r} never appeared:\n{manager.log_tail(name, 20)}"
        assert manager.get(name).status == "running", manager.log_tail(name, 20)
        time.sleep(0.1)


def steps_and_epochs(manager, name):
    rows = [r for r in manager.metrics(name) if not r.get("eval")]
    return [r["step"] for r in rows], [r["epoch"] for r in rows]


def test_a_finished_run_resumes_from_its_checkpoint_through_the_job_command(tiny_run):
    manager, overrides = tiny_run
    manager.submit("r", "tinyworld-cpu", overrides)
    first = wait_for(manager, "r", {"finished", "failed"})
    assert first.status == "finished", manager.log_tail("r")
    # Resume with one more epoch: the job command is `--resume` followed by the overrides.
    manager.resume("r", {"epochs": "2"})
    second = wait_for(manager, "r", {"finished", "failed"})
    assert second.status == "finished" and second.returncode == 0, manager.log_tail("r")
    assert "resumed from" in manager.log_tail("r", 200)
    assert steps_and_epochs(manager, "r") == ([1, 2], [0, 1])
    assert [c.name for c in list_checkpoints(manager.run_dir("r"))] == ["checkpoint-000001", "checkpoint-000002"]


def test_cancel_inside_a_long_epoch_saves_a_checkpoint_and_the_run_resumes_from_it(tiny_run):
    manager, overrides = tiny_run
    # 300 rollout rounds in one epoch: far longer than any grace period a cancel could wait for.
    manager.submit("c", "tinyworld-cpu", {**overrides, "num_batches_per_epoch": "300", "save_every": "100"})
    wait_for(manager, "c", {"running"})
    wait_for_log(manager, "c", "epochs:")  # the progress bar: the epoch loop has begun
    time.sleep(1.0)
    manager.cancel("c")
    s = wait_for(manager, "c", {"cancelled", "failed", "finished"}, timeout=60)
    log = manager.log_tail("c", 200)
    assert s.status == "cancelled" and s.returncode == 0, log
    assert "stopped inside epoch 0 before its update" in log
    assert [c.name for c in list_checkpoints(manager.run_dir("c"))] == ["checkpoint-000000"]
    assert manager.metrics("c") == []  # the dropped epoch left no half-logged rows

    # The run resumes from that checkpoint (with a short epoch, to keep the test quick).
    manager.resume("c", {"num_batches_per_epoch": "1"})
    s = wait_for(manager, "c", {"finished", "failed"})
    assert s.status == "finished", manager.log_tail("c")
    assert "resumed from" in manager.log_tail("c", 200) and "checkpoint-000000" in manager.log_tail("c", 200)
    assert steps_and_epochs(manager, "c") == ([1], [0])
    assert list_checkpoints(manager.run_dir("c"))[-1].name == "checkpoint-000001"
