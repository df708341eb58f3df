"""studio.app.catalog: models and LoRAs by name; an exposed studio loads only what it lists."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from studio.app import catalog
from studio.pipelines import LORA_WEIGHT_NAME


def test_models_list_tinyworld_and_the_presets_with_how_to_get_them(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    entries = {e.name: e for e in catalog.model_entries()}
    assert entries["tinyworld"].target == "tinyworld"
    assert "hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in entries["Wan2.1-T2V-1.3B"].note


def test_a_wan_checkpoint_in_the_hub_cache_is_listed(monkeypatch, tmp_path):
    snap = tmp_path / "models--someone--tiny-wan" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "model_index.json").write_text('{"_class_name": "WanPipeline"}')
    other = tmp_path / "models--someone--sd" / "snapshots" / "abc"
    other.mkdir(parents=True)
    (other / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    names = [e.name for e in catalog.model_entries()]
    assert "someone/tiny-wan" in names and "someone/sd" not in names


def test_loras_are_named_by_folder_and_run_never_by_server_path(tmp_path, tuned_lora):
    ckpt = tmp_path / "runs" / "my-run" / "checkpoints" / "checkpoint-000010"
    ckpt.mkdir(parents=True)
    shutil.copy(tuned_lora, ckpt / LORA_WEIGHT_NAME)
    entries = {e.name: e.target for e in catalog.lora_entries(tmp_path)}
    assert entries["runs/my-run/checkpoints/checkpoint-000010"] == str(ckpt / LORA_WEIGHT_NAME)
    assert "world-r1-tinyworld-no-schedule" in entries
    assert not any(str(tmp_path) in name or name.startswith("/") for name in entries)


def test_exposed_studio_takes_listed_names_only(tmp_path):
    assert catalog.resolve_model("tinyworld", exposed=True) == "tinyworld"
    with pytest.raises(PermissionError, match="model"):
        catalog.resolve_model("/etc", exposed=True)
    with pytest.raises(PermissionError, match="LoRA"):
        catalog.resolve_lora("/root/secret.safetensors", tmp_path, exposed=True, tuned_slot=None)
    listed = catalog.resolve_lora("world-r1-tinyworld", tmp_path, exposed=True, tuned_slot=None)
    assert Path(listed).name == LORA_WEIGHT_NAME and Path(listed).is_file()
    # Locally a path is passed through to load_pipeline, which checks it.
    assert catalog.resolve_model(str(tmp_path), exposed=False) == str(tmp_path)


def test_the_tuned_slot_is_read_when_the_request_arrives(tmp_path):
    assert catalog.resolve_lora("tuned", tmp_path, exposed=True, tuned_slot="/a/slot.safetensors") == "/a/slot.safetensors"
    assert catalog.resolve_lora("tuned", tmp_path, exposed=True, tuned_slot=None) is None
    assert catalog.resolve_lora("none", tmp_path, exposed=True, tuned_slot="/a") is None
    assert catalog.resolve_lora("", tmp_path, exposed=False, tuned_slot="/a") is None
