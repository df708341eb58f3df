"""How much of the judge's colour / shape accuracy a linear PCA latent space of each width keeps.

Fits `TinyWorldCodec` (linear part only) with z_dim channels on rendered training clips, sends
renders of the held-out test prompts through encode -> decode_linear, and judges them with the
CLIP scorer exactly as training/eval_generator.py does. This is the ceiling a perfect generator
in that latent space could reach; docs/generator.md uses it to choose the next latent space.

    python -m scripts.codec_ceiling --data data/tinyworld_dec --z-dims 16 32 64
    python -m scripts.codec_ceiling --codec runs/generator/codec_vae   # a trained codec, as it is
    python -m scripts.codec_ceiling --scale-spatial 4 --z-dims 8 12 16  # a 16x16 latent grid (4x4 patches)
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/tinyworld_gen"),
                    help="folder with clips.npy from `training.pretrain_generator render`")
    ap.add_argument("--fit-clips", type=int, default=1500)
    ap.add_argument("--z-dims", type=int, nargs="+", default=[16, 32, 64])
    ap.add_argument("--num-prompts", type=int, default=120)
    ap.add_argument("--scale-spatial", type=int, default=8,
                    help="PCA patch size in pixels (8: the shipped 8x8 latent grid; 4: a 16x16 grid, 4x the tokens "
                         "unless the transformer patches 2x2)")
    ap.add_argument("--codec", action="append", default=[], type=Path,
                    help="a trained codec folder (save_pretrained) judged through encode -> decode; repeatable")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from studio.codec import TinyWorldCodec
    from studio.scoring import load_scorer
    from studio.tinyworld.corpus import scene_of
    from studio.tinyworld.render import render_scene
    from studio.video import decoded_to_frames
    from training.eval_generator import attribute_accuracy, judge_attributes, test_rows

    clips_file = args.data / "clips.npy"
    if args.codec:
        args.z_dims = []  # judge the given codecs only
    elif not clips_file.is_file():
        raise SystemExit(f"{clips_file} not found: run `python -m training.pretrain_generator render --data-dir {args.data}`")
    rows = test_rows(args.num_prompts)
    renders = np.stack([render_scene(scene_of(r), 17, 64, 64)["frames"] for r in rows])
    video = TinyWorldCodec.frames_to_video(renders)
    scorer = load_scorer("tinyworld")
    out = []

    def pca(z_dim: int):
        codec = TinyWorldCodec(z_dim=z_dim, scale_factor_spatial=args.scale_spatial)
        codec.fit(TinyWorldCodec.frames_to_video(np.asarray(np.load(clips_file, mmap_mode="r")[: args.fit_clips])))
        return {"z_dim": z_dim, "scale_spatial": args.scale_spatial}, lambda z: codec.decode_linear(z), codec

    def trained(folder: Path):
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder}: not a saved codec (no config.json)")
        codec = TinyWorldCodec.from_pretrained(folder).eval()
        return {"codec": str(folder), "z_dim": codec.config.z_dim}, lambda z: codec.decode(z).sample, codec

    for label, decode, codec in [pca(z) for z in args.z_dims] + [trained(f) for f in args.codec]:
        with torch.no_grad():
            rec = decode(codec.encode(video)).clamp(-1, 1)
        frames = decoded_to_frames(rec)
        c_idx, s_idx = judge_attributes(scorer, list(frames))
        acc = attribute_accuracy(rows, c_idx, s_idx)
        row = {**label, "psnr_db": round(10 * math.log10(4.0 / ((rec - video) ** 2).mean().item()), 2),
               **{k: acc[k] for k in ("color_single", "shape_single", "shape_any", "single_object_n")}}
        print(json.dumps(row), flush=True)
        out.append(row)
    return out


if __name__ == "__main__":
    main()
