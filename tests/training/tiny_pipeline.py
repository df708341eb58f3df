"""A tiny stand-in for studio.pipelines' generator: a random 2-layer WanTransformer3DModel on 4-channel
latents, hashed word embeddings for text and a fixed linear "decoder". Same methods as the real
pipeline contract (encode_prompt, prepare_latents, predict_velocity, sigmas, decode_latents)."""
from __future__ import annotations

import zlib

import numpy as np
import torch


class TinyPipeline:
    """Defaults: a 2-layer, 2-head model on 4-channel latents (tests). The benchmark sizes it like the
    TinyWorld generator (16 channels, 4 layers, 4 × 64 heads, ffn 1024)."""

    text_len = 6

    def __init__(self, seed: int = 0, num_layers: int = 2, latent_channels: int = 4, heads: int = 2,
                 head_dim: int = 16, ffn_dim: int = 64, text_dim: int = 32):
        from diffusers import WanTransformer3DModel

        self.latent_channels, self.text_dim = latent_channels, text_dim
        torch.manual_seed(seed)
        self.transformer = WanTransformer3DModel(
            patch_size=(1, 2, 2), num_attention_heads=heads, attention_head_dim=head_dim, in_channels=latent_channels,
            out_channels=latent_channels, text_dim=text_dim, freq_dim=32, ffn_dim=ffn_dim, num_layers=num_layers,
            rope_max_seq_len=32,
        ).eval()
        gen = torch.Generator().manual_seed(seed + 1)
        self.decoder = torch.randn(3, self.latent_channels, generator=gen) * (2.0 / latent_channels) ** 0.5
        self.word_table = torch.randn(512, self.text_dim, generator=gen)

    def to(self, device):
        self.transformer.to(device)
        return self

    @property
    def device(self):
        return next(self.transformer.parameters()).device

    def _embed(self, prompt: str) -> torch.Tensor:
        words = prompt.lower().split()[: self.text_len]
        out = torch.zeros(self.text_len, self.text_dim)
        for i, w in enumerate(words):
            out[i] = self.word_table[zlib.crc32(w.encode()) % len(self.word_table)]
        return out

    def encode_prompt(self, prompts, guidance):
        cond = torch.stack([self._embed(p) for p in prompts]).to(self.device)
        uncond = torch.stack([self._embed("") for _ in prompts]).to(self.device) if guidance > 1 else None
        return cond, uncond

    def prepare_latents(self, prompts, seeds, num_frames, height, width, camera_init=False):
        t, h, w = (num_frames - 1) // 4 + 1, height // 8, width // 8
        out = [torch.randn(self.latent_channels, t, h, w, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
        return torch.stack(out).to(self.device)

    def sigmas(self, steps: int, shift: float = 3.0) -> torch.Tensor:
        s = torch.linspace(1.0, 0.0, steps + 1)
        return shift * s / (1 + (shift - 1) * s)

    def predict_velocity(self, latents, sigma, cond, uncond, guidance):
        dtype = next(self.transformer.parameters()).dtype
        b = latents.shape[0]
        if uncond is not None and guidance > 1:
            x = torch.cat([latents, latents]).to(dtype)
            ts = torch.full((2 * b,), float(sigma) * 1000.0, device=latents.device)
            v_u, v_c = self.transformer(x, ts, torch.cat([uncond, cond]).to(dtype), return_dict=False)[0].float().chunk(2)
            return v_u + guidance * (v_c - v_u)
        ts = torch.full((b,), float(sigma) * 1000.0, device=latents.device)
        return self.transformer(latents.to(dtype), ts, cond.to(dtype), return_dict=False)[0].float()

    @torch.no_grad()
    def decode_latents(self, latents) -> np.ndarray:
        x = torch.einsum("oc,bcthw->bthwo", self.decoder, latents.float().cpu())
        x = x.repeat_interleave(8, dim=2).repeat_interleave(8, dim=3)
        x = x.repeat_interleave(4, dim=1)[:, : (latents.shape[2] - 1) * 4 + 1]
        return ((x.tanh() + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def brightness_rewards():
    """A cheap, deterministic reward set for loop tests: mean brightness plus a red-channel term."""
    from training.rewards import RewardSet

    def bright(prompts, clips, **_):
        return [float(c.mean() / 255.0) for c in clips]

    def red(prompts, clips, **_):
        return [float(c[..., 0].mean() / 255.0) for c in clips]

    return RewardSet(functions={"bright": bright, "red": red}, weights={"bright": 1.0, "red": 0.5})


def tiny_world_pipeline_dir(out_dir, seed: int = 0):
    """Save a tiny random studio.pipelines.WorldPipeline (UMT5 + Wan transformer + Wan VAE) to out_dir."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    from tiny_wan import tiny_wan_components

    from studio.pipelines import WorldPipeline

    pipe = WorldPipeline(
        **tiny_wan_components(seed), scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), max_sequence_length=16,
        default_height=32, default_width=32, default_num_frames=5, default_steps=4, warp_box=3,
    )
    pipe.save_pretrained(out_dir)
    return out_dir
