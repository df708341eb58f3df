"""Training split across processes: `accelerate launch --multi_gpu --num_processes 2` on a machine
without a GPU starts two CPU processes that talk over gloo. With the same total batch and seed they
take the same optimizer step as one process, and only the main process writes the run folder."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tiny_pipeline import tiny_world_pipeline_dir
from training.train import list_checkpoints, main

REPO = Path(__file__).resolve().parents[2]
PROMPTS = ["Camera move left. A red cube on a checkered floor.", "Camera push in. A blue sphere on a checkered floor."]

# Imported by every Python process started with this folder on PYTHONPATH: records, per rank, each
# file or folder it creates, opens for writing, renames or removes under WRITES_UNDER.
SITECUSTOMIZE = '''
import atexit, json, os, sys
_root, _log = os.environ.get("WRITES_UNDER"), os.environ.get("WRITES_LOG")
if _root and _log:
    _seen, _busy = set(), [False]
    _write = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

    def _under(p):
        try:
            p = os.path.abspath(os.fsdecode(p))
        except TypeError:
            return None
        return p if p.startswith(_root) else None

    def _hook(event, args):
        if _busy[0]:
            return
        paths = []
        if event == "open" and args[2] is not None and args[2] & _write:
            paths = [args[0]]
        elif event in ("os.rename", "os.mkdir", "os.remove", "os.rmdir", "shutil.rmtree", "os.truncate"):
            paths = list(args[:2]) if event == "os.rename" else [args[0]]
        for p in paths:
            p = _under(p)
            if p:
                _seen.add((event, p))

    def _dump():
        _busy[0] = True
        rank = os.environ.get("RANK", "launcher")
        with open(f"{_log}.{rank}.{os.getpid()}", "w") as f:
            json.dump(sorted(_seen), f)

    sys.addaudithook(_hook)
    atexit.register(_dump)
'''


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_world_pipeline_dir(tmp_path_factory.mktemp("tiny-world"))


def overrides(model_dir: Path, prompts: Path, per_device_batch_size: int) -> list[str]:
    """The tinyworld-cpu preset at test size: one epoch of 4 clips (2 prompts × K = 2), one optimizer
    step, R_3D only (no CLIP scorer to load), raw LoRA weights in the saved file (ema off)."""
    return [f"pipeline={model_dir}", "num_frames=5", "height=32", "width=32", "num_steps=4", "group_size=2",
            f"per_device_batch_size={per_device_batch_size}", "num_batches_per_epoch=1", "train_batch_size=1",
            "steps_per_epoch=1", f"train_prompts={prompts}", f"eval_prompts={prompts}", "dynamic_prompts=",
            "num_eval_clips=0", "w_meta=0", "w_gen=0", "epochs=1", "max_minutes=0", "ema=false", "torch_threads=1"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_take_the_step_one_process_takes_and_only_the_main_one_writes(model_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))

    one = tmp_path / "one"
    assert main(["--preset", "tinyworld-cpu", "--out", str(one), "--no-progress", *overrides(model_dir, prompts, 4)]) == 0

    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    two = tmp_path / "two"
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(hooks),
           "WRITES_UNDER": str(two), "WRITES_LOG": str(tmp_path / "writes")}
    # The README's multi-GPU command with 2 processes instead of 8 (and a free port: tests run side by side).
    cmd = [str(Path(sys.executable).with_name("accelerate")), "launch", "--multi_gpu", "--num_processes", "2",
           "--main_process_port", str(free_port()),
           "-m", "training.train", "--preset", "tinyworld-cpu", "--out", str(two), "--no-progress",
           *overrides(model_dir, prompts, 2)]
    done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("done: 1 epochs, 1 steps") == 1, done.stdout  # one summary, from the main process
    assert done.stdout.count("config: ") == 1

    # The same optimizer step: the LoRA moved away from its zero-initialised B matrices, equally in both runs.
    a = load_file(str(list_checkpoints(one)[-1] / "pytorch_lora_weights.safetensors"))
    b = load_file(str(list_checkpoints(two)[-1] / "pytorch_lora_weights.safetensors"))
    assert a.keys() == b.keys()
    moved = max(float(v.abs().max()) for k, v in a.items() if "lora_B" in k)
    assert moved > 1e-4
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-4 * moved, msg=k)  # Adam: g/(|g|+eps) for |g| ~ eps
    rec_one, rec_two = ([json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for run in (one, two))
    assert len(rec_one) == len(rec_two) == 1
    for key in ("reward/total/mean", "reward/s_traj/mean", "reward/s_recon/std", "policy_loss", "kl", "grad_norm"):
        assert rec_two[0][key] == pytest.approx(rec_one[0][key], rel=1e-4, abs=1e-9), key

    # Only the main process wrote into the run folder; the other one wrote nothing there.
    writes = {}
    for f in tmp_path.glob("writes.*"):
        writes.setdefault(f.name.split(".")[1], []).extend(json.loads(f.read_text()))
    assert set(writes) >= {"0", "1"}, writes.keys()
    assert writes["1"] == [] and writes.get("launcher", []) == []
    assert any(p.endswith("metrics.jsonl") for _, p in writes["0"])
    assert any("checkpoint-000001" in p for _, p in writes["0"])
