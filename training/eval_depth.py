"""Evaluate the TinyWorld depth net on held-out TinyWorld clips (corpus test split: unseen scenes).

AbsRel per clip after per-clip scale alignment (median ratio over pixels where the ground
truth is not sky), averaged over clips; pixels the net calls sky count with their 0 depth.

    python -m training.eval_depth                       # shipped weights, 64 and 128 px
    python -m training.eval_depth --weights runs/depth/model --clips 40
    python -m training.eval_depth --closeup             # also the camera pushing in (frames 8-16)
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

def absrel_aligned(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """(AbsRel after median-ratio scale alignment, scale) for one clip; gt 0 = sky, excluded."""
    valid = gt > 0
    if not valid.any():
        return float("nan"), float("nan")
    both = valid & (pred > 0)
    scale = float(np.median(gt[both]) / np.median(pred[both])) if both.any() else 1.0
    err = np.abs(scale * pred[valid] - gt[valid]) / gt[valid]
    return float(err.mean()), scale


def sky_accuracy(pred: np.ndarray, gt: np.ndarray) -> float:
    return float(((pred == 0) == (gt == 0)).mean())


def evaluate_depth(model, clips: list[dict]) -> dict:
    """clips: dicts with "frames" (F,H,W,3) uint8 and "depth" (F,H,W). Returns summary metrics."""
    absrels, raw_absrels, scales, sky_accs = [], [], [], []
    for clip in clips:
        pred = model.predict(clip["frames"])
        gt = clip["depth"]
        a, s = absrel_aligned(pred, gt)
        valid = gt > 0
        absrels.append(a)
        scales.append(s)
        raw_absrels.append(float((np.abs(pred[valid] - gt[valid]) / gt[valid]).mean()))
        sky_accs.append(sky_accuracy(pred, gt))
    return {
        "absrel_aligned": float(np.nanmean(absrels)),
        "absrel_aligned_median_clip": float(np.nanmedian(absrels)),
        "absrel_aligned_worst_clip": float(np.nanmax(absrels)),
        "absrel_unaligned": float(np.mean(raw_absrels)),
        "scale_median": float(np.nanmedian(scales)),
        "sky_accuracy": float(np.mean(sky_accs)),
        "clips": len(clips),
    }


def heldout_clips(num_clips: int, size: int, split: str = "test", closeup: bool = False) -> list[dict]:
    """Render the first `num_clips` rows of a held-out corpus split, all 17 frames, in-process.

    closeup=True: the same scenes with the camera pushing in (pretrain_depth.closeup_moves), frames
    8-16 only, where the camera is nearest the objects.
    """
    from training.pretrain_depth import CLOSEUP_FIRST_FRAME, render_job, closeup_scene, split_rows

    rows = split_rows(split)[:num_clips]
    if closeup:
        return [render_job((r["prompt"], closeup_scene(r["scene"], k), size, 1, CLOSEUP_FIRST_FRAME))
                for k, r in enumerate(rows)]
    return [render_job((r["prompt"], r["scene"], size, 1, 0)) for r in rows]


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--weights", default=None,
                   help="folder with model.safetensors + config.json (default: assets/depth)")
    p.add_argument("--clips", type=int, default=40, help="held-out clips per resolution")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="square frame sizes to test")
    p.add_argument("--split", default="test", help="corpus split to draw prompts from")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--closeup", action="store_true",
                   help="also score the same scenes seen while the camera pushes in (frames 8-16)")
    args = p.parse_args(argv)

    import torch

    from studio.geometry.depth_net import load_tinyworld_depth

    torch.set_num_threads(args.threads)
    model = load_tinyworld_depth(args.weights)
    results = {}
    for size, closeup in [(s, c) for c in ([False, True] if args.closeup else [False]) for s in args.sizes]:
        t0 = time.time()
        clips = heldout_clips(args.clips, size, split=args.split, closeup=closeup)
        t1 = time.time()
        metrics = evaluate_depth(model, clips)
        metrics["predict_s_per_clip"] = (time.time() - t1) / len(clips)
        metrics["render_s"] = t1 - t0
        name = f"{size}px" + (" close-up" if closeup else "")
        results[name] = metrics
        print(f"{name}: AbsRel (median-aligned per clip) = {metrics['absrel_aligned']:.4f} "
              f"over {metrics['clips']} held-out clips; unaligned {metrics['absrel_unaligned']:.4f}, "
              f"median scale {metrics['scale_median']:.3f}, sky accuracy {metrics['sky_accuracy']:.4f}, "
              f"worst clip {metrics['absrel_aligned_worst_clip']:.4f}")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
