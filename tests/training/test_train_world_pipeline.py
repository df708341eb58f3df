"""The trainer on the real studio.pipelines.WorldPipeline (tiny random components): the contract,
camera-aware injection inside SDE rollouts, and the saved LoRA loading in the studio's tuned slot."""
import json

import numpy as np
import pytest
import torch

from tiny_pipeline import brightness_rewards, tiny_world_pipeline_dir
from training.config import TrainConfig
from training.flow_grpo import rollout, sde_step_with_logprob
from training.policy import camera_injector
from training.train import list_checkpoints, train

pipelines = pytest.importorskip("studio.pipelines")

PROMPTS = ["Camera move left. A red cube on a checkered floor.", "Camera push in. A blue sphere on a checkered floor.",
           "A red sphere on a checkered floor."]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_world_pipeline_dir(tmp_path_factory.mktemp("tiny-world"))


def test_rollout_with_camera_injection_scores_the_sde_output(model_dir):
    pipe = pipelines.load_pipeline(str(model_dir), device="cpu", cache=False)
    cfg = TrainConfig(num_frames=5, height=32, width=32, camera_init=True)
    seeds = [1, 2, 3]
    cond, uncond = pipe.encode_prompt(PROMPTS, 3.0)
    x0 = pipe.prepare_latents(PROMPTS, seeds, 5, 32, 32, camera_init=True)
    inject = camera_injector(pipe, x0, PROMPTS, seeds, cfg)
    assert inject is not None
    sigmas = pipe.sigmas(4)
    with torch.no_grad():
        ro = rollout(lambda x, s: pipe.predict_velocity(x, s, cond, uncond, 3.0), x0, sigmas, [0, 1], 0.7,
                     torch.Generator().manual_seed(0), inject)
        v = pipe.predict_velocity(ro.latents[:, 1], float(sigmas[1]), cond, uncond, 3.0)
        lp = sde_step_with_logprob(v, ro.latents[:, 1], float(sigmas[1]), float(sigmas[2]), 0.7, prev_sample=ro.next_latents[:, 1])[1]
    torch.testing.assert_close(lp, ro.log_probs[:, 1])
    # the input of step 1 is the injected SDE output of step 0 for camera prompts, untouched for the still one
    assert not torch.equal(ro.latents[0, 1], ro.next_latents[0, 0])
    assert torch.equal(ro.latents[2, 1], ro.next_latents[2, 0])


def test_training_on_the_world_pipeline_and_loading_the_lora(model_dir, tmp_path):
    (tmp_path / "p.txt").write_text("\n".join(PROMPTS))
    cfg = TrainConfig(
        epochs=2, num_frames=5, height=32, width=32, num_steps=4, guidance_scale=3.0, camera_init=True,
        group_size=2, per_device_batch_size=2, num_batches_per_epoch=2, train_batch_size=2, steps_per_epoch=1,
        lora_rank=4, lora_alpha=8, lr=1e-2, kl_beta=0.01, dynamic_prompts="", num_eval_clips=1,
        train_prompts=str(tmp_path / "p.txt"), eval_prompts=str(tmp_path / "p.txt"),
    )
    run = tmp_path / "run"
    factory = lambda: pipelines.load_pipeline(str(model_dir), device="cpu", cache=False)  # noqa: E731
    summary = train(cfg, run, pipeline=factory, rewards=brightness_rewards(), progress=False)
    assert summary.global_step == 2
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["policy_loss"]) for r in records if not r.get("eval"))
    assert (run / "samples" / "epoch-000002" / "00.mp4").is_file()

    base = pipelines.load_pipeline(str(model_dir), device="cpu")
    tuned = pipelines.load_pipeline(str(model_dir), lora=str(list_checkpoints(run)[-1]), device="cpu")
    a = base.generate(PROMPTS[0], seed=5, num_frames=5, height=32, width=32, steps=3)
    b = tuned.generate(PROMPTS[0], seed=5, num_frames=5, height=32, width=32, steps=3)
    assert a.frames.shape == b.frames.shape == (5, 32, 32, 3)
    pipelines.clear_cache()
