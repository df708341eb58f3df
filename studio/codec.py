"""TinyWorld latent codec: the "VAE" of the embedded generator.

Latent space (documented here because it is ours, not a pretrained one)
-----------------------------------------------------------------------
Same grid as the Wan VAE, so one pipeline serves both: 4× in time (frame 0 alone, then groups
of 4 frames), 8× in space, ``z_dim`` = 16 channels. A 17×64×64 clip becomes (16, 5, 8, 8).

- Encoder (linear, fitted, no training): space-to-depth patches — (3, 8, 8) = 192 values for
  frame 0, (4, 3, 8, 8) = 768 values for each later group — projected on their first 16
  principal components (one basis for frame 0, one for the groups), then every channel is
  standardised with its own mean and std (per stream: frame 0 / groups). The flow model
  therefore sees latents with unit spread per channel, like Wan's normalised VAE latents.
- Decoder: the exact linear inverse (PCA reconstruction, ``decode_linear``), plus a small
  learned convolutional refiner that sees the linear frame, the nearest-upsampled latent and the
  frame's position in its group, and adds a residual. It removes the 8×8 block artefacts and
  sharpens edges; it is trained on renders with noise on the latents, so it tolerates the
  imperfect latents a generator produces. With the refiner's last layer at zero it is the
  linear codec exactly.

Pixels are float in [-1, 1], video tensors (B, 3, F, H, W) — the diffusers VAE convention, so
``decode(z).sample`` means the same thing for ``AutoencoderKLWan`` and ``TinyWorldCodec``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin

__all__ = ["TinyWorldCodec"]


class _ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(F.gelu(self.conv1(F.gelu(x))))


class TinyWorldCodec(ModelMixin, ConfigMixin):
    """Linear PCA latent codec with a learned convolutional refiner (see the module docstring)."""

    @register_to_config
    def __init__(
        self,
        z_dim: int = 16,
        scale_factor_spatial: int = 8,
        scale_factor_temporal: int = 4,
        refiner_channels: int = 32,
        refiner_blocks: int = 2,
    ):
        super().__init__()
        p, r = scale_factor_spatial, scale_factor_temporal
        d0, d1 = 3 * p * p, r * 3 * p * p
        # PCA bases and latent statistics: buffers, fitted by `fit`, saved with the weights.
        self.register_buffer("mean_first", torch.zeros(d0))
        self.register_buffer("basis_first", torch.zeros(z_dim, d0))
        self.register_buffer("mean_group", torch.zeros(d1))
        self.register_buffer("basis_group", torch.zeros(z_dim, d1))
        self.register_buffer("latent_mean", torch.zeros(2, z_dim))
        self.register_buffer("latent_std", torch.ones(2, z_dim))
        c = refiner_channels
        self.refiner_in = nn.Conv2d(3 + z_dim + r + 1, c, 3, padding=1)
        self.blocks = nn.ModuleList([_ResBlock(c) for _ in range(refiner_blocks)])
        self.refiner_out = nn.Conv2d(c, 3, 3, padding=1)
        nn.init.zeros_(self.refiner_out.weight)
        nn.init.zeros_(self.refiner_out.bias)

    # ----------------------------------------------------------------- patches
    def _patchify(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 3, F, H, W) -> first-frame patches (B, h, w, 192), group patches (B, T-1, h, w, 768)."""
        p, r = self.config.scale_factor_spatial, self.config.scale_factor_temporal
        b, c, f, hh, ww = video.shape
        h, w = hh // p, ww // p
        first = video[:, :, 0].reshape(b, c, h, p, w, p).permute(0, 2, 4, 1, 3, 5).reshape(b, h, w, c * p * p)
        t1 = (f - 1) // r
        rest = video[:, :, 1:].reshape(b, c, t1, r, h, p, w, p)
        rest = rest.permute(0, 2, 4, 6, 3, 1, 5, 7).reshape(b, t1, h, w, r * c * p * p)
        return first, rest

    def _unpatchify(self, first: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
        p, r = self.config.scale_factor_spatial, self.config.scale_factor_temporal
        b, h, w, _ = first.shape
        t1 = rest.shape[1]
        f0 = first.reshape(b, h, w, 3, p, p).permute(0, 3, 1, 4, 2, 5).reshape(b, 3, 1, h * p, w * p)
        fr = rest.reshape(b, t1, h, w, r, 3, p, p).permute(0, 5, 1, 4, 2, 6, 3, 7)
        fr = fr.reshape(b, 3, t1 * r, h * p, w * p)
        return torch.cat([f0, fr], dim=2)

    # ----------------------------------------------------------------- fit
    @torch.no_grad()
    def fit(self, video: torch.Tensor) -> None:
        """Fit the PCA bases and latent statistics on clips (N, 3, F, H, W) in [-1, 1]."""
        first, rest = self._patchify(video.float())
        for x, mean_name, basis_name in ((first, "mean_first", "basis_first"), (rest, "mean_group", "basis_group")):
            x = x.reshape(-1, x.shape[-1]).double()
            mean = x.mean(0)
            cov = (x - mean).T @ (x - mean) / len(x)
            _, vecs = torch.linalg.eigh(cov)
            basis = vecs[:, -self.config.z_dim :].flip(1).T  # largest variance first
            getattr(self, mean_name).copy_(mean.float())
            getattr(self, basis_name).copy_(basis.float())
        z0 = (first - self.mean_first) @ self.basis_first.T
        z1 = (rest - self.mean_group) @ self.basis_group.T
        self.latent_mean.copy_(torch.stack([z0.reshape(-1, self.config.z_dim).mean(0), z1.reshape(-1, self.config.z_dim).mean(0)]))
        self.latent_std.copy_(torch.stack([z0.reshape(-1, self.config.z_dim).std(0), z1.reshape(-1, self.config.z_dim).std(0)]))

    # ----------------------------------------------------------------- codec
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """(B, 3, F, H, W) in [-1, 1] -> normalised latents (B, z_dim, T, h, w), T = (F-1)/4 + 1."""
        first, rest = self._patchify(video.float())
        z0 = ((first - self.mean_first) @ self.basis_first.T - self.latent_mean[0]) / self.latent_std[0]
        z1 = ((rest - self.mean_group) @ self.basis_group.T - self.latent_mean[1]) / self.latent_std[1]
        z = torch.cat([z0[:, None], z1], dim=1)  # (B, T, h, w, C)
        return z.permute(0, 4, 1, 2, 3).contiguous()

    def decode_linear(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, C, T, h, w) -> PCA reconstruction (B, 3, F, H, W)."""
        z = z.float().permute(0, 2, 3, 4, 1)  # (B, T, h, w, C)
        first = (z[:, 0] * self.latent_std[0] + self.latent_mean[0]) @ self.basis_first + self.mean_first
        rest = (z[:, 1:] * self.latent_std[1] + self.latent_mean[1]) @ self.basis_group + self.mean_group
        return self._unpatchify(first, rest)

    def refine(self, z: torch.Tensor, linear: torch.Tensor) -> torch.Tensor:
        """Add the learned residual to the linear reconstruction, frame by frame."""
        p, r = self.config.scale_factor_spatial, self.config.scale_factor_temporal
        b, _, f, hh, ww = linear.shape
        group = torch.tensor([0] + [1 + (i - 1) // r for i in range(1, f)], device=z.device)
        phase = torch.tensor([0] + [1 + (i - 1) % r for i in range(1, f)], device=z.device)
        z_frames = z.float()[:, :, group]  # (B, C, F, h, w)
        z_up = F.interpolate(z_frames.permute(0, 2, 1, 3, 4).reshape(b * f, -1, hh // p, ww // p), scale_factor=p, mode="nearest")
        onehot = F.one_hot(phase, r + 1).float()[None, :, :, None, None].expand(b, f, r + 1, hh, ww).reshape(b * f, r + 1, hh, ww)
        lin = linear.permute(0, 2, 1, 3, 4).reshape(b * f, 3, hh, ww)
        x = self.refiner_in(torch.cat([lin, z_up, onehot], dim=1))
        for block in self.blocks:
            x = block(x)
        out = lin + self.refiner_out(F.gelu(x))
        return out.reshape(b, f, 3, hh, ww).permute(0, 2, 1, 3, 4)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        """Normalised latents (B, C, T, h, w) -> video (B, 3, F, H, W) in about [-1, 1]."""
        video = self.refine(z, self.decode_linear(z))
        if not return_dict:
            return (video,)
        return DecoderOutput(sample=video)

    @staticmethod
    def frames_to_video(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
        """uint8 frames (B, F, H, W, 3) -> float video (B, 3, F, H, W) in [-1, 1]."""
        frames = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.array(frames, copy=True))
        x = frames.float() / 127.5 - 1.0
        return x.permute(0, 4, 1, 2, 3).contiguous()
