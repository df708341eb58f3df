"""What the studio can load, by name: generators and LoRA adapters found on this machine.

The UI and the API show and take these names, never server paths. On an exposed studio (a Space, or
bound to a non-loopback host) a model or LoRA must be one of them; locally a path or hub id typed by
the user is passed through to ``load_pipeline`` as before.

Models: ``tinyworld``, the Wan presets, and every diffusers Wan checkpoint in the Hugging Face cache.
LoRAs: ``assets/lora/<name>`` and ``<data dir>/runs/<run>/checkpoints/<checkpoint>``. ``tuned`` names
whatever the tuned slot holds when the request arrives.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from studio.pipelines import LORA_WEIGHT_NAME, PRESETS, TINYWORLD_DIR, lora_display_name

ASSET_LORAS = TINYWORLD_DIR.parent / "lora"
TUNED_SLOT = "tuned"


@dataclass(frozen=True)
class Entry:
    name: str    # what the UI shows and the API takes
    target: str  # what load_pipeline takes (a model id, a directory or a LoRA file)
    note: str = ""


def _hub_cache() -> Path:
    return Path(os.environ.get("HF_HUB_CACHE") or Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface")) / "hub")


def _cached_repo_ids() -> set[str]:
    """Hub ids of diffusers Wan pipelines that have a snapshot in the local cache."""
    out = set()
    for repo in _hub_cache().glob("models--*"):
        for index in repo.glob("snapshots/*/model_index.json"):
            try:
                if json.loads(index.read_text()).get("_class_name") in ("WanPipeline", "WorldPipeline"):
                    out.add(repo.name[len("models--"):].replace("--", "/"))
            except (OSError, ValueError):
                continue
    return out


def model_entries() -> list[Entry]:
    cached = _cached_repo_ids()
    entries = [Entry("tinyworld", "tinyworld", "embedded TinyWorld generator")]
    for name, preset in PRESETS.items():
        on_disk = preset.repo_id in cached
        entries.append(Entry(name, name, "on disk" if on_disk else f"not downloaded: `hf download {preset.repo_id}`"))
    preset_ids = {p.repo_id for p in PRESETS.values()}
    entries += [Entry(repo_id, repo_id, "on disk") for repo_id in sorted(cached - preset_ids)]
    return entries


def lora_entries(data_dir: Path | str | None = None) -> list[Entry]:
    entries = [Entry(p.parent.name, str(p)) for p in sorted(ASSET_LORAS.glob(f"*/{LORA_WEIGHT_NAME}"))]
    if data_dir is not None:
        runs = Path(data_dir) / "runs"
        for p in sorted(runs.glob(f"*/checkpoints/*/{LORA_WEIGHT_NAME}")):
            entries.append(Entry(f"runs/{lora_display_name(p)}", str(p)))
    return entries


def resolve_model(value: str | None, exposed: bool) -> str:
    """The model id for load_pipeline; on an exposed studio only a listed name."""
    value = (value or "tinyworld").strip()
    names = {e.name: e.target for e in model_entries()}
    if value in names:
        return names[value]
    if exposed:
        raise PermissionError(f"model: {value!r} is not one of this studio's models ({', '.join(names)}); "
                              "pick one from the list")
    return value


def resolve_lora(value: str | None, data_dir: Path | str | None, exposed: bool, tuned_slot: str | None) -> str | None:
    """The LoRA file for load_pipeline (None: baseline only); ``tuned`` is the slot's LoRA at this moment."""
    value = (value or "").strip()
    if not value or value.lower() == "none":
        return None
    if value == TUNED_SLOT:
        return tuned_slot
    entries = {e.name: e.target for e in lora_entries(data_dir)}
    if value in entries:
        return entries[value]
    if exposed:
        raise PermissionError(f"LoRA: {value!r} is not one of this studio's LoRAs; pick one from the list "
                              f"({', '.join([TUNED_SLOT, *entries]) })")
    return value
