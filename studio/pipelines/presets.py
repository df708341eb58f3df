"""Known Wan checkpoints and the generation settings each is meant for."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """A known checkpoint with the generation settings it is meant for."""

    repo_id: str
    height: int
    width: int
    num_frames: int
    steps: int
    guidance: float
    fps: int = 16
    warp_strength: float = 0.35


PRESETS: dict[str, Preset] = {
    # World-R1's settings: 480×832, 81 frames, 50 steps, CFG 5; wrap strength 0.35 / 0.40.
    "Wan2.1-T2V-1.3B": Preset("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", 480, 832, 81, 50, 5.0, 16, 0.35),
    "Wan2.1-T2V-14B": Preset("Wan-AI/Wan2.1-T2V-14B-Diffusers", 480, 832, 81, 50, 5.0, 16, 0.40),
    "Wan2.2-T2V-A14B": Preset("Wan-AI/Wan2.2-T2V-A14B-Diffusers", 480, 832, 81, 40, 4.0, 16, 0.40),
    "Wan2.2-TI2V-5B": Preset("Wan-AI/Wan2.2-TI2V-5B-Diffusers", 704, 1280, 121, 50, 5.0, 24, 0.35),
}
