"""What the training tests share: a tiny random studio.pipelines.WorldPipeline saved to a folder (Wan
components from tests/tiny_wan.py) and a cheap reward set."""
from __future__ import annotations


def brightness_rewards():
    """A cheap, deterministic reward set for loop tests: mean brightness plus a red-channel term."""
    from studio.rewards import RewardSet

    def bright(prompts, clips, **_):
        return [float(c.mean() / 255.0) for c in clips]

    def red(prompts, clips, **_):
        return [float(c[..., 0].mean() / 255.0) for c in clips]

    return RewardSet(functions={"bright": bright, "red": red}, weights={"bright": 1.0, "red": 0.5})


def tiny_world_pipeline_dir(out_dir, seed: int = 0):
    """Save a tiny random studio.pipelines.WorldPipeline (UMT5 + Wan transformer + Wan VAE) to out_dir."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from tiny_wan import tiny_wan_components

    from studio.pipelines import WorldPipeline

    pipe = WorldPipeline(
        **tiny_wan_components(seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), max_sequence_length=16,
        default_height=32, default_width=32, default_num_frames=5, default_steps=4, warp_box=3,
    )
    pipe.save_pretrained(out_dir)
    return out_dir
