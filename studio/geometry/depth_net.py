"""TinyWorld monocular depth: a small conv U-Net trained on the renderer's ground truth.

Conventions (docs/architecture.md): frames are uint8 (F, H, W, 3) RGB; depth is float32
(F, H, W) z-depth in scene units with 0 where nothing is hit (sky).

The network predicts two maps per pixel: log-depth (metric-ish, TinyWorld scenes share one
scale) and a sky logit. ``predict`` returns ``exp(log_depth)`` with sky pixels set to 0.
Weights live in ``assets/depth/`` as ``model.safetensors`` + ``config.json``
(written by ``training/pretrain_depth.py``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

DEFAULT_DEPTH_DIR = Path(__file__).resolve().parents[2] / "assets" / "depth"
WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class DepthNetConfig:
    """Architecture of the U-Net; saved as config.json beside the weights."""

    channels: tuple[int, ...] = (16, 32, 48, 64, 96)  # per level; len - 1 downsamplings
    coord_channels: bool = True  # feed normalised (x, y) so the net can use the floor's slope
    log_depth_init: float = 1.5  # initial output bias: log of a typical scene depth
    sky_threshold: float = 0.0  # sky where the sky logit exceeds this
    extra: dict = field(default_factory=dict)  # free-form provenance (training run, data)

    @property
    def multiple_of(self) -> int:
        return 2 ** (len(self.channels) - 1)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict) -> "DepthNetConfig":
        d = dict(d)
        d["channels"] = tuple(d["channels"])
        return cls(**d)


def _conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class DepthUNet(nn.Module):
    """RGB (+ coords) -> (log_depth, sky_logit), both (B, H, W). H, W multiples of 2**levels."""

    # ImageNet-style normalisation of [0, 1] RGB; fixed so saved weights need no stats.
    MEAN = (0.485, 0.456, 0.406)
    STD = (0.229, 0.224, 0.225)

    def __init__(self, config: DepthNetConfig):
        super().__init__()
        self.config = config
        ch = config.channels
        cin = 3 + (2 if config.coord_channels else 0)
        self.encoders = nn.ModuleList()
        for c in ch:
            self.encoders.append(_conv_block(cin, c))
            cin = c
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for c_skip, c_deep in zip(reversed(ch[:-1]), reversed(ch[1:])):
            self.ups.append(nn.Conv2d(c_deep, c_skip, 1))
            self.decoders.append(_conv_block(2 * c_skip, c_skip))
        self.head = nn.Conv2d(ch[0], 2, 1)
        with torch.no_grad():
            self.head.bias.copy_(torch.tensor([config.log_depth_init, -2.0]))
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """rgb: float (B, 3, H, W) in [0, 1]."""
        b, _, h, w = rgb.shape
        x = (rgb - self.mean) / self.std
        if self.config.coord_channels:
            ys = torch.linspace(-1.0, 1.0, h, device=rgb.device, dtype=rgb.dtype)
            xs = torch.linspace(-1.0, 1.0, w, device=rgb.device, dtype=rgb.dtype)
            yy, xx = torch.meshgrid(ys, xs, indexing="ij")
            coords = torch.stack([xx, yy]).unsqueeze(0).expand(b, -1, -1, -1)
            x = torch.cat([x, coords], dim=1)
        skips = []
        for i, enc in enumerate(self.encoders):
            if i > 0:
                x = F.max_pool2d(x, 2)
            x = enc(x)
            skips.append(x)
        x = skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            skip = skips.pop()
            x = F.interpolate(up(x), size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = dec(torch.cat([x, skip], dim=1))
        out = self.head(x)
        return out[:, 0], out[:, 1]


def check_frames(frames: np.ndarray, multiple_of: int = 16) -> None:
    """Raise ValueError unless frames is uint8 (F, H, W, 3) with H, W multiples of ``multiple_of``."""
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a numpy array, got {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ValueError(f"frames must be uint8 (F, H, W, 3) RGB, got dtype {frames.dtype}")
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must have shape (F, H, W, 3), got {frames.shape}")
    f, h, w, _ = frames.shape
    if f < 1:
        raise ValueError("frames is empty (F = 0)")
    if h < multiple_of or w < multiple_of or h % multiple_of or w % multiple_of:
        raise ValueError(
            f"frame size {h}x{w} is not supported: height and width must be positive multiples of {multiple_of}"
        )


class TinyWorldDepth:
    """Inference wrapper: uint8 frames in, metric-ish depth (0 = sky) out."""

    def __init__(self, model: DepthUNet, batch_size: int = 32):
        self.model = model.eval()
        self.config = model.config
        self.batch_size = batch_size

    @torch.inference_mode()
    def predict_raw(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return (log_depth, sky_prob), float32 (F, H, W) each, without masking."""
        check_frames(frames, self.config.multiple_of)
        log_depths, sky_probs = [], []
        for i in range(0, len(frames), self.batch_size):
            rgb = torch.from_numpy(np.ascontiguousarray(frames[i : i + self.batch_size]))
            rgb = rgb.permute(0, 3, 1, 2).float() / 255.0
            log_depth, sky_logit = self.model(rgb)
            log_depths.append(log_depth.numpy())
            sky_probs.append(torch.sigmoid(sky_logit - self.config.sky_threshold).numpy())
        return np.concatenate(log_depths).astype(np.float32), np.concatenate(sky_probs).astype(np.float32)

    def predict(self, frames: np.ndarray) -> np.ndarray:
        """frames uint8 (F, H, W, 3) -> depth float32 (F, H, W), scene units, 0 where sky."""
        log_depth, sky_prob = self.predict_raw(frames)
        depth = np.exp(log_depth).astype(np.float32)
        depth[sky_prob > 0.5] = 0.0
        return depth

    def save_pretrained(self, path: str | Path) -> None:
        save_depth_net(self.model, path)


def save_depth_net(model: DepthUNet, path: str | Path) -> None:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path / WEIGHTS_NAME), metadata={"format": "pt"})
    (path / CONFIG_NAME).write_text(model.config.to_json() + "\n")


def load_tinyworld_depth(path: str | Path | None = None, batch_size: int = 32) -> TinyWorldDepth:
    """Load the shipped TinyWorld depth net (``assets/depth/``) or one saved at ``path``."""
    from safetensors.torch import load_file

    path = Path(path) if path is not None else DEFAULT_DEPTH_DIR
    weights, config_file = path / WEIGHTS_NAME, path / CONFIG_NAME
    if not weights.is_file() or not config_file.is_file():
        raise FileNotFoundError(
            f"TinyWorld depth weights not found in {path} (need {WEIGHTS_NAME} and {CONFIG_NAME}); "
            "train them with `python -m training.pretrain_depth --out assets/depth`"
        )
    config = DepthNetConfig.from_dict(json.loads(config_file.read_text()))
    model = DepthUNet(config)
    model.load_state_dict(load_file(str(weights)))
    return TinyWorldDepth(model, batch_size=batch_size)
