"""TinyWorld tab handler: files in a bounded cache under the data dir, request sizes bounded."""

import os
import tempfile

import pytest

from studio.errors import UserError
from studio.ui.tinyworld_tab import render_tinyworld

PROMPT = "Camera pan left. A red cube on a checkered floor."


def test_renders_go_to_one_folder_per_input_under_the_data_dir(tmp_path):
    before = set(os.listdir(tempfile.gettempdir()))
    video, depth, info, notes = render_tinyworld(PROMPT, 0, 5, 64, data_dir=tmp_path)
    assert {p for p in set(os.listdir(tempfile.gettempdir())) - before if p.startswith("tinyworld-")} == set()
    assert os.path.dirname(video) == os.path.dirname(depth)
    assert os.path.dirname(os.path.dirname(video)) == str(tmp_path / "compare" / "tinyworld")
    assert render_tinyworld(PROMPT, 0, 5, 64, data_dir=tmp_path)[0] == video       # same inputs, same folder
    assert render_tinyworld(PROMPT, 1, 5, 64, data_dir=tmp_path)[0] != video
    assert info["moves"] == ["pan_left"] and notes == []


@pytest.mark.parametrize("args, match", [
    (("", 0, 17, 64), "^Prompt: type a prompt"),
    ((PROMPT, 0, 257, 64), "^Frames: 257 frames; pick 2 to 65"),
    ((PROMPT, 0, 17, 1024), "^Size: 1024 is not offered"),
    ((PROMPT, -1, 17, 64), "^Seed: -1 is out of range"),
    ((PROMPT, "x", 17, 64), "whole numbers"),
    ((["a list"], 0, 17, 64), "^Prompt: expected text"),
])
def test_requests_the_tab_cannot_make_are_refused_before_rendering(tmp_path, args, match):
    with pytest.raises(UserError, match=match):
        render_tinyworld(*args, data_dir=tmp_path)
