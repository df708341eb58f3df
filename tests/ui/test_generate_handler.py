"""The Generate tab's handler: models and LoRAs by name, the tuned slot read per request."""

from __future__ import annotations

import shutil

import pytest

from studio.pipelines import LORA_WEIGHT_NAME, stamp_lora
from studio.app.services import Services
from studio.ui.generate_tab import lora_choices, run_compare

ARGS = ("Camera pan left. A red cube on a checkered floor.", 0, 2, 5.0, 5, 64, False)


def test_an_exposed_studio_refuses_server_paths_before_any_work(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_EXPOSED", "1")
    services = Services(tmp_path)
    with pytest.raises(PermissionError, match="model"):
        run_compare(services, *ARGS, "/root", "none")
    with pytest.raises(PermissionError, match="LoRA"):
        run_compare(services, *ARGS, "tinyworld", "/etc/passwd")


def test_a_slot_lora_made_for_another_base_shows_the_baseline_and_says_why(tmp_path, tuned_lora):
    services = Services(tmp_path)
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(tuned_lora, other / LORA_WEIGHT_NAME)
    stamp_lora(other / LORA_WEIGHT_NAME, "0123456789abcdef")
    services.training.use_lora(str(other))
    r = run_compare(services, *ARGS, "tinyworld", "tuned")
    assert r["baseline_video"] and r["tuned_video"] is None
    assert any("trained on another base model" in n for n in r["notes"])
    # The slot changes while the page is open: the next click uses the new one at once.
    services.training.use_lora(tuned_lora)
    r = run_compare(services, *ARGS, "tinyworld", "tuned")
    assert r["tuned_video"] is not None


def test_the_lora_picker_names_the_slot_and_the_shipped_loras(tmp_path):
    labels = dict(lora_choices(Services(tmp_path)))
    values = {v: k for k, v in lora_choices(Services(tmp_path))}
    assert values["tuned"].startswith("tuned slot (world-r1-tinyworld-no-schedule")
    assert "world-r1-tinyworld" in values and "none" in values
    assert not any(str(tmp_path) in label or label.startswith("/") for label in labels)
