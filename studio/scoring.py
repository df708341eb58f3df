"""CLIP-style text-frame scorer on open_clip.

``load_scorer("tinyworld")`` loads the project's small CLIP trained on TinyWorld frames and
captions (config ``assets/clip/tinyworld.json``, weights ``assets/clip/tinyworld.safetensors``,
written by ``training/pretrain_clip.py``). Any other open_clip architecture loads through the
same call with a pretrained tag or a local checkpoint, e.g.
``load_scorer("ViT-B-32", pretrained="laion2b_s34b_b79k")`` or
``load_scorer("ViT-B-32", pretrained="/models/clip.safetensors")``.

Weights are never downloaded unless ``allow_download=True``: a tag whose weights are not in the
local cache fails at once with a message naming what to download.

Frames follow docs/architecture.md: uint8 RGB (F, H, W, 3); a single image may be (H, W, 3).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from studio.util import TOKENIZER_LOCK

DEFAULT_CLIP_DIR = Path(__file__).resolve().parents[1] / "assets" / "clip"
TINYWORLD_NAME = "tinyworld"
TINYWORLD_WEIGHTS = f"{TINYWORLD_NAME}.safetensors"

_HF_WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
_registered_config_dirs: set[Path] = set()


def register_config_dir(folder: str | Path) -> None:
    """Make the open_clip model configs (*.json) in ``folder`` loadable by name (once per folder)."""
    import open_clip

    folder = Path(folder).resolve()
    if folder not in _registered_config_dirs:
        open_clip.add_model_config(folder)
        _registered_config_dirs.add(folder)


def check_images(images) -> list[np.ndarray] | np.ndarray:
    """Validate uint8 RGB input: (N, H, W, 3), (H, W, 3), or a sequence of (H, W, 3)."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 RGB, got dtype {images.dtype}")
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"frames must have shape (F, H, W, 3) or (H, W, 3), got {images.shape}")
        if images.shape[0] == 0 or images.shape[1] == 0 or images.shape[2] == 0:
            raise ValueError(f"frames must be non-empty, got shape {images.shape}")
        return images
    if isinstance(images, (list, tuple)):
        if not images:
            raise ValueError("no images given")
        for im in images:
            if not isinstance(im, np.ndarray) or im.ndim != 3:
                raise ValueError(f"each image in a list must be a (H, W, 3) uint8 array, got {type(im).__name__} "
                                 f"of shape {np.shape(im)}")
        return [check_images(im)[0] for im in images]
    raise ValueError(f"frames must be a uint8 numpy array or a list of them, got {type(images).__name__}")


def _check_texts(texts) -> list[str]:
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, (list, tuple)) or not texts or not all(isinstance(t, str) for t in texts):
        raise ValueError("text must be a non-empty string or a non-empty list of strings")
    return list(texts)


@dataclass
class Scorer:
    """An open_clip model with its tokenizer and image preprocessing, for numpy frames."""

    model: object
    tokenizer: object
    name: str
    pretrained: str | None
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    device: str = "cpu"
    batch_size: int = 64

    def preprocess(self, images) -> "torch.Tensor":
        """uint8 images -> normalised float (N, 3, S, S): resize the short side to S, centre crop."""
        import torch
        from torch.nn import functional as F

        images = check_images(images)
        # An array is one batch of equal-sized frames; a list may mix sizes, so one at a time.
        batches = [images] if isinstance(images, np.ndarray) else [im[None] for im in images]
        out = []
        for batch in batches:
            x = torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).float() / 255.0
            h, w = x.shape[-2:]
            s = self.image_size
            if (h, w) != (s, s):
                scale = s / min(h, w)
                nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
                x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
                top, left = (nh - s) // 2, (nw - s) // 2
                x = x[..., top : top + s, left : left + s].clamp(0, 1)
            out.append(x)
        x = torch.cat(out)
        mean = torch.tensor(self.mean).view(1, 3, 1, 1)
        std = torch.tensor(self.std).view(1, 3, 1, 1)
        return ((x - mean) / std).to(self.device)

    def image_features(self, images) -> np.ndarray:
        """L2-normalised image embeddings, float32 (N, D)."""
        import torch

        x = self.preprocess(images)
        feats = []
        with torch.inference_mode():
            for i in range(0, len(x), self.batch_size):
                f = self.model.encode_image(x[i : i + self.batch_size])
                feats.append(torch.nn.functional.normalize(f.float(), dim=-1).cpu())
        return torch.cat(feats).numpy()

    def text_features(self, texts) -> np.ndarray:
        """L2-normalised text embeddings, float32 (N, D)."""
        import torch

        texts = _check_texts(texts)
        with TOKENIZER_LOCK:
            tokens = self.tokenizer(texts)
        tokens = tokens.to(self.device)
        with torch.inference_mode():
            f = self.model.encode_text(tokens)
            return torch.nn.functional.normalize(f.float(), dim=-1).cpu().numpy()

    def score(self, frames, text: str) -> float:
        """Mean cosine similarity between ``text`` and each frame."""
        if not isinstance(text, str):
            raise ValueError(f"text must be a string, got {type(text).__name__}")
        img = self.image_features(frames)
        txt = self.text_features([text])
        return float((img @ txt[0]).mean())

    def zero_shot(self, frames_or_images, labels: Sequence[str]) -> np.ndarray:
        """Probabilities over ``labels`` (texts such as "a photo of a red object"), float32 (N, L)."""
        import torch

        labels = _check_texts(labels)
        img = self.image_features(frames_or_images)
        txt = self.text_features(labels)
        logit_scale = float(self.model.logit_scale.detach().exp()) if hasattr(self.model, "logit_scale") else 100.0
        return torch.softmax(torch.from_numpy(logit_scale * img @ txt.T), dim=-1).numpy()


def _cached_tag_weights(name: str, tag: str) -> tuple[str | None, str]:
    """(local file of a pretrained tag's weights or None, human-readable download hint)."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("file"):
        return (cfg["file"] if os.path.isfile(cfg["file"]) else None), f"file {cfg['file']}"
    hints = []
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        hub = cfg["hf_hub"]
        if hub.endswith("/"):  # open_clip's convention: repo id only, default file names
            repo_id, candidates = hub.rstrip("/"), list(_HF_WEIGHT_FILES)
        else:
            repo_id, filename = os.path.split(hub)
            candidates = [filename]
        for fn in candidates:
            hit = try_to_load_from_cache(repo_id, fn)
            if isinstance(hit, str) and os.path.isfile(hit):
                return hit, ""
        hints.append(f"`hf download {repo_id} {candidates[-1]}` (Hugging Face repo {repo_id})")
    if cfg.get("url"):
        local = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(cfg["url"])
        if local.is_file():
            return str(local), ""
        hints.append(f"{cfg['url']} into ~/.cache/clip/")
    return None, " or ".join(hints)


def load_scorer(name: str = TINYWORLD_NAME, pretrained: str | os.PathLike | None = None, device: str = "cpu",
                allow_download: bool = False) -> Scorer:
    """Load a CLIP scorer.

    name: "tinyworld" (the shipped TinyWorld CLIP; ``pretrained`` may point to another checkpoint
    file or folder of it), any open_clip model name (``open_clip.list_models()``), or an open_clip
    "hf-hub:org/repo" / "local-dir:/path" identifier.
    pretrained: an open_clip pretrained tag (``open_clip.list_pretrained_tags_by_model(name)``)
    or a path to a local checkpoint (.safetensors, .bin, .pt).
    allow_download: let open_clip fetch missing weights; otherwise missing weights raise
    FileNotFoundError at once, naming what to download.
    """
    import open_clip

    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    force_preprocess: dict = {}
    quick_gelu = False
    model_name, checkpoint = name, None

    if name == TINYWORLD_NAME:
        folder = DEFAULT_CLIP_DIR
        checkpoint = Path(pretrained) if pretrained is not None else DEFAULT_CLIP_DIR / TINYWORLD_WEIGHTS
        if checkpoint.is_dir():
            folder, checkpoint = checkpoint, checkpoint / TINYWORLD_WEIGHTS
        elif (checkpoint.parent / f"{TINYWORLD_NAME}.json").is_file():
            folder = checkpoint.parent
        if not (folder / f"{TINYWORLD_NAME}.json").is_file() or not checkpoint.is_file():
            raise FileNotFoundError(
                f"TinyWorld CLIP not found ({folder / (TINYWORLD_NAME + '.json')}, {checkpoint}); "
                "train it with `python -m training.pretrain_clip --out assets/clip`"
            )
        register_config_dir(folder)
        checkpoint = str(checkpoint)
    elif name.startswith(("hf-hub:", "local-dir:")):
        if name.startswith("hf-hub:") and not allow_download:
            from huggingface_hub import try_to_load_from_cache

            repo_id = name[len("hf-hub:"):]
            if not isinstance(try_to_load_from_cache(repo_id, "open_clip_config.json"), str):
                raise FileNotFoundError(
                    f"open_clip model {name} is not in the local Hugging Face cache; download it with "
                    f"`hf download {repo_id}` or call load_scorer(..., allow_download=True) where online"
                )
        if pretrained is not None:
            raise ValueError(f"pretrained must be None for {name!r}: the weights come from that source")
    else:
        if name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model {name!r}; see open_clip.list_models() "
                             f"(or use {TINYWORLD_NAME!r})")
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained is None:
            raise ValueError(f"{name} needs pretrained weights: a tag ({', '.join(tags) or 'none known'}) "
                             "or a path to a local checkpoint")
        pretrained = str(pretrained)
        if os.path.isfile(pretrained):
            checkpoint = pretrained
        elif pretrained in tags or pretrained.lower() in tags:
            cfg = open_clip.get_pretrained_cfg(name, pretrained)
            quick_gelu = bool(cfg.get("quick_gelu", False))
            force_preprocess = {k: cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in cfg}
            local, hint = _cached_tag_weights(name, pretrained)
            if local is not None:
                checkpoint = local
            elif allow_download:
                checkpoint = pretrained  # open_clip resolves and downloads the tag
            else:
                raise FileNotFoundError(
                    f"weights for open_clip {name} / {pretrained} are not on this machine; download {hint}, "
                    f"or pass pretrained=<path to a local checkpoint>"
                )
        else:
            raise FileNotFoundError(f"pretrained {pretrained!r} is neither an existing file nor a known tag of "
                                    f"{name} ({', '.join(tags) or 'no tags'})")

    model = open_clip.create_model(model_name, pretrained=checkpoint, device=device,
                                   force_quick_gelu=quick_gelu, force_preprocess_cfg=force_preprocess or None)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    pp = open_clip.get_model_preprocess_cfg(model)
    size = pp.get("size", 224)
    size = size if isinstance(size, int) else int(min(size))
    return Scorer(model=model, tokenizer=tokenizer, name=name, pretrained=checkpoint, image_size=size,
                  mean=tuple(pp.get("mean", open_clip.OPENAI_DATASET_MEAN)),
                  std=tuple(pp.get("std", open_clip.OPENAI_DATASET_STD)), device=device)
