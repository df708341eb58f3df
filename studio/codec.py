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
- Decoder: the exact linear inverse (PCA reconstruction, ``decode_linear``), plus a learned
  residual. Two kinds (``decoder_type``):
  - ``"refiner"``: a small full-resolution conv net that sees the linear frame, the
    nearest-upsampled latent and the frame's position in its group. Its receptive field is a
    few pixels, so it smooths block seams but cannot redraw a shape.
  - ``"upsample"``: a VAE-style decoder. A 3D conv stack reads the latent grid with its temporal
    neighbours, then per frame (group latent features + position in the group) three ×2
    upsampling stages reach full resolution, where the linear frame joins. It sees whole objects
    (the 16 PCA components of an 8×8 patch keep only a blurred outline: on renders the linear
    codec halves the CLIP judge's shape accuracy), and it is trained on both render latents with
    noise and the generator's own latents, paired with the renders they came from
    (``training/pretrain_generator.py decoder``).
  With the last layer at zero either is the linear codec exactly.

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


class _UpsampleDecoder(nn.Module):
    """Latent grid -> full-resolution residual: 3D context at the grid, then ×2 upsampling stages."""

    def __init__(self, z_dim: int, phases: int, levels: int, channels: list[int]):
        super().__init__()
        c0 = channels[0]
        self.latent_in = nn.Conv3d(z_dim, c0, 3, padding=1)
        self.latent_mix = nn.Conv3d(c0, c0, 3, padding=1)
        self.frame_in = nn.Conv2d(c0 + phases, c0, 3, padding=1)
        self.grid_block = _ResBlock(c0)
        self.ups = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for i in range(levels):
            cin, cout = channels[min(i, len(channels) - 1)], channels[min(i + 1, len(channels) - 1)]
            last = i == levels - 1
            self.ups.append(nn.Conv2d(cin + (3 if last else 0), cout, 3, padding=1))
            self.up_blocks.append(_ResBlock(cout))
        self.out = nn.Conv2d(channels[min(levels, len(channels) - 1)], 3, 3, padding=1)  # the last stage's width
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, z: torch.Tensor, group: torch.Tensor, onehot: torch.Tensor, lin: torch.Tensor) -> torch.Tensor:
        """z (B, C, T, h, w); group (F,) latent index per frame; onehot (B*F, P, h, w); lin (B*F, 3, H, W)."""
        b = z.shape[0]
        x = self.latent_mix(F.gelu(self.latent_in(z)))  # (B, c0, T, h, w)
        x = x[:, :, group]  # (B, c0, F, h, w)
        f = x.shape[2]
        x = x.permute(0, 2, 1, 3, 4).reshape(b * f, -1, *x.shape[-2:])
        x = self.grid_block(self.frame_in(torch.cat([F.gelu(x), onehot], dim=1)))
        for i, (up, block) in enumerate(zip(self.ups, self.up_blocks)):
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            if i == len(self.ups) - 1:
                x = torch.cat([x, lin], dim=1)
            x = block(up(F.gelu(x)))
        return self.out(F.gelu(x))


class TinyWorldCodec(ModelMixin, ConfigMixin):
    """Linear PCA latent codec with a learned decoder residual (see the module docstring)."""

    @register_to_config
    def __init__(
        self,
        z_dim: int = 16,
        scale_factor_spatial: int = 8,
        scale_factor_temporal: int = 4,
        refiner_channels: int = 32,
        refiner_blocks: int = 2,
        decoder_type: str = "refiner",
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16),
    ):
        super().__init__()
        if decoder_type not in ("refiner", "upsample"):
            raise ValueError(f"decoder_type must be 'refiner' or 'upsample', got {decoder_type!r}")
        p, r = scale_factor_spatial, scale_factor_temporal
        d0, d1 = 3 * p * p, r * 3 * p * p
        # PCA bases and latent statistics: buffers, fitted by `fit`, saved with the weights.
        self.register_buffer("mean_first", torch.zeros(d0))
        self.register_buffer("basis_first", torch.zeros(z_dim, d0))
        self.register_buffer("mean_group", torch.zeros(d1))
        self.register_buffer("basis_group", torch.zeros(z_dim, d1))
        self.register_buffer("latent_mean", torch.zeros(2, z_dim))
        self.register_buffer("latent_std", torch.ones(2, z_dim))
        if decoder_type == "upsample":
            levels = int(round(np.log2(p)))
            if 2**levels != p:
                raise ValueError(f"the upsample decoder needs a power-of-two spatial factor, got {p}")
            self.decoder = _UpsampleDecoder(z_dim, r + 1, levels, list(decoder_channels))
        else:
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

    def refine(self, z: torch.Tensor, linear: torch.Tensor, frames: torch.Tensor | None = None) -> torch.Tensor:
        """Add the learned residual to the linear reconstruction, frame by frame.

        ``frames`` (optional, 1-D indices) decodes only those frames of ``linear``'s clip, e.g.
        a few per clip while training; ``linear`` then holds just those frames.
        """
        p, r = self.config.scale_factor_spatial, self.config.scale_factor_temporal
        b, _, f, hh, ww = linear.shape
        idx = frames if frames is not None else torch.arange(f, device=z.device)
        group = torch.where(idx == 0, 0, 1 + (idx - 1) // r).to(z.device)
        phase = torch.where(idx == 0, 0, 1 + (idx - 1) % r).to(z.device)
        lin = linear.permute(0, 2, 1, 3, 4).reshape(b * f, 3, hh, ww)
        if self.config.decoder_type == "upsample":
            onehot = F.one_hot(phase, r + 1).float()[None, :, :, None, None]
            onehot = onehot.expand(b, f, r + 1, hh // p, ww // p).reshape(b * f, r + 1, hh // p, ww // p)
            out = lin + self.decoder(z.float(), group, onehot, lin)
            return out.reshape(b, f, 3, hh, ww).permute(0, 2, 1, 3, 4)
        z_frames = z.float()[:, :, group]  # (B, C, F, h, w)
        z_up = F.interpolate(z_frames.permute(0, 2, 1, 3, 4).reshape(b * f, -1, hh // p, ww // p), scale_factor=p, mode="nearest")
        onehot = F.one_hot(phase, r + 1).float()[None, :, :, None, None].expand(b, f, r + 1, hh, ww).reshape(b * f, r + 1, hh, ww)
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
