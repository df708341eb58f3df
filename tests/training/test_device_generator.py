"""scripts/device_generator.sh: the one-call GPU job for the generator, checked on the CPU in its
SMOKE mode (tiny model, a few clips): it renders, fits the 16x16-grid codec, trains, and returns a
pipeline in parts that reassemble into a model the studio loads and samples."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "device_generator.sh"


def test_device_job_refuses_to_start_without_an_output_folder(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode != 0
    assert "OUT must name the folder" in run.stderr


@pytest.mark.slow
def test_device_job_smoke_run_returns_a_pipeline_the_studio_loads(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "OUT": str(out), "WORK": str(work), "SMOKE": "1", "PY": sys.executable}
    run = subprocess.run(["bash", str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]

    parts = sorted(out.glob("pipeline.tar.part-*"))
    assert parts and all(p.stat().st_size <= 15 * 2**20 for p in parts)  # the device returns files <= 16 MiB
    log = (out / "log.txt").read_text()
    for stage in ("render", "codec", "train"):
        assert f"stage {stage}:" in log
    losses = [json.loads(line)["loss"] for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert losses and all(math.isfinite(l) and l > 0 for l in losses)

    tar_path = tmp_path / "pipeline.tar"
    tar_path.write_bytes(b"".join(p.read_bytes() for p in parts))
    with tarfile.open(tar_path) as tar:
        tar.extractall(tmp_path / "back", filter="data")
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert (config["codec_scale_spatial"], config["z_dim"], config["patch"]) == (4, 8, 4)

    from studio.pipelines import load_pipeline

    clip = load_pipeline(str(tmp_path / "back" / "pipeline-final"), cache=False).generate(
        "Camera pan left. A red cube on a checkered floor.", seed=0, steps=2)
    assert clip.frames.shape == (17, 64, 64, 3) and clip.frames.dtype.name == "uint8"
