"""The named endpoints, called the way a user's script would: gradio_client against the running app."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def client(studio):
    from gradio_client import Client

    return Client(studio["url"], verbose=False)


def test_the_documented_endpoints_are_published(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert {"/generate", "/analyze", "/ab_next", "/ab_vote", "/ab_results", "/train_start", "/train_status"} <= names


def test_generate_returns_both_clips_and_a_metric_table_with_deltas(client, tuned_lora):
    out = client.predict("Camera pan left. A red cube on a checkered floor.", 3, 8, 5.0, 17, 64, True,
                         "tinyworld", tuned_lora, api_name="/generate")
    base_video, tuned_video, base_depth, tuned_depth, table = out[:5]
    assert base_video and tuned_video and base_depth and tuned_depth
    rows = {r[0]: r for r in table["data"]}
    assert rows["Depth-consistency L1"][1] is not None and rows["Depth-consistency L1"][3] is not None


def test_generate_rejects_bad_input_with_a_clear_message(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="prompt is empty"):
        client.predict("   ", 0, 8, 5.0, 17, 64, True, "tinyworld", "", api_name="/generate")
    with pytest.raises(AppError, match="4k\\+1|4k \\+ 1|num_frames"):
        client.predict("A red cube.", 0, 8, 5.0, 16, 64, True, "tinyworld", "", api_name="/generate")
    with pytest.raises(AppError, match="does not exist|not found|download"):
        client.predict("A red cube.", 0, 8, 5.0, 17, 64, True, "no-such-org/no-such-model", "", api_name="/generate")


def test_analyze_an_uploaded_clip(client, tmp_path):
    from gradio_client import handle_file

    from studio.tinyworld import render_clip
    from studio.video import write_mp4

    clip = render_clip("Camera orbit left. A green cone on a tiled floor.", seed=2)
    path = write_mp4(clip.frames, tmp_path / "orbit.mp4", min_side=64)
    depth_video, glb, _plot, metrics = client.predict(handle_file(str(path)),
                                                      "Camera orbit left. A green cone.", api_name="/analyze")
    assert depth_video and glb.endswith(".glb")
    assert metrics["trajectory_error_deg"] is not None and metrics["depth_consistency_l1"] < 0.2


def test_train_status_lists_runs(client):
    assert "runs" in client.predict("", api_name="/train_status")
