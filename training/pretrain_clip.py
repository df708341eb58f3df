"""Train the TinyWorld CLIP scorer contrastively on TinyWorld frames and captions (seeded, CPU).

Model: open_clip with a custom small config (ModifiedResNet image tower at 64x64, 3-layer text
transformer with open_clip's BPE tokenizer), written as ``<out>/tinyworld.json`` and registered
with ``open_clip.add_model_config``; weights go to ``<out>/tinyworld.safetensors`` (fp16).

Data: frames 0,4,8,12,16 of corpus "train" clips (64 px renders, plus 128 px renders resized to
64 px the way the scorer does), the render cache of pretrain_depth.py. Each image is paired with
either a full caption (``corpus.make_caption``, varied words) or a short attribute caption about
one visible object ("a red object", "a photo of a cube", "a green cone", ...).

Loss: CLIP's symmetric cross-entropy with multi-positive targets (a text is a positive for every
image in the batch it describes: another image showing a red object matches "a red object"),
plus a label-text term: each image against the texts of all 10 colours and all 5 shapes.
The train split never shows the corpus' held-out colour-shape pairs, so with colour always
present the image tower learns shape through colour ("red is never a cone"). Most frames
(``p_recolor``) get their objects repainted in a random unnamed colour or grey level
(``recolor_objects``) and are paired with shape captions only; with ``shape_from_recolored_only``
the palette-coloured frames carry colour (and colour-and-shape) texts but no shape-only text and
no shape label term, so the shape texts never learn to read the palette colours.
With ``p_codec`` a share of the frames goes through a generator's latent codec and back first
(``codec_round_trip``), for a judge of generated clips; the shipped scorer is trained without it
(docs/generator.md measures both).

    python -m training.pretrain_clip --out assets/clip
    python -m training.pretrain_clip --steps 10 --clips 64 --clips-128 0 --out runs/clip/smoke
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

MODEL_NAME = "tinyworld"
MODEL_CFG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16, "head_width": 32},
    "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 3},
}
MIN_VISIBLE_PIXELS = 12  # an object counts as shown in a 64x64 frame from this many pixels

# Short captions about one object. "{c}" colour, "{s}" shape.
COLOR_TEMPLATES = ("a {c} object", "a photo of a {c} object", "something {c}", "a {c} thing",
                   "a {c} shape", "{c}")
SHAPE_TEMPLATES = ("a {s}", "a photo of a {s}", "a {s} on the ground", "an object shaped like a {s}", "{s}")
BOTH_TEMPLATES = ("a {c} {s}", "a photo of a {c} {s}", "a {c} {s} on the floor")


@dataclass
class ClipTrainConfig:
    seed: int = 0  # seeds torch and numpy (init, batches, captions, flips)
    clips: int = 4800  # corpus train rows at 64 px (shared render cache with pretrain_depth)
    clips_128: int = 600  # train rows rendered at 128 px, resized to 64 px (0 to skip)
    val_clips: int = 16  # last rows of the train split, for validation only
    steps: int = 2000  # optimizer steps
    batch: int = 128  # image-text pairs per step
    p_attribute: float = 0.65  # probability that a sample's text is a short attribute caption
    p_recolor: float = 0.7  # probability that a frame's objects are repainted (recolor_objects)
    p_grey: float = 0.2  # share of repainted frames painted in grey levels instead of a random hue
    shape_from_recolored_only: bool = True  # shape texts and the shape label loss only on repainted frames
    label_weight: float = 1.0  # weight of the colour/shape label-text loss (label_text_loss)
    p_codec: float = 0.0  # probability that a frame goes through a generator's latent codec and back (codec_round_trip)
    codec: str = "assets/generator/vae"  # the TinyWorldCodec used for p_codec
    codec_latent_noise: float = 0.0  # with p_codec: Gaussian noise of std U(0, this) added to the normalised latents
    init: str = ""  # checkpoint to start from (a second stage); "" = random init
    lr: float = 1e-3  # peak AdamW learning rate (cosine decay, linear warm-up)
    warmup_steps: int = 40  # linear warm-up
    weight_decay: float = 0.05  # on matrices only
    log_every: int = 10  # steps between loss log lines
    val_every: int = 100  # steps between zero-shot validation passes
    threads: int = 1  # torch CPU threads (the machine is shared)
    workers: int = 2  # render processes (at most 2 on this machine)
    max_cpu_minutes: float = 15.0  # hard stop: CPU time of the training loop (the machine is shared, wall time varies)
    out: str = "assets/clip"  # tinyworld.json + tinyworld.safetensors
    run_dir: str = "runs/clip"  # log.jsonl, config, summary
    data_dir: str = "runs/data"  # render cache


# ------------------------------------------------------------------------------------------
# Labels and captions
# ------------------------------------------------------------------------------------------

def visible_objects(instance: np.ndarray, scene: dict,
                    min_pixels: int = MIN_VISIBLE_PIXELS) -> list[tuple[str, str, int]]:
    """(colour, shape, pixel count) of the objects shown in one frame, largest first."""
    out = []
    for i, obj in enumerate(scene["objects"]):
        n = int((instance == i + 1).sum())
        if n >= min_pixels:
            out.append((obj["color"], obj["shape"], n))
    return sorted(out, key=lambda t: -t[2])


def attribute_caption(objects: list[tuple[str, str, int]], rng: np.random.Generator,
                      with_shape_only: bool = True) -> tuple[str, str | None, str | None]:
    """A short caption about one shown object: (text, colour or None, shape or None).

    with_shape_only=False leaves out the shape-only texts (colour-only or colour-and-shape only).
    """
    color, shape, _ = objects[int(rng.integers(len(objects)))]
    kind = rng.integers(3) if with_shape_only else (0, 2)[int(rng.integers(2))]
    if kind == 0:
        return COLOR_TEMPLATES[int(rng.integers(len(COLOR_TEMPLATES)))].format(c=color), color, None
    if kind == 1:
        return SHAPE_TEMPLATES[int(rng.integers(len(SHAPE_TEMPLATES)))].format(s=shape), None, shape
    return BOTH_TEMPLATES[int(rng.integers(len(BOTH_TEMPLATES)))].format(c=color, s=shape), color, shape


def positives_matrix(batch_objects, text_specs, clip_ids, texts) -> np.ndarray:
    """P[i, j] = 1 where text j describes image i.

    Attribute texts match every image showing an object with those attributes; full captions
    match the images of their own clip (and images whose text is the identical string).
    """
    b = len(batch_objects)
    pos = np.zeros((b, b), dtype=np.float32)
    for j, (color, shape) in enumerate(text_specs):
        for i in range(b):
            if color is None and shape is None:
                pos[i, j] = float(clip_ids[i] == clip_ids[j] or texts[i] == texts[j])
            else:
                pos[i, j] = float(any((color is None or c == color) and (shape is None or s == shape)
                                      for c, s, _ in batch_objects[i]))
    pos[np.arange(b), np.arange(b)] = 1.0
    return pos


# ------------------------------------------------------------------------------------------
# Data
# ------------------------------------------------------------------------------------------

def load_training_images(cfg: ClipTrainConfig) -> dict:
    """All training frames at 64 px with their per-frame visible objects and scenes."""
    from training.pretrain_depth import render_dataset, split_rows

    n_train = len(split_rows("train"))
    d64 = render_dataset("train", 0, cfg.clips, 64, cfg.data_dir, cfg.workers)
    parts = [(d64["frames"], d64["instance"], d64["scenes"], 0)]
    if cfg.clips_128 > 0:
        start = n_train - cfg.val_clips - cfg.clips_128
        d128 = render_dataset("train", start, cfg.clips_128, 128, cfg.data_dir, cfg.workers)
        n, t = d128["frames"].shape[:2]
        small = resize_frames(d128["frames"].reshape(n * t, 128, 128, 3), 64).reshape(n, t, 64, 64, 3)
        # Instance maps: nearest-neighbour 2x decimation keeps object ids.
        parts.append((small, d128["instance"][:, :, ::2, ::2], d128["scenes"], start))
    frames, instances, objects, clip_ids, scenes = [], [], [], [], []
    for fr, inst, sc, start in parts:
        n, t = fr.shape[:2]
        for ci in range(n):
            for fi in range(t):
                obj = visible_objects(inst[ci, fi], sc[ci])
                if not obj:  # frame without a visible object: no attribute to learn from
                    continue
                frames.append(fr[ci, fi])
                instances.append(inst[ci, fi])
                objects.append(obj)
                clip_ids.append(start + ci)
                scenes.append(sc[ci])
    return {"frames": np.stack(frames), "instance": np.stack(instances), "objects": objects,
            "clip_ids": np.array(clip_ids), "scenes": scenes}


def resize_frames(frames: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N, size, size, 3), bicubic with antialias (as studio.scoring does)."""
    import torch
    from torch.nn import functional as F

    out = []
    for i in range(0, len(frames), 256):
        x = torch.from_numpy(frames[i : i + 256]).permute(0, 3, 1, 2).float() / 255.0
        x = F.interpolate(x, size=(size, size), mode="bicubic", antialias=True, align_corners=False)
        out.append((x.clamp(0, 1) * 255 + 0.5).byte().permute(0, 2, 3, 1).numpy())
    return np.concatenate(out)


UNKNOWN_COLOR = "?"  # a recoloured object: matches no colour text


def recolor_objects(frame: np.ndarray, instance: np.ndarray, objects: list[tuple[str, str, int]], scene: dict,
                    rng: np.random.Generator, grey: bool = False) -> tuple[np.ndarray, list[tuple[str, str, int]]]:
    """Paint every object in a random (unnamed) colour, or a random grey level, keeping its shading.

    The train split never shows the held-out colour-shape pairs, so without this the image tower
    learns shape through colour ("red is never a cone"); recolouring breaks that shortcut. Hue,
    saturation and value cover the whole range (near-white, near-black and dull colours too), so
    every shape is seen in every colour region, the held-out pairs' ones included. The new colours
    get no name: such a frame is paired only with a shape caption.
    """
    from studio.tinyworld import COLORS

    out = frame.astype(np.float32) / 255.0
    lum_w = np.array([0.299, 0.587, 0.114], np.float32)
    for k, obj in enumerate(scene["objects"]):
        mask = instance == k + 1
        if not mask.any():
            continue
        base_lum = max(float(np.dot(COLORS[obj["color"]], lum_w)), 0.05)
        shade = np.clip(out[mask] @ lum_w / base_lum, 0.0, 1.5)
        hue, val = rng.random(), rng.uniform(0.15, 1.0)
        sat = 0.0 if grey else rng.uniform(0.0, 1.0) ** 0.5  # sqrt: mostly saturated, some pale
        rgb = val * (1 - sat * np.clip(np.abs((hue * 6 + np.array([0, 4, 2])) % 6 - 3) - 1, 0, 1))
        out[mask] = np.clip(shade[:, None] * rgb[None].astype(np.float32), 0, 1)
    recolored = [(UNKNOWN_COLOR, shape, n) for _, shape, n in objects]
    return (out * 255 + 0.5).astype(np.uint8), recolored


def codec_round_trip(codec, frames: np.ndarray, rng: np.random.Generator, latent_noise: float = 0.0) -> np.ndarray:
    """uint8 frames (N, H, W, 3) through a latent video codec and back, the way generated frames look.

    A generated clip's frames are decoded from latents: the first from its own basis, the others
    from groups of four frames. Each frame goes in as a still five-frame clip and comes out as the
    first or one of the group frames (one in five is the first, as in the judged frames 0, 4, .., 16).
    ``latent_noise`` adds N(0, s^2), s ~ U(0, latent_noise), to the normalised latents: a judge of
    generated clips must read objects whose latents are not a render's.
    """
    import torch

    from studio.video import decoded_to_frames

    clips = np.repeat(frames[:, None], 5, axis=1)
    with torch.no_grad():
        z = codec.encode(codec.frames_to_video(clips))
        if latent_noise > 0:
            s = torch.from_numpy(rng.uniform(0, latent_noise, len(frames)).astype(np.float32))
            z = z + s[:, None, None, None, None] * torch.from_numpy(rng.standard_normal(z.shape).astype(np.float32))
        linear = codec.decode_linear(z)  # (N, 3, 5, H, W)
        pick = rng.integers(0, 5, len(frames))
        out = torch.empty_like(linear[:, :, 0])
        for p in np.unique(pick):  # the refiner decodes only the frame each still keeps
            rows, idx = torch.from_numpy(np.flatnonzero(pick == p)), torch.tensor([int(p)])
            out[rows] = codec.refine(z[rows], linear[rows][:, :, idx], frames=idx)[:, :, 0]
    return decoded_to_frames(out)


def sample_batch(data: dict, cfg: ClipTrainConfig, rng: np.random.Generator, codec=None):
    """A batch of frames with texts; returns (frames, texts, positives, objects, recolored mask).

    codec: the latent codec for ``cfg.p_codec`` (None: no frame goes through a codec).
    """
    from studio.tinyworld.corpus import make_caption

    idx = rng.choice(len(data["frames"]), cfg.batch, replace=False)
    frames = data["frames"][idx]
    flip = rng.random(cfg.batch) < 0.5
    frames = np.where(flip[:, None, None, None], frames[:, :, ::-1], frames)
    objects = [data["objects"][i] for i in idx]
    clip_ids = data["clip_ids"][idx]
    recolored = rng.random(cfg.batch) < cfg.p_recolor
    texts, specs = [], []
    for k, i in enumerate(idx):
        if recolored[k]:
            inst = data["instance"][i][:, ::-1] if flip[k] else data["instance"][i]
            frames[k], objects[k] = recolor_objects(frames[k], inst, objects[k], data["scenes"][i], rng,
                                                    grey=rng.random() < cfg.p_grey)
            shape = objects[k][int(rng.integers(len(objects[k])))][1]
            text = SHAPE_TEMPLATES[int(rng.integers(len(SHAPE_TEMPLATES)))].format(s=shape)
            texts.append(text)
            specs.append((None, shape))
            continue
        if rng.random() < cfg.p_attribute:
            text, color, shape = attribute_caption(objects[k], rng, with_shape_only=not cfg.shape_from_recolored_only)
        else:
            text, color, shape = make_caption(data["scenes"][i], rng), None, None
        texts.append(text)
        specs.append((color, shape))
    if codec is not None and cfg.p_codec > 0:
        through = np.flatnonzero(rng.random(cfg.batch) < cfg.p_codec)
        if len(through):
            frames[through] = codec_round_trip(codec, frames[through], rng, cfg.codec_latent_noise)
    pos = positives_matrix(objects, specs, clip_ids, texts)
    return frames, texts, pos, objects, recolored


def label_text_targets(objects: list[list[tuple[str, str, int]]], names: list[str], field: int) -> np.ndarray:
    """Soft targets (B, len(names)): spread evenly over the colours (field 0) or shapes (1) shown."""
    t = np.zeros((len(objects), len(names)), dtype=np.float32)
    for i, objs in enumerate(objects):
        for o in objs:
            if o[field] in names:  # recoloured objects have no colour name
                t[i, names.index(o[field])] = 1.0
    return t / np.maximum(t.sum(1, keepdims=True), 1.0)


def label_text_loss(model, tokenizer, img_f, logit_scale, objects, rng: np.random.Generator, shape_mask=None):
    """Cross-entropy of each image against the texts of all colours and all shapes (one random
    template each step), the UniCL-style use of class names as texts: it trains exactly the
    zero-shot read-out and, through the shape texts, pushes shape into the image features.

    shape_mask (B,) bool: the images that take part in the shape term (None: all). Restricting it
    to repainted frames keeps the shape texts from aligning with the palette colours, which in the
    train split predict shape ("red is never a cone") but not in the held-out pairs.
    """
    import torch

    from studio.tinyworld import COLORS, SHAPES

    loss = 0.0
    for names, templates, key, field in ((list(COLORS), COLOR_TEMPLATES, "c", 0), (list(SHAPES), SHAPE_TEMPLATES, "s", 1)):
        template = templates[int(rng.integers(len(templates)))]
        txt_f = model.encode_text(tokenizer([template.format(**{key: n}) for n in names]), normalize=True)
        logits = logit_scale * img_f @ txt_f.T
        target = torch.from_numpy(label_text_targets(objects, names, field))
        has_label = target.sum(1) > 0
        if field == 1 and shape_mask is not None:
            has_label &= torch.from_numpy(np.asarray(shape_mask, dtype=bool))
        if has_label.any():  # e.g. a batch without a repainted frame has no shape term
            loss = loss + (-(target * torch.log_softmax(logits, 1)).sum(1)[has_label].mean())
    return loss / 2


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------

def write_model_config(out: str | Path) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{MODEL_NAME}.json"
    path.write_text(json.dumps(MODEL_CFG, indent=2) + "\n")
    return path


def lr_at(step: int, cfg: ClipTrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def multi_positive_clip_loss(logits, pos):
    """Symmetric CE against targets spread evenly over each row's / column's positives."""
    import torch

    t_img = pos / pos.sum(1, keepdim=True)
    t_txt = pos.T / pos.T.sum(1, keepdim=True)
    loss_i = -(t_img * torch.log_softmax(logits, 1)).sum(1).mean()
    loss_t = -(t_txt * torch.log_softmax(logits.T, 1)).sum(1).mean()
    return 0.5 * (loss_i + loss_t)


def save_clip(model, out: str | Path) -> Path:
    from safetensors.torch import save_file

    out = Path(out)
    # fp16 on disk halves the file (the 49k-row token table dominates); loading casts back to fp32.
    state = {k: (v.detach().half() if v.is_floating_point() else v.detach()).contiguous()
             for k, v in model.state_dict().items()}
    path = out / f"{MODEL_NAME}.safetensors"
    save_file(state, str(path), metadata={"format": "pt"})
    return path


def check_config(cfg: ClipTrainConfig) -> None:
    """Fail before any rendering on settings that cannot work."""
    for name in ("p_attribute", "p_recolor", "p_grey", "p_codec"):
        if not 0.0 <= getattr(cfg, name) <= 1.0:
            raise ValueError(f"{name} is a probability in [0, 1], got {getattr(cfg, name)}")
    if cfg.codec_latent_noise < 0:
        raise ValueError(f"codec_latent_noise is a standard deviation >= 0, got {cfg.codec_latent_noise}")
    if cfg.p_codec > 0 and not (Path(cfg.codec) / "config.json").is_file():
        raise FileNotFoundError(f"p_codec needs a TinyWorldCodec folder (config.json + weights), not found: {cfg.codec}; "
                                "the generator's is assets/generator/vae")


def train(cfg: ClipTrainConfig) -> dict:
    import open_clip
    import torch

    from studio.scoring import Scorer
    from training.eval_clip import zero_shot_attributes

    from training.run_setup import start_run

    check_config(cfg)
    rng, run_dir = start_run(cfg)

    t0 = time.time()
    data = load_training_images(cfg)
    from training.pretrain_depth import render_dataset, split_rows

    n_train = len(split_rows("train"))
    val = render_dataset("train", n_train - cfg.val_clips, cfg.val_clips, 64, cfg.data_dir, cfg.workers, stride=1)
    data_s = time.time() - t0
    print(f"{len(data['frames'])} training frames; data ready in {data_s:.1f}s", flush=True)

    config_path = write_model_config(cfg.out)
    open_clip.add_model_config(config_path)
    model = open_clip.create_model(MODEL_NAME, pretrained=cfg.init or None)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    n_params = sum(p.numel() for p in model.parameters())
    pp = open_clip.get_model_preprocess_cfg(model)
    scorer = Scorer(model=model, tokenizer=tokenizer, name=MODEL_NAME, pretrained=None,
                    image_size=MODEL_CFG["vision_cfg"]["image_size"], mean=tuple(pp["mean"]), std=tuple(pp["std"]))
    print(f"model: {n_params / 1e6:.2f} M parameters", flush=True)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token_embedding" not in n
             and "positional_embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token_embedding" not in n
                                                               and "positional_embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6)

    codec = None
    if cfg.p_codec > 0:
        from studio.codec import TinyWorldCodec

        codec = TinyWorldCodec.from_pretrained(cfg.codec).eval()

    log_file = open(run_dir / "log.jsonl", "w")
    t_train, cpu_train = time.time(), time.process_time()
    stopped_early = False
    step = 0
    for step in range(cfg.steps):
        if (time.process_time() - cpu_train) / 60 > cfg.max_cpu_minutes:
            stopped_early = True
            break
        frames, texts, pos, objects, recolored = sample_batch(data, cfg, rng, codec)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, cfg)
        model.train()
        images = scorer.preprocess(frames)
        tokens = tokenizer(texts)
        img_f, txt_f, logit_scale = model(images, tokens)
        logits = logit_scale * img_f @ txt_f.T
        loss = multi_positive_clip_loss(logits, torch.from_numpy(pos))
        if cfg.label_weight > 0:
            loss = loss + cfg.label_weight * label_text_loss(model, tokenizer, img_f, logit_scale, objects, rng,
                                                             recolored if cfg.shape_from_recolored_only else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))

        if step % cfg.log_every == 0 or step == cfg.steps - 1:
            rec = {"step": step, "loss": loss.item(), "logit_scale": logit_scale.item(),
                   "lr": opt.param_groups[0]["lr"], "elapsed_s": time.time() - t_train,
                   "cpu_s": time.process_time() - cpu_train}
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            print(json.dumps(rec), flush=True)
        if (step + 1) % cfg.val_every == 0 or step == cfg.steps - 1:
            model.eval()
            m = zero_shot_attributes(scorer, val["frames"], val["instance"], val["scenes"], single_object_only=False)
            rec = {"step": step, "elapsed_s": time.time() - t_train,
                   "val/color_top1": m["color_top1"], "val/shape_top1": m["shape_top1"], "val/images": m["images"]}
            log_file.write(json.dumps(rec) + "\n")
            log_file.flush()
            print(json.dumps(rec), flush=True)

    train_s, train_cpu_s = time.time() - t_train, time.process_time() - cpu_train
    model.eval()
    weights = save_clip(model, cfg.out)
    info = {"trained_by": "training/pretrain_clip.py", "seed": cfg.seed, "steps": step + 1 - int(stopped_early),
            "train_cpu_minutes": round(train_cpu_s / 60, 2), "train_wall_minutes": round(train_s / 60, 2),
            "threads": cfg.threads, "parameters": n_params,
            "data": f"TinyWorld corpus train split: {cfg.clips} clips at 64px + {cfg.clips_128} at 128px "
                    f"(resized), frames 0,4,8,12,16 of 17; {len(data['frames'])} frames with a visible object",
            "train_config": asdict(cfg)}
    (Path(cfg.out) / "train_info.json").write_text(json.dumps(info, indent=2) + "\n")
    summary = {"train_s": train_s, "train_cpu_s": train_cpu_s, "data_s": data_s, "stopped_early": stopped_early,
               "parameters": n_params,
               "weights": str(weights)}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary), flush=True)
    log_file.close()
    return summary


def parse_args(argv: list[str] | None = None) -> ClipTrainConfig:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, value in asdict(ClipTrainConfig()).items():
        kind = (lambda v: v.lower() in ("1", "true", "yes")) if isinstance(value, bool) else type(value)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=value)
    return ClipTrainConfig(**vars(p.parse_args(argv)))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    config = parse_args()
    try:
        check_config(config)
    except (ValueError, FileNotFoundError) as e:
        raise SystemExit(f"pretrain_clip: {e}") from None
    train(config)
