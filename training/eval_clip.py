"""Zero-shot evaluation of a CLIP scorer on held-out TinyWorld frames (corpus test split).

Colour: top-1 among "a photo of a {colour} object" for the 10 colours; shape: top-1 among
"a photo of a {shape}" for the 5 shapes. Main figure: frames 0,4,8,12,16 of single-object test
scenes where the object is visible. The test split is built around colour-shape pairs never seen
in training (corpus.HELD_OUT_PAIRS), so the figure is split by held-out / seen pair, and the
single-object scenes of the "dynamic" split (unseen scenes, seen pairs, moving objects) are
scored too. Also reported: the largest visible object of every test frame, and prompt retrieval
(each clip's prompt against those of the other clips, by mean frame score).

    python -m training.eval_clip                           # shipped assets/clip
    python -m training.eval_clip --pretrained runs/clip/smoke
"""

from __future__ import annotations

import argparse
import json

import numpy as np

COLOR_PROMPT = "a photo of a {} object"
SHAPE_PROMPT = "a photo of a {}"


def zero_shot_attributes(scorer, frames: np.ndarray, instance: np.ndarray, scenes: list[dict],
                         single_object_only: bool = True, min_pixels: int | None = None) -> dict:
    """Top-1 colour and shape accuracy of the largest visible object per frame.

    frames (N, T, H, W, 3) uint8, instance (N, T, H, W) with -1 sky, 0 ground, i >= 1 object i-1.
    """
    from studio.tinyworld import COLORS, SHAPES
    from studio.tinyworld.corpus import HELD_OUT_PAIRS
    from training.pretrain_clip import MIN_VISIBLE_PIXELS, visible_objects

    colors, shapes = list(COLORS), list(SHAPES)
    n, t, h = frames.shape[:3]
    # Visibility threshold in 64x64 terms, scaled with the frame area.
    min_pixels = min_pixels if min_pixels is not None else int(MIN_VISIBLE_PIXELS * (h / 64) ** 2)
    images, color_gt, shape_gt = [], [], []
    for ci in range(n):
        if single_object_only and len(scenes[ci]["objects"]) != 1:
            continue
        for fi in range(t):
            objs = visible_objects(instance[ci, fi], scenes[ci], min_pixels)
            if not objs:
                continue
            images.append(frames[ci, fi])
            color_gt.append(colors.index(objs[0][0]))
            shape_gt.append(shapes.index(objs[0][1]))
    if not images:
        return {"color_top1": float("nan"), "shape_top1": float("nan"), "images": 0}
    images = np.stack(images)
    img = scorer.image_features(images)
    color_pred = (img @ scorer.text_features([COLOR_PROMPT.format(c) for c in colors]).T).argmax(1)
    shape_pred = (img @ scorer.text_features([SHAPE_PROMPT.format(s) for s in shapes]).T).argmax(1)
    color_gt, shape_gt = np.array(color_gt), np.array(shape_gt)
    held_out = np.array([(colors[c], shapes[k]) in HELD_OUT_PAIRS for c, k in zip(color_gt, shape_gt)])
    split_acc = {}
    for name, mask in (("held_out_pairs", held_out), ("seen_pairs", ~held_out)):
        if mask.any():
            split_acc[name] = {"images": int(mask.sum()),
                               "color_top1": float((color_pred[mask] == color_gt[mask]).mean()),
                               "shape_top1": float((shape_pred[mask] == shape_gt[mask]).mean())}
    return {
        "color_top1": float((color_pred == color_gt).mean()),
        "shape_top1": float((shape_pred == shape_gt).mean()),
        "images": int(len(images)),
        "color_per_class": {c: float((color_pred[color_gt == i] == i).mean()) for i, c in enumerate(colors)
                            if (color_gt == i).any()},
        "shape_per_class": {s: float((shape_pred[shape_gt == i] == i).mean()) for i, s in enumerate(shapes)
                            if (shape_gt == i).any()},
        "by_pair": split_acc,
    }


def prompt_score_matrix(scorer, frames: np.ndarray, prompts: list[str]) -> np.ndarray:
    """S[i, j] = score(clip i, prompt j): mean frame cosine, as ``Scorer.score`` computes it."""
    n, t = frames.shape[:2]
    img = scorer.image_features(frames.reshape(n * t, *frames.shape[2:])).reshape(n, t, -1)
    txt = scorer.text_features(prompts)
    return np.einsum("ntd,pd->np", img, txt) / t


def prompt_retrieval(scorer, frames: np.ndarray, prompts: list[str]) -> float:
    """Top-1 accuracy of picking each clip's own prompt among all prompts by mean frame score."""
    scores = prompt_score_matrix(scorer, frames, prompts)
    return float((scores.argmax(1) == np.arange(len(scores))).mean())


def score_separation(scores: np.ndarray) -> dict:
    """How clearly ``score`` prefers a clip's own prompt (the diagonal) to the other clips' prompts."""
    n = len(scores)
    own = np.diag(scores)
    other = scores[~np.eye(n, dtype=bool)].reshape(n, n - 1)
    return {"own_mean": float(own.mean()), "other_mean": float(other.mean()),
            "margin_mean": float((own - other.mean(1)).mean()),
            "own_above_other_frac": float((own[:, None] > other).mean())}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", default="tinyworld", help="scorer name for studio.scoring.load_scorer")
    p.add_argument("--pretrained", default=None, help="checkpoint file/folder or open_clip tag")
    p.add_argument("--clips", type=int, default=300, help="test-split clips to render (all 300 by default)")
    p.add_argument("--size", type=int, default=64, help="render size (the scorer resizes to its input)")
    p.add_argument("--data-dir", default="runs/data", help="render cache")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)

    import torch

    from studio.scoring import load_scorer
    from training.pretrain_depth import render_dataset

    torch.set_num_threads(args.threads)
    scorer = load_scorer(args.name, pretrained=args.pretrained)
    test = render_dataset("test", 0, args.clips, args.size, args.data_dir, workers=2)
    single = zero_shot_attributes(scorer, test["frames"], test["instance"], test["scenes"], single_object_only=True)
    # The dynamic split: unseen scenes (moving objects) whose colour-shape pairs occur in training.
    dyn = render_dataset("dynamic", 0, args.clips, args.size, args.data_dir, workers=2)
    dynamic = zero_shot_attributes(scorer, dyn["frames"], dyn["instance"], dyn["scenes"], single_object_only=True)
    dominant = zero_shot_attributes(scorer, test["frames"], test["instance"], test["scenes"], single_object_only=False)
    n_ret = min(100, len(test["prompts"]))
    scores = prompt_score_matrix(scorer, test["frames"][:n_ret], test["prompts"][:n_ret])
    retrieval = float((scores.argmax(1) == np.arange(n_ret)).mean())
    separation = score_separation(scores)
    results = {"single_object": single, "dominant_object": dominant, "dynamic_single_object": dynamic,
               f"prompt_retrieval_top1_of_{n_ret}": retrieval, "score_separation": separation}
    print(f"held-out single-object frames ({single['images']} from the test split, {args.size}px): "
          f"colour top-1 {single['color_top1']:.1%}, shape top-1 {single['shape_top1']:.1%}")
    for name, m in single["by_pair"].items():
        print(f"  {name} ({m['images']} frames): colour {m['color_top1']:.1%}, shape {m['shape_top1']:.1%}")
    print(f"dynamic split single-object frames ({dynamic['images']}, pairs seen in training, unseen scenes): "
          f"colour top-1 {dynamic['color_top1']:.1%}, shape top-1 {dynamic['shape_top1']:.1%}")
    print(f"largest visible object, all test frames ({dominant['images']}): colour top-1 "
          f"{dominant['color_top1']:.1%}, shape top-1 {dominant['shape_top1']:.1%}")
    print(f"prompt retrieval among {n_ret} test prompts: top-1 {retrieval:.1%}")
    print(f"score(clip, own prompt) {separation['own_mean']:.3f} vs other prompts {separation['other_mean']:.3f} "
          f"(margin {separation['margin_mean']:.3f}; own above other in {separation['own_above_other_frac']:.1%} "
          "of pairs)")
    print(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
