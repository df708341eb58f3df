"""Background runs: queueing, cancel with checkpoint, resume, and surviving an app restart.

The trainer here is a small real CLI with the same interface as training.train, so these tests
exercise process management without minutes of training.
"""

import json
import sys
import textwrap
import time

import pytest

from studio.app.jobs import JobManager, validate_run_name

TRAINER = textwrap.dedent('''
    import argparse, json, signal, sys, time
    from pathlib import Path
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset"); ap.add_argument("--out"); ap.add_argument("--resume", action="store_true")
    args, rest = ap.parse_known_args()
    opts = dict(kv.split("=", 1) for kv in rest)
    if args.preset == "broken":
        sys.exit("unknown preset 'broken'")
    out = Path(args.out); state = out / "state.json"
    step = json.loads(state.read_text())["step"] if args.resume and state.exists() else 0
    stop, signals = [], []
    def on_signal(*a):
        signals.append(1)
        # a trainer in a long epoch: the first signal only asks it to stop (stubborn=1 ignores it)
        if len(signals) > int(opts.get("stubborn", 0)):
            stop.append(1)
        else:
            print("stopping at the next safe point", flush=True)
    signal.signal(signal.SIGINT, on_signal)
    while step < int(opts.get("steps", 5)) and not stop:
        step += 1
        with open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps({"step": step, "reward/total/mean": step / 10}) + "\\n")
        state.write_text(json.dumps({"step": step}))
        print(f"step {step}", flush=True)
        time.sleep(float(opts.get("sleep", 0.05)))
    sys.exit(130 if stop else 0)
''')


@pytest.fixture
def manager(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "faketrain.py").write_text(TRAINER)
    m = JobManager(tmp_path / "runs", python=sys.executable, module="faketrain", env={"PYTHONPATH": str(pkg)})
    yield m
    m.close()


def wait_for(manager, name, statuses, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        manager.poll()
        s = manager.get(name)
        if s.status in statuses:
            return s
        time.sleep(0.05)
    raise AssertionError(f"{name} stayed {manager.get(name).status}")


def test_a_run_executes_in_the_background_and_its_metrics_and_log_are_readable(manager):
    manager.submit("r1", "tinyworld-cpu", {"steps": 4})
    s = wait_for(manager, "r1", {"finished", "failed"})
    assert s.status == "finished" and s.returncode == 0
    assert [r["step"] for r in manager.metrics("r1")] == [1, 2, 3, 4]
    assert "step 4" in manager.log_tail("r1")


def test_only_one_run_at_a_time_others_wait_in_order(manager):
    manager.submit("a", "p", {"steps": 20, "sleep": 0.05})
    manager.submit("b", "p", {"steps": 2})
    assert manager.get("b").status == "queued"
    wait_for(manager, "a", {"finished"})
    assert wait_for(manager, "b", {"finished"}).status == "finished"
    assert manager.get("a").ended <= manager.get("b").started


def test_cancel_lets_the_trainer_checkpoint_and_resume_continues_from_there(manager):
    manager.submit("c", "p", {"steps": 200, "sleep": 0.05})
    deadline = time.time() + 20
    while len(manager.metrics("c")) < 3 and time.time() < deadline:
        time.sleep(0.05)
    manager.cancel("c")
    s = wait_for(manager, "c", {"cancelled"})
    done = len(manager.metrics("c"))
    assert 3 <= done < 200 and s.returncode == 130
    manager.resume("c")
    wait_for(manager, "c", {"running", "cancelling", "finished"})
    time.sleep(0.3)
    manager.cancel("c")
    wait_for(manager, "c", {"cancelled"})
    steps = [r["step"] for r in manager.metrics("c")]
    assert steps == list(range(1, len(steps) + 1))  # resumed where it stopped: no step repeated
    assert len(steps) > done


def test_the_queue_moves_on_with_nobody_polling(manager):
    """A queued run starts when the one before it ends, with no page open to call poll()."""
    manager.submit("first", "p", {"steps": 4, "sleep": 0.05})
    manager.submit("second", "p", {"steps": 1})
    assert manager.get("second").status == "queued" and manager.queue_position("second") == 1
    deadline = time.time() + 30
    while manager.get("second").status != "finished":  # get() only reads job.json
        assert time.time() < deadline, manager.get("second")
        time.sleep(0.1)
    assert manager.get("first").status == "finished"
    assert manager.get("first").ended <= manager.get("second").started
    assert manager.queue_position("second") is None


def test_a_second_cancel_forces_a_trainer_that_is_still_finishing(manager):
    manager.submit("s", "p", {"steps": 2000, "sleep": 0.05, "stubborn": 1})
    deadline = time.time() + 20
    while len(manager.metrics("s")) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert manager.cancel("s").status == "cancelling"
    with pytest.raises(ValueError, match="already stopping"):
        manager.cancel("s")
    time.sleep(0.5)
    assert manager.get("s").status == "cancelling"  # still finishing: nothing killed it on a timer
    assert "stopping at the next safe point" in manager.log_tail("s")
    s = manager.cancel("s", force=True)
    assert s.forced
    s = wait_for(manager, "s", {"cancelled"})
    assert s.returncode == 130 and len(manager.metrics("s")) < 2000


def test_stopped_runs_can_be_deleted_active_ones_cannot(manager):
    manager.submit("busy", "p", {"steps": 400, "sleep": 0.05})
    manager.submit("waiting", "p", {"steps": 1})
    for name in ("busy", "waiting"):
        with pytest.raises(ValueError, match="cancel it"):
            manager.delete(name)
    manager.cancel("waiting")
    manager.delete("waiting")
    assert not (manager.runs_dir / "waiting").exists()
    with pytest.raises(KeyError):
        manager.delete("waiting")
    for bad in ("../runs", "a/b", ".jobs.lock", ""):
        with pytest.raises((ValueError, KeyError)):
            manager.delete(bad)
    # a folder the manager did not create (no job.json) is not its to delete
    (manager.runs_dir / "foreign").mkdir()
    with pytest.raises(KeyError):
        manager.delete("foreign")
    assert (manager.runs_dir / "foreign").is_dir()
    manager.cancel("busy")
    wait_for(manager, "busy", {"cancelled"})
    manager.delete("busy")
    assert [s.name for s in manager.list()] == []


def test_runs_survive_an_app_restart(manager, tmp_path):
    manager.submit("long", "p", {"steps": 30, "sleep": 0.05})
    manager.submit("next", "p", {"steps": 1})
    del manager  # the app goes away; the run goes on in its own session
    again = JobManager(tmp_path / "runs", python=sys.executable, module="faketrain",
                       env={"PYTHONPATH": str(tmp_path / "pkg")})
    assert {s.name: s.status for s in again.list()} == {"long": "running", "next": "queued"}
    assert wait_for(again, "long", {"finished"}).returncode == 0
    assert wait_for(again, "next", {"finished"}).status == "finished"


def test_a_failing_trainer_is_reported_failed_with_its_message(manager):
    manager.submit("bad", "broken")
    s = wait_for(manager, "bad", {"failed", "finished"})
    assert s.status == "failed" and s.returncode == 1
    assert "unknown preset 'broken'" in manager.log_tail("bad")


@pytest.mark.parametrize("name", ["", "../etc", "a/b", ".hidden", "x" * 65, "run name"])
def test_run_names_cannot_escape_the_runs_directory(manager, name):
    with pytest.raises(ValueError, match="run name"):
        manager.submit(name, "p")
    assert validate_run_name("ok-run_1.2") == "ok-run_1.2"


def test_duplicate_names_and_bad_transitions_are_refused(manager):
    manager.submit("d", "p", {"steps": 1})
    with pytest.raises(ValueError, match="already exists"):
        manager.submit("d", "p")
    wait_for(manager, "d", {"finished"})
    with pytest.raises(ValueError, match="nothing to cancel"):
        manager.cancel("d")
    with pytest.raises(KeyError):
        manager.get("nope")
    # A damaged job.json elsewhere does not break listing.
    (manager.runs_dir / "junk").mkdir()
    (manager.runs_dir / "junk" / "job.json").write_text("{not json")
    assert [s.name for s in manager.list()] == ["d"]
    json.loads((manager.runs_dir / "d" / "job.json").read_text())
