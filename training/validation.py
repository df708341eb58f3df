"""Validation inside a training run: the evaluation clips of held-out prompts (written as MP4), the
colour/shape collapse watch on them, and the score keep_best ranks checkpoints by."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from studio.util import atomic_write_text


def write_clips(out_dir: Path, clips: list, prompts: list[str], seeds: list[int]) -> None:
    from studio.video import write_mp4

    for i, clip in enumerate(clips):
        write_mp4(clip, out_dir / f"{i:02d}.mp4")
    atomic_write_text(out_dir / "prompts.json", json.dumps({"prompts": prompts, "seeds": seeds}, indent=1))


def attribute_watch(scorer_name: str, prompts: list[str], clips: list[np.ndarray]) -> dict[str, float]:
    """Colour and shape right (CLIP zero-shot judge) on the single-object eval prompts.

    The collapse watch: a policy that games the 3D reward loses these first (method doc, traps).
    Empty when no prompt names exactly one object with a colour, or no scorer loads.
    """
    from studio.tinyworld.scene import parse_scene_prompt
    from training.eval_generator import attribute_accuracy, judge_attributes
    from studio.rewards import get_scorer

    rows, kept = [], []
    for prompt, clip in zip(prompts, clips):
        objects = parse_scene_prompt(prompt).objects
        if len(objects) == 1 and objects[0].color:
            rows.append({"scene": {"objects": [{"color": objects[0].color, "shape": objects[0].shape}]}})
            kept.append(np.asarray(clip))
    if not rows or not scorer_name:
        return {}
    try:
        scorer = get_scorer(scorer_name)
    except (OSError, RuntimeError, ValueError):
        return {}
    acc = attribute_accuracy(rows, *judge_attributes(scorer, kept))
    return {"eval/colour_right": acc["color_single"], "eval/shape_right": acc["shape_single"],
            "eval/attribute_clips": float(acc["single_object_n"])}


def best_score(keep_best: str, record: dict) -> float | None:
    """Sum of the '+'-joined eval metrics in record; None when one is missing (not evaluated)."""
    values = [record.get(k.strip()) for k in keep_best.split("+")]
    if any(v is None or not np.isfinite(v) for v in values):
        return None
    return float(sum(values))
