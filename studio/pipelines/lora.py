"""LoRA files: which base a LoRA was trained on (a fingerprint in its safetensors metadata), and the
names the UI shows for LoRA files instead of server paths."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from studio.pipelines.world import WorldPipeline

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"
# Safetensors metadata key of a LoRA file: the fingerprint of the base transformer it was trained on.
BASE_FINGERPRINT_KEY = "studio.base_fingerprint"


def base_fingerprint(transformer) -> str:
    """A short digest of a transformer's base weights, the same with or without LoRA adapters attached.

    It hashes each base tensor's name, shape and first 256 values rounded to bf16, so a checkpoint
    loaded in fp32 or bf16, on any device, gives the same digest, and it costs milliseconds even at
    Wan-14B size (no full pass over the weights).
    """
    import torch

    h = hashlib.sha256()
    for name, t in sorted(transformer.state_dict().items()):
        if "lora_" in name:
            continue
        name = name.replace(".base_layer", "")
        head = t.detach().flatten()[:256].to("cpu", torch.bfloat16).float().numpy()
        h.update(f"{name}:{tuple(t.shape)};".encode())
        h.update(head.tobytes())
    return h.hexdigest()[:16]


def lora_metadata(path: Path | str) -> dict[str, str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def stamp_lora(path: Path | str, fingerprint: str) -> None:
    """Record the base model's fingerprint in a LoRA safetensors file (its other metadata kept), atomically."""
    from safetensors.torch import load_file, save_file

    path = Path(path)
    meta = {**lora_metadata(path), BASE_FINGERPRINT_KEY: fingerprint}
    meta.setdefault("format", "pt")
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(load_file(str(path)), str(tmp), metadata=meta)
    os.replace(tmp, path)


def check_lora_base(lora_path: Path, pipe: "WorldPipeline") -> None:
    """Refuse a LoRA whose recorded base fingerprint is not this pipeline's (unstamped LoRAs pass)."""
    recorded = lora_metadata(lora_path).get(BASE_FINGERPRINT_KEY)
    if recorded and recorded != pipe.base_fingerprint:
        raise ValueError(
            f"LoRA {lora_display_name(lora_path)} was trained on another base model (fingerprint {recorded}; "
            f"{pipe.model_name or 'this model'} is {pipe.base_fingerprint}); a LoRA only fits the base it was "
            "trained on: train one on this base in the Training tab, or pick a LoRA made for it")


def lora_display_name(path: Path | str) -> str:
    """A LoRA's name for messages and the UI: the folder under assets/lora or runs, never a server path."""
    path = Path(path)
    folder = path.parent if path.name == LORA_WEIGHT_NAME else path
    parts = folder.parts
    for anchor in ("lora", "runs"):
        if anchor in parts:
            return "/".join(parts[len(parts) - parts[::-1].index(anchor):]) or folder.name
    return folder.name
