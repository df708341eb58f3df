"""Depth estimators behind one interface: uint8 frames (F, H, W, 3) in, DepthResult out.

Registry by name:
- "ground-truth": the renderer's own depth and K, passed in (validation, upper bound).
- "tinyworld": the project's small monocular net (studio.geometry.depth_net, weights in assets/depth/).
- "depth-anything": Depth Anything (V1/V2 layout) through transformers, from a local dir or hub id;
  its relative inverse depth is brought to one common scale across frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from studio.geometry.projection import default_intrinsics, torch_threads

DEPTH_ANYTHING_DEFAULT = "depth-anything/Depth-Anything-V2-Small-hf"


@dataclass
class DepthResult:
    depth: np.ndarray        # (F, H, W) float32, z-depth, 0 where nothing is hit / unknown
    K: np.ndarray            # (3, 3) float64
    confidence: np.ndarray   # (F, H, W) float32 in [0, 1]


class DepthEstimator(Protocol):
    name: str

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None) -> DepthResult: ...


ESTIMATORS: dict[str, Callable[..., DepthEstimator]] = {}


def register(name: str):
    """Class decorator: make an estimator constructible by name through get_estimator."""
    def deco(cls):
        ESTIMATORS[name] = cls
        cls.name = name
        return cls
    return deco


def get_estimator(name: str, **kwargs) -> DepthEstimator:
    if name not in ESTIMATORS:
        raise ValueError(f"unknown depth estimator {name!r}; expected one of {', '.join(sorted(ESTIMATORS))}")
    return ESTIMATORS[name](**kwargs)


def _intrinsics(frames: np.ndarray, K: np.ndarray | None) -> np.ndarray:
    h, w = frames.shape[1:3]
    return default_intrinsics(h, w) if K is None else np.asarray(K, dtype=np.float64)


@register("ground-truth")
class GroundTruthDepth:
    """Depth (and K) known from the renderer; sky (0) gets confidence 0."""

    def __init__(self, depth: np.ndarray | None = None, K: np.ndarray | None = None):
        self.depth, self.K = depth, K

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None) -> DepthResult:
        if self.depth is None:
            raise ValueError('estimator "ground-truth" needs depth=... (F, H, W) from the renderer')
        depth = np.asarray(self.depth, dtype=np.float32)
        if depth.shape != frames.shape[:3]:
            raise ValueError(f"ground-truth depth has shape {depth.shape}, frames need {frames.shape[:3]}")
        if not np.all(np.isfinite(depth)) or (depth < 0).any():
            raise ValueError("ground-truth depth must be finite and >= 0 (0 = sky)")
        K = self.K if self.K is not None else K
        return DepthResult(depth, _intrinsics(frames, K), (depth > 0).astype(np.float32))


@register("tinyworld")
class TinyWorldDepthEstimator:
    """The project's TinyWorld depth net (metric-ish scene units, sky = 0)."""

    def __init__(self, path: str | Path | None = None, num_threads: int | None = 1):
        # One torch thread by default: many times faster on the shared cores (see torch_threads).
        self.num_threads = num_threads
        try:
            from studio.geometry.depth_net import load_tinyworld_depth
        except ImportError as e:  # written by another module owner; may be absent in a checkout
            raise RuntimeError(f'depth estimator "tinyworld" is unavailable: {e}') from e
        try:
            # Batches of 8: 32 frames at once held 0.8 GB of activations for 129 frames at 128x64.
            self.net = load_tinyworld_depth(path, batch_size=8)
        except FileNotFoundError as e:
            raise RuntimeError(
                f'depth estimator "tinyworld" has no weights: {e}. Use estimator="ground-truth" with the '
                'renderer depth, or "depth-anything" with local weights.') from e

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None) -> DepthResult:
        with torch_threads(self.num_threads):
            depth = np.asarray(self.net.predict(frames), dtype=np.float32)
        return DepthResult(depth, _intrinsics(frames, K), (depth > 0).astype(np.float32))


def _missing_weights_message(model: str, error: Exception) -> str:
    return (
        f"Depth Anything weights for {model!r} are not available offline ({type(error).__name__}: {error}). "
        f"Download a checkpoint where the network is reachable, e.g. "
        f"`huggingface-cli download {DEPTH_ANYTHING_DEFAULT} --local-dir assets/depth-anything-v2-small`, "
        f"copy the folder here and pass its path (estimator_kwargs={{'model': 'assets/depth-anything-v2-small'}})."
    )


@register("depth-anything")
class DepthAnythingEstimator:
    """transformers AutoModelForDepthEstimation (Depth Anything V1/V2) from a local dir or hub id.

    The model predicts relative inverse depth with an unknown scale and shift per frame. Each
    frame is normalised (median, mean absolute deviation) and mapped onto frame 0's statistics,
    then inverted and scaled so frame 0's median depth is `median_depth`: one common scale for
    all frames, which is what odometry and fusion need.
    """

    def __init__(self, model: str | Path = DEPTH_ANYTHING_DEFAULT, input_size: int = 252,
                 median_depth: float = 4.0, batch_size: int = 8, allow_download: bool = False):
        if input_size % 14:
            raise ValueError(f"input_size must be a multiple of 14 (the ViT patch), got {input_size}")
        import torch
        from transformers import AutoModelForDepthEstimation

        try:
            # A hub id resolves from the local cache only unless downloads are asked for: without
            # weights this fails at once instead of retrying the network for half a minute.
            self.model = AutoModelForDepthEstimation.from_pretrained(
                str(model), local_files_only=not allow_download).eval()
        except (OSError, ValueError) as e:
            raise RuntimeError(_missing_weights_message(str(model), e)) from e
        self.torch = torch
        self.input_size, self.median_depth, self.batch_size = input_size, median_depth, batch_size

    def _input_hw(self, h: int, w: int) -> tuple[int, int]:
        """Shorter side -> input_size, keep the aspect ratio, both multiples of 14."""
        s = self.input_size / min(h, w)
        return max(14, int(round(h * s / 14)) * 14), max(14, int(round(w * s / 14)) * 14)

    def relative_disparity(self, frames: np.ndarray) -> np.ndarray:
        torch = self.torch
        f, h, w = frames.shape[:3]
        ih, iw = self._input_hw(h, w)
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        out = []
        with torch.inference_mode():
            for i in range(0, f, self.batch_size):
                x = torch.from_numpy(np.ascontiguousarray(frames[i:i + self.batch_size])).permute(0, 3, 1, 2).float() / 255
                x = torch.nn.functional.interpolate(x, size=(ih, iw), mode="bicubic", align_corners=False).clamp(0, 1)
                pred = self.model(pixel_values=(x - mean) / std).predicted_depth  # (B, ih', iw')
                pred = torch.nn.functional.interpolate(pred[:, None], size=(h, w), mode="bilinear", align_corners=False)
                out.append(pred[:, 0].float().numpy())
        return np.concatenate(out)

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None) -> DepthResult:
        disp = self.relative_disparity(frames).astype(np.float64)
        med = np.median(disp.reshape(len(disp), -1), axis=1)
        mad = np.mean(np.abs(disp - med[:, None, None]).reshape(len(disp), -1), axis=1) + 1e-8
        common = (disp - med[:, None, None]) / mad[:, None, None] * mad[0] + med[0]
        # Far (near-zero or negative disparity) pixels carry no usable depth.
        floor = max(1e-6, 0.02 * float(np.percentile(common, 99)))
        confidence = np.clip(common / (4 * floor), 0, 1).astype(np.float32)
        depth = np.where(common > floor, 1.0 / np.maximum(common, floor), 0.0)
        valid0 = depth[0][depth[0] > 0]
        scale = self.median_depth / float(np.median(valid0)) if valid0.size else 1.0
        return DepthResult((depth * scale).astype(np.float32), _intrinsics(frames, K), confidence)
