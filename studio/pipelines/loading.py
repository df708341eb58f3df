"""Loading generators by name (TinyWorld, a preset, a local dir or a hub id) with optional LoRA
adapters; one cache of loaded pipelines, LoRA variants as views sharing the base weights."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

from studio.pipelines.lora import LORA_WEIGHT_NAME, base_fingerprint, check_lora_base, lora_display_name
from studio.pipelines.presets import PRESETS
from studio.pipelines.world import WorldPipeline

ROOT = Path(__file__).resolve().parents[2]
TINYWORLD_DIR = ROOT / "assets" / "generator"
_CACHE: dict[tuple, WorldPipeline] = {}
_CACHE_LOCK = threading.Lock()
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_snapshot(repo_id: str, what: str) -> Path:
    """Local snapshot of a hub repo; offline and uncached -> FileNotFoundError at once."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as cached_error:  # noqa: BLE001 - any miss in the cache
        if _offline():
            raise FileNotFoundError(
                f"{what} {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE=1. "
                f"Download it where there is internet: `hf download {repo_id}` (or "
                f"`huggingface-cli download {repo_id} --local-dir DIR`), then copy the cache "
                f"(~/.cache/huggingface/hub) here or pass the local directory instead of the hub id."
            ) from cached_error
    try:
        return Path(snapshot_download(repo_id))
    except Exception as e:  # noqa: BLE001 - wrong id, gated repo, no network
        raise ValueError(f"could not download {what} {repo_id!r} from the Hugging Face hub: {e}") from e


def resolve_model(model: str) -> tuple[Path, str]:
    """(local directory, display name) for a model id; raises before anything heavy."""
    if not isinstance(model, str) or not model.strip():
        raise ValueError(f"model must be a non-empty string, got {model!r}")
    if model == "tinyworld":
        if not (TINYWORLD_DIR / "model_index.json").exists():
            raise FileNotFoundError(
                f"the TinyWorld generator is missing from {TINYWORLD_DIR}; train and export it with "
                "`python -m training.pretrain_generator all`"
            )
        return TINYWORLD_DIR, "tinyworld"
    if model in PRESETS:
        return _hub_snapshot(PRESETS[model].repo_id, "model"), model
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "model_index.json").is_file():
            raise ValueError(f"{path} is not a diffusers pipeline directory (no model_index.json)")
        return path.resolve(), str(path)
    if _HUB_ID.match(model) and not model.startswith((".", "/", "~")):
        return _hub_snapshot(model, "model"), model
    if os.sep in model or model.startswith((".", "~")):
        raise FileNotFoundError(f"model directory {model!r} does not exist")
    raise ValueError(
        f"unknown model {model!r}; expected 'tinyworld', a preset ({', '.join(PRESETS)}), "
        "a local diffusers directory, or a hub id like 'Wan-AI/Wan2.1-T2V-1.3B-Diffusers'"
    )


def resolve_lora(lora: str | os.PathLike) -> Path:
    """Path of a LoRA safetensors file (file, directory holding one, or hub id), checked to be one."""
    from safetensors import safe_open

    lora_str = str(lora)
    path = Path(lora_str).expanduser()
    if not path.exists():
        if _HUB_ID.match(lora_str) and not lora_str.startswith((".", "/", "~")):
            path = _hub_snapshot(lora_str, "LoRA")
        else:
            raise FileNotFoundError(f"LoRA {lora_str!r} does not exist (expected a .safetensors file, a directory holding one, or a hub id)")
    if path.is_dir():
        if (path / LORA_WEIGHT_NAME).is_file():
            path = path / LORA_WEIGHT_NAME
        else:
            files = sorted(path.glob("*.safetensors"))
            if len(files) != 1:
                raise FileNotFoundError(
                    f"LoRA directory {lora_display_name(path)} must hold {LORA_WEIGHT_NAME} (or exactly one .safetensors file); found {len(files)}"
                )
            path = files[0]
    if path.suffix != ".safetensors":
        raise ValueError(f"LoRA {lora_display_name(path)} is not a .safetensors file; only safetensors LoRA weights are loaded")
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = list(f.keys())
    except Exception as e:  # noqa: BLE001 - truncated or not safetensors at all
        raise ValueError(f"LoRA {lora_display_name(path)} is corrupt or not a safetensors file ({type(e).__name__}); re-export it with save_lora_weights") from e
    if not keys or not any("lora" in k for k in keys):
        raise ValueError(f"{lora_display_name(path)} holds no LoRA weights (no 'lora_A'/'lora_B' keys); save it with WorldPipeline.save_lora_weights")
    return path.resolve()


def _resolve_dtype(dtype, device: str, is_tinyworld: bool):
    import torch

    if dtype is None:
        return torch.bfloat16 if (device.startswith("cuda") and not is_tinyworld) else torch.float32
    if isinstance(dtype, str):
        table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
                 "float16": torch.float16, "fp16": torch.float16}
        if dtype not in table:
            raise ValueError(f"dtype must be one of {', '.join(table)}, got {dtype!r}")
        return table[dtype]
    return dtype


def load_pipeline(
    model: str = "tinyworld",
    lora: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    dtype=None,
    cpu_offload: str | None = None,
    vae_tiling: bool = False,
    vae_slicing: bool = False,
    lora_scale: float = 1.0,
    cache: bool = True,
) -> WorldPipeline:
    """Load (or fetch from the cache) a generator, optionally with a LoRA adapter switched on.

    device: "cpu", "cuda", "cuda:1" … (default: cuda if available); dtype: "bfloat16" / "float16" /
    "float32" (default bf16 for Wan on GPU, fp32 otherwise); cpu_offload: None, "model" or
    "sequential" (diffusers offloading, for GPUs with little memory); vae_tiling / vae_slicing:
    the Wan VAE's memory savers. ``cache=False`` returns a private pipeline (e.g. for training).
    """
    import torch

    if cpu_offload not in (None, "model", "sequential"):
        raise ValueError(f"cpu_offload must be None, 'model' or 'sequential', got {cpu_offload!r}")
    if not isinstance(lora_scale, (int, float)) or not 0.0 <= lora_scale <= 4.0:
        raise ValueError(f"lora_scale must be a number in [0, 4], got {lora_scale!r}")
    path, name = resolve_model(model)
    lora_path = resolve_lora(lora) if lora is not None else None
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' requested but no CUDA GPU is available; use device='cpu'")
    torch_dtype = _resolve_dtype(dtype, device, name == "tinyworld")
    key = (str(path), device, str(torch_dtype), cpu_offload, vae_tiling, vae_slicing)

    with _CACHE_LOCK:
        pipe = _CACHE.get(key) if cache else None
        if pipe is None:
            pipe = _load_base(path, name, device, torch_dtype, cpu_offload, vae_tiling, vae_slicing)
            if cache:
                _CACHE[key] = pipe
        if lora_path is None:
            return pipe
        adapter = "lora_" + hashlib.sha1(str(lora_path).encode()).hexdigest()[:10]
        with pipe._lock:
            if adapter not in pipe._studio_adapters:
                check_lora_base(lora_path, pipe)
                try:
                    pipe.load_lora_weights(str(lora_path.parent), weight_name=lora_path.name, adapter_name=adapter)
                    if adapter not in (getattr(pipe.transformer, "peft_config", None) or {}):
                        # diffusers only warns when no key names a layer of this transformer
                        raise ValueError(
                            "none of its weights name a layer of this model's transformer (it was made for "
                            "another architecture, e.g. a U-Net)")
                except Exception as e:  # noqa: BLE001 - wrong shapes, wrong targets, corrupt tensors
                    try:
                        pipe.delete_adapters([adapter])
                    except Exception:  # noqa: BLE001 - nothing was added
                        pass
                    raise ValueError(f"LoRA {lora_display_name(lora_path)} does not fit model {name!r}: {e}") from e
            pipe._studio_adapters[adapter] = float(lora_scale)
        return pipe.with_adapter(adapter)


def _load_base(path: Path, name: str, device: str, torch_dtype, cpu_offload, vae_tiling, vae_slicing) -> WorldPipeline:
    import json

    index = json.loads((path / "model_index.json").read_text())
    if index.get("_class_name") not in ("WanPipeline", "WorldPipeline"):
        raise ValueError(
            f"{path} holds a {index.get('_class_name')!r}; only Wan text-to-video checkpoints "
            "(WanPipeline) and the TinyWorld generator are supported"
        )
    import importlib

    for entry in index.values():
        # Our own components (the TinyWorld codec) live in this package; diffusers loads a
        # custom class only once its module is imported. Other modules are never imported.
        if isinstance(entry, list) and entry and isinstance(entry[0], str) and entry[0].startswith("studio."):
            importlib.import_module(entry[0])
    kwargs = {}
    if name in PRESETS:
        p = PRESETS[name]
        kwargs.update(default_height=p.height, default_width=p.width, default_num_frames=p.num_frames,
                      default_steps=p.steps, default_guidance=p.guidance, fps=p.fps, warp_strength=p.warp_strength)
    pipe = WorldPipeline.from_pretrained(path, dtype=torch_dtype, local_files_only=True, **kwargs)
    for module in (pipe.text_encoder, pipe.transformer, pipe.transformer_2, pipe.vae):
        if module is not None:
            module.eval()  # T5 dropout would otherwise make outputs random
    if cpu_offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif cpu_offload == "sequential":
        pipe.enable_sequential_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_tiling and hasattr(pipe.vae, "enable_tiling"):
        pipe.vae.enable_tiling()
    if vae_slicing and hasattr(pipe.vae, "enable_slicing"):
        pipe.vae.enable_slicing()
    pipe.model_name = name
    pipe.base_fingerprint = base_fingerprint(pipe.transformer)
    return pipe


def clear_cache() -> None:
    """Forget every cached pipeline (frees their memory once nothing else holds them)."""
    with _CACHE_LOCK:
        _CACHE.clear()
