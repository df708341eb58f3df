"""TinyWorld: a procedural 3D world with exact depth and camera ground truth."""

from studio.tinyworld.render import RenderedClip, intrinsics, render_clip, render_scene
from studio.tinyworld.scene import (
    COLORS, GROUNDS, MOTIONS, SHAPES, SKIES, Scene, SceneObject, parse_scene_prompt, scene_from_prompt,
)

__all__ = [
    "COLORS", "GROUNDS", "MOTIONS", "SHAPES", "SKIES", "RenderedClip", "Scene", "SceneObject",
    "intrinsics", "parse_scene_prompt", "render_clip", "render_scene", "scene_from_prompt",
]
