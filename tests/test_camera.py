"""Camera language: what the parser reads, and the geometry of every primitive."""

import numpy as np
import pytest

from studio.camera import MOVES, CameraMagnitudes, camera_clause, camera_trajectory, parse_camera_motion


@pytest.mark.parametrize("text, expected", [
    ("Camera orbit left, then push in.", ["orbit_left", "push_in"]),
    ("Camera push in. A red cube.", ["push_in"]),
    ("Camera pull out, then pan right.", ["pull_out", "pan_right"]),
    ("Camera move left.", ["move_left"]),
    ("Camera move right, then tilt up.", ["move_right", "tilt_up"]),
    ("CAMERA ORBIT RIGHT!", ["orbit_right"]),
    ("The camera slowly pans to the left, then pushes in toward the cube.", ["pan_left", "push_in"]),
    ("The camera orbits left around the red cube and then pulls out.", ["orbit_left", "pull_out"]),
    ("The camera dollies in.", ["push_in"]),
    ("Dolly out slowly.", ["pull_out"]),
    ("The camera trucks left, then trucks right.", ["move_left", "move_right"]),
    ("The camera circles to the right.", ["orbit_right"]),
    ("The camera circles around the statue to the left.", ["orbit_left"]),
    ("The camera tilts down over the floor.", ["tilt_down"]),
    ("The camera tilts upward.", ["tilt_up"]),
    ("The camera pans-left.", ["pan_left"]),
    ("Static camera. A blue sphere.", ["fixed"]),
    ("The camera remains fixed on a blue sphere.", ["fixed"]),
    ("Camera is completely still.", ["fixed"]),
    ("Camera pan left, then pan right, then push in.", ["pan_left", "pan_right", "push_in"]),
    ("A lighthouse at dusk. The camera moves closer to the door.", ["push_in"]),
])
def test_parser_reads_camera_phrases_in_order(text, expected):
    assert parse_camera_motion(text) == expected


@pytest.mark.parametrize("text", [
    "A man with a fixed gaze stands by the sea.",
    "A panorama of the mountains.",
    "A pushcart full of apples on a street.",
    "The camera zooms in on the cat.",
    "A red cube slides to the left across a checkered floor.",
    "A child pushes in the door and pans left over the cake.",
    "A spinning blue sphere on a tiled floor.",
    "",
    "Camera.",
])
def test_parser_ignores_phrases_that_are_not_camera_moves(text):
    assert parse_camera_motion(text) == []


def test_parser_rejects_non_strings():
    with pytest.raises(TypeError):
        parse_camera_motion(None)  # type: ignore[arg-type]


@pytest.mark.parametrize("moves", [["orbit_left", "push_in"], ["fixed"], ["tilt_up"], ["pan_right", "pull_out"]])
def test_camera_clause_round_trips_through_the_parser(moves):
    assert parse_camera_motion(camera_clause(moves)) == moves


def _is_rotation(R):
    return np.allclose(R @ R.T, np.eye(3), atol=1e-9) and np.isclose(np.linalg.det(R), 1.0)


@pytest.mark.parametrize("move", MOVES)
def test_every_primitive_gives_valid_poses_starting_at_identity(move):
    T = camera_trajectory([move], num_frames=17)
    assert T.shape == (17, 4, 4)
    assert np.allclose(T[0], np.eye(4))
    assert all(_is_rotation(t[:3, :3]) for t in T)
    assert np.allclose(T[:, 3], [0, 0, 0, 1])


@pytest.mark.parametrize("move, axis, sign", [
    ("push_in", 2, 1), ("pull_out", 2, -1), ("move_left", 0, -1), ("move_right", 0, 1)])
def test_translations_follow_opencv_axes_at_world_r1_magnitudes(move, axis, sign):
    mag = CameraMagnitudes()
    T = camera_trajectory([move], num_frames=17, focus=1000.0)
    expected = {"push_in": 600, "pull_out": 600, "move_left": 220, "move_right": 220}[move]
    assert T[-1, axis, 3] == pytest.approx(sign * expected)
    assert np.allclose(np.delete(T[-1, :3, 3], axis), 0)
    assert np.allclose(T[-1, :3, :3], np.eye(3))
    assert mag.push * 1000 == 600


@pytest.mark.parametrize("move, component, sign", [
    ("pan_left", 0, -1), ("pan_right", 0, 1), ("tilt_up", 1, -1), ("tilt_down", 1, 1)])
def test_rotations_turn_the_view_without_translating(move, component, sign):
    T = camera_trajectory([move], num_frames=17)
    forward = T[-1, :3, 2]
    assert np.sign(forward[component]) == sign
    angle = np.degrees(np.arccos(forward[2]))
    assert angle == pytest.approx(14.0)
    assert np.allclose(T[:, :3, 3], 0)


@pytest.mark.parametrize("move, side", [("orbit_left", -1), ("orbit_right", 1)])
def test_orbit_circles_the_subject_at_the_focus_distance_and_keeps_it_in_view(move, side):
    focus = 5.0
    T = camera_trajectory([move], num_frames=17, focus=focus)
    pivot = np.array([0.0, 0.0, focus])
    centres = T[:, :3, 3]
    assert np.allclose(np.linalg.norm(centres - pivot, axis=1), focus)
    assert np.sign(centres[-1, 0]) == side
    for t in T:  # the pivot stays on the optical axis
        to_pivot = (pivot - t[:3, 3]) / focus
        assert np.allclose(to_pivot, t[:3, 2], atol=1e-9)
    # 24 degrees of arc
    assert np.degrees(np.arccos(T[-1, 2, 2])) == pytest.approx(24.0)


@pytest.mark.parametrize("move", ["push_in", "move_left", "pan_left", "orbit_right", "tilt_down"])
def test_each_segment_moves_at_constant_speed(move):
    T = camera_trajectory([move], num_frames=17)
    step_t = np.linalg.norm(np.diff(T[:, :3, 3], axis=0), axis=1)
    rel = [T[i][:3, :3].T @ T[i + 1][:3, :3] for i in range(16)]
    step_r = np.array([np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1)) for r in rel])
    for steps in (step_t, step_r):
        if steps.max() > 1e-9:
            assert np.allclose(steps, steps.mean(), rtol=1e-6)


def test_segments_are_chained_and_share_the_frames_equally():
    T = camera_trajectory(["pan_left", "push_in"], num_frames=17, focus=1.0)
    # First half pans without translating, second half pushes along the panned view direction.
    assert np.allclose(T[:9, :3, 3], 0)
    assert np.allclose(T[8, :3, :3], T[16, :3, :3])
    travel = T[16, :3, 3] - T[8, :3, 3]
    assert np.allclose(travel / np.linalg.norm(travel), T[8, :3, 2])
    assert np.linalg.norm(travel) == pytest.approx(0.6)


def test_orbit_after_push_in_pivots_about_the_subject_not_the_old_focus_point():
    focus = 10.0
    T = camera_trajectory(["push_in", "orbit_left"], num_frames=17, focus=focus)
    subject = np.array([0.0, 0.0, focus])
    d = np.linalg.norm(T[8:, :3, 3] - subject, axis=1)
    assert np.allclose(d, focus * 0.4)


def test_bad_moves_and_sizes_are_rejected_clearly():
    with pytest.raises(ValueError, match="unknown camera move 'zoom_in'"):
        camera_trajectory(["zoom_in"])
    with pytest.raises(ValueError, match="num_frames"):
        camera_trajectory(["push_in"], num_frames=0)
    assert np.allclose(camera_trajectory([], num_frames=5), np.eye(4))
