"""TinyWorld renderer: ground truth that downstream geometry can rely on."""

import warnings

import numpy as np
import pytest

from studio.camera import MOVES, camera_trajectory
from studio.tinyworld import COLORS, SHAPES, intrinsics, render_clip
from studio.tinyworld.scene import Scene, SceneObject


def _reproject(clip, i: int, j: int):
    """Pixels of frame i with their depth, moved into frame j: (u, v, z) in j and the source mask."""
    F, H, W = clip.depth.shape
    K = clip.K
    v, u = np.mgrid[0:H, 0:W]
    z = clip.depth[i]
    ok = z > 0
    pts = np.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)], -1)
    w = pts[ok] @ clip.c2w[i].T
    cj = w @ np.linalg.inv(clip.c2w[j]).T
    zj = cj[:, 2]
    uj = cj[:, 0] / zj * K[0, 0] + K[0, 2] - 0.5
    vj = cj[:, 1] / zj * K[1, 1] + K[1, 2] - 0.5
    return uj, vj, zj, ok


@pytest.mark.parametrize("move", [m for m in MOVES])
def test_reprojected_pixels_land_on_the_same_surface_with_the_same_colour(move):
    clip = render_clip(f"Camera {move.replace('_', ' ')}. A red cube, a blue sphere and a green cone on a checkered floor.",
                       seed=3)
    F, H, W = clip.depth.shape
    for j in (F // 2, F - 1):
        uj, vj, zj, ok = _reproject(clip, 0, j)
        ui, vi = np.round(uj).astype(int), np.round(vj).astype(int)
        inside = (ui >= 0) & (ui < W) & (vi >= 0) & (vi < H) & (zj > 0)
        target_depth = clip.depth[j][vi[inside], ui[inside]]
        # Points with something nearer in front of them are occluded in frame j; skip those.
        unoccluded = (target_depth > 0) & (target_depth > 0.95 * zj[inside])
        assert unoccluded.mean() > 0.3
        rel = np.abs(target_depth[unoccluded] - zj[inside][unoccluded]) / zj[inside][unoccluded]
        assert np.median(rel) < 0.02
        same_surface = clip.instance[0][ok][inside][unoccluded] == clip.instance[j][vi[inside], ui[inside]][unoccluded]
        assert same_surface.mean() > 0.95
        src = clip.frames[0][ok][inside][unoccluded].astype(int)
        dst = clip.frames[j][vi[inside][unoccluded], ui[inside][unoccluded]].astype(int)
        assert np.median(np.abs(src - dst).sum(-1)) < 30


def test_clip_has_documented_shapes_types_and_intrinsics():
    clip = render_clip("Camera orbit left, then push in. A yellow pyramid.", num_frames=9, height=48, width=80, seed=1)
    assert clip.frames.shape == (9, 48, 80, 3) and clip.frames.dtype == np.uint8
    assert clip.depth.shape == (9, 48, 80) and clip.depth.dtype == np.float32
    assert clip.c2w.shape == (9, 4, 4)
    assert np.allclose(clip.K, intrinsics(48, 80))
    assert clip.K[0, 0] == pytest.approx(40 / np.tan(np.radians(30)))
    assert clip.moves == ["orbit_left", "push_in"]
    assert [o.shape for o in clip.scene.objects] == ["pyramid"]
    assert clip.scene.objects[0].color == "yellow"


def test_camera_poses_follow_the_camera_language_exactly():
    clip = render_clip("Camera pan right, then pull out. A white cylinder.", seed=2)
    assert np.allclose(clip.c2w_relative, camera_trajectory(["pan_right", "pull_out"], 17, focus=clip.focus), atol=1e-9)


def test_depth_is_z_along_the_optical_axis():
    clip = render_clip("Camera push in. A black cube on a tiled floor.", seed=4)
    # A ground pixel's depth equals the camera-frame z of the ground point hit by its ray.
    F, H, W = clip.depth.shape
    K, c2w = clip.K, clip.c2w[5]
    v, u = H - 2, W // 3
    z = clip.depth[5, v, u]
    ray = np.array([(u + 0.5 - K[0, 2]) / K[0, 0], (v + 0.5 - K[1, 2]) / K[1, 1], 1.0])
    world = c2w[:3, :3] @ (ray * z) + c2w[:3, 3]
    assert world[1] == pytest.approx(0.0, abs=1e-3)  # on the ground plane y = 0
    assert clip.instance[5, v, u] == 0


@pytest.mark.parametrize("move", MOVES)
def test_ground_and_objects_fill_at_least_half_of_every_frame(move):
    for seed in range(3):
        clip = render_clip(f"Camera {move.replace('_', ' ')}. A pink sphere and a brown cone.", seed=seed)
        assert ((clip.depth > 0).mean(axis=(1, 2)) >= 0.5).all()


@pytest.mark.parametrize("shape", SHAPES)
def test_every_shape_is_drawn_in_its_colour(shape):
    for color in ("red", "blue", "yellow"):
        clip = render_clip(f"Camera fixed. A large {color} {shape}.", num_frames=1, seed=0)
        mask = clip.instance[0] == 1
        assert mask.sum() > 40
        rgb = clip.frames[0][mask].astype(float).mean(0)
        ref = np.array(COLORS[color]) * 255
        # Shading darkens, but the hue stays: the closest palette colour is the object's.
        names = list(COLORS)
        dists = [np.linalg.norm(rgb / rgb.sum() - np.array(COLORS[n]) / sum(COLORS[n])) for n in names]
        assert names[int(np.argmin(dists))] == color or np.dot(rgb, ref) > 0


def test_objects_do_not_overlap_and_dynamic_objects_move():
    clip = render_clip("Camera fixed. A spinning red cube, a bouncing blue sphere and a sliding green cylinder.", seed=5)
    objs = clip.scene.objects
    assert [o.motion for o in objs] == ["spin", "bounce", "slide"]
    for a in range(3):
        for b in range(a + 1, 3):
            assert np.hypot(objs[a].x - objs[b].x, objs[a].z - objs[b].z) > objs[a].size + objs[b].size
    # Every object changes its pixels over the clip under a static camera.
    for k in (1, 2, 3):
        m0, m1 = clip.instance[0] == k, clip.instance[4] == k  # a quarter in: top of the bounce
        changed = np.abs(clip.frames[0].astype(int) - clip.frames[4].astype(int)).sum(-1)[m0 | m1].mean()
        assert changed > 20


def test_same_seed_same_clip_and_different_seed_different_layout():
    a = render_clip("Camera orbit right. A cone and a cube.", seed=7)
    b = render_clip("Camera orbit right. A cone and a cube.", seed=7)
    c = render_clip("Camera orbit right. A cone and a cube.", seed=8)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.depth, b.depth)
    assert not np.array_equal(a.frames, c.frames)


def test_unknown_words_are_ignored_with_a_warning_listing_them():
    with pytest.warns(UserWarning, match="ignored unknown words: dragon, majestic"):
        clip = render_clip("Camera push in. A majestic red dragon cube.")
    assert [(o.color, o.shape) for o in clip.scene.objects] == [("red", "cube")]


def test_prompt_without_objects_renders_the_default_scene_and_says_so():
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        clip = render_clip("Camera orbit left.")
    assert any("default scene" in str(w.message) for w in rec)
    assert len(clip.scene.objects) == 2 and clip.moves == ["orbit_left"]


@pytest.mark.parametrize("kwargs, match", [
    ({"num_frames": 0}, "num_frames"), ({"height": 3}, "height"), ({"width": 2.5}, "width"),
    ({"prompt": "x" * 3000}, "at most"), ({"prompt": None}, "string")])
def test_bad_arguments_raise_clear_errors(kwargs, match):
    args = {"prompt": "A red cube."} | kwargs
    with pytest.raises(ValueError, match=match):
        render_clip(**args)


def test_explicit_scene_renders_without_parsing():
    scene = Scene(objects=[SceneObject("cone", "orange", 0.6, 0.0, 0.0)], ground="stripes", sky="overcast",
                  moves=["tilt_down"])
    clip = render_clip("", scene=scene, num_frames=5)
    assert (clip.instance == 1).any(axis=(1, 2)).all()
    with pytest.raises(ValueError, match="unknown shape"):
        render_clip("", scene=Scene(objects=[SceneObject("torus", "red")]))
