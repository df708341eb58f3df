"""CLIP scorer: tiny open_clip models built in code, offline failures, the shipped TinyWorld CLIP."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from studio.scoring import DEFAULT_CLIP_DIR, TINYWORLD_WEIGHTS, _cached_tag_weights, load_scorer
from training.pretrain_clip import multi_positive_clip_loss, positives_matrix, visible_objects

TINY_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 16, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    """A randomly initialised tiny open_clip model registered as 'tiny-test-clip', saved to disk."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path_factory.mktemp("clipcfg")
    (folder / "tiny-test-clip.json").write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(folder)
    torch.manual_seed(0)
    model = open_clip.create_model("tiny-test-clip").eval()
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return model, path


def frames(n=3, h=32, w=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_checkpoint_round_trip_and_api(tiny_checkpoint):
    model, path = tiny_checkpoint
    scorer = load_scorer("tiny-test-clip", pretrained=str(path))
    assert scorer.image_size == 32
    f = frames()
    with torch.no_grad():
        ref = torch.nn.functional.normalize(model.encode_image(scorer.preprocess(f)), dim=-1).numpy()
    np.testing.assert_allclose(scorer.image_features(f), ref, atol=1e-5)

    img = scorer.image_features(f)
    txt = scorer.text_features(["a red cube", "a blue sphere"])
    assert img.shape == (3, 16) and txt.shape == (2, 16)
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1, rtol=1e-5)
    s = scorer.score(f, "a red cube")
    assert isinstance(s, float) and -1 <= s <= 1
    assert s == pytest.approx(float((img @ txt[0]).mean()), abs=1e-5)
    p = scorer.zero_shot(f, ["a red cube", "a blue sphere", "a cone"])
    assert p.shape == (3, 3)
    np.testing.assert_allclose(p.sum(1), 1, rtol=1e-5)


def test_images_of_any_size_and_single_images(tiny_checkpoint):
    _, path = tiny_checkpoint
    scorer = load_scorer("tiny-test-clip", pretrained=str(path))
    one = frames(1, 64, 96)[0]
    assert scorer.image_features(one).shape == (1, 16)
    mixed = [frames(1, 64, 64)[0], frames(1, 128, 80, seed=1)[0]]
    assert scorer.zero_shot(mixed, ["a", "b"]).shape == (2, 2)
    # A frame already at the model size is not resampled: the same as its own features.
    f = frames(2)
    np.testing.assert_allclose(scorer.image_features(list(f)), scorer.image_features(f), atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros((2, 32, 32, 3), np.float32), "uint8"),
    (np.zeros((2, 32, 32), np.uint8), "shape"),
    (np.zeros((0, 32, 32, 3), np.uint8), "non-empty"),
    ([], "no images"),
    ("frames.png", "numpy array"),
])
def test_bad_images_raise_value_error(tiny_checkpoint, bad, match):
    scorer = load_scorer("tiny-test-clip", pretrained=str(tiny_checkpoint[1]))
    with pytest.raises(ValueError, match=match):
        scorer.score(bad, "a red cube")


def test_bad_text_raises_value_error(tiny_checkpoint):
    scorer = load_scorer("tiny-test-clip", pretrained=str(tiny_checkpoint[1]))
    with pytest.raises(ValueError):
        scorer.zero_shot(frames(), [])
    with pytest.raises(ValueError):
        scorer.score(frames(), ["not", "a", "string"])


def test_bad_names_and_missing_checkpoints():
    with pytest.raises(ValueError, match="unknown open_clip model"):
        load_scorer("no-such-architecture")
    with pytest.raises(ValueError, match="needs pretrained weights"):
        load_scorer("ViT-B-32")
    with pytest.raises(FileNotFoundError, match="neither an existing file nor a known tag"):
        load_scorer("ViT-B-32", pretrained="/nonexistent/weights.safetensors")
    with pytest.raises(FileNotFoundError, match="pretrain_clip"):
        load_scorer("tinyworld", pretrained="/nonexistent/dir")


@pytest.mark.parametrize("name, tag", [("ViT-B-32", "laion2b_s34b_b79k"), ("ViT-B-32", "openai"),
                                       ("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", None)])
def test_missing_pretrained_weights_fail_fast_offline(monkeypatch, name, tag):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if tag and _cached_tag_weights(name, tag)[0] is not None:
        pytest.skip("these weights are cached on this machine")
    t0 = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="download"):
        load_scorer(name, pretrained=tag)
    assert time.perf_counter() - t0 < 1.0


def test_positives_matrix_and_loss():
    scene = {"objects": [{"color": "red", "shape": "cube"}, {"color": "blue", "shape": "cone"}]}
    inst = np.zeros((8, 8), np.int8)
    inst[:4, :4] = 1
    assert visible_objects(inst, scene, min_pixels=4) == [("red", "cube", 16)]
    objects = [[("red", "cube", 16)], [("red", "sphere", 9)], [("blue", "cone", 9)]]
    specs = [("red", None), (None, "sphere"), (None, None)]
    pos = positives_matrix(objects, specs, np.array([0, 1, 2]), ["a red object", "a sphere", "full caption"])
    np.testing.assert_array_equal(pos, [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    good = torch.tensor(pos) * 10.0
    assert multi_positive_clip_loss(good, torch.tensor(pos)) < multi_positive_clip_loss(-good, torch.tensor(pos))


def _single_object_frames(split: str, n: int):
    from training.pretrain_depth import render_job, split_rows

    rows = [r for r in split_rows(split) if len(r["scene"]["objects"]) == 1][:n]
    return [render_job((r["prompt"], r["scene"], 64, 4, 0)) for r in rows]


def test_shipped_tinyworld_clip_meets_target():
    """assets/clip on held-out single-object frames. Targets: colour 85 %, shape 70 % (the shipped
    model reaches 99.7 % / 77.0 % on the whole test split, 73.3 % shape on the held-out colour-shape
    pairs, 87.7 % on the dynamic split; training/eval_clip.py). These 16 clips per split are harder
    than the split as a whole (shipped: test shape 63.7 %, 55.4 % on held-out pairs, dynamic
    91.2 %); the floors sit between that and the previous model (48.7 % / 38.5 % / 90.0 %), so a
    return of the colour shortcut fails. Chance is 10 % / 20 %."""
    from training.eval_clip import zero_shot_attributes

    assert (DEFAULT_CLIP_DIR / TINYWORLD_WEIGHTS).is_file(), "assets/clip is missing"
    scorer = load_scorer()
    assert scorer.image_size == 64
    results = {}
    for split in ("test", "dynamic"):  # held-out pairs mostly / seen pairs in unseen scenes
        clips = _single_object_frames(split, 16)
        m = zero_shot_attributes(scorer, np.stack([c["frames"] for c in clips]),
                                 np.stack([c["instance"] for c in clips]), [c["scene"] for c in clips])
        assert m["images"] >= 40
        results[split] = m
    assert results["test"]["color_top1"] >= 0.9 and results["dynamic"]["color_top1"] >= 0.9, results
    assert results["test"]["shape_top1"] >= 0.58, results["test"]
    assert results["test"]["by_pair"]["held_out_pairs"]["shape_top1"] >= 0.48, results["test"]["by_pair"]
    assert results["dynamic"]["shape_top1"] >= 0.85, results["dynamic"]


def test_shipped_tinyworld_clip_score_prefers_the_right_words():
    """score() (clip_score, R_gen) of a clip with its own description against the same description
    with the colour or the shape swapped (shipped: mean margin 0.36 / 0.17, shape margin > 0 on
    15 of 16 held-out clips)."""
    scorer = load_scorer()
    color_margin, shape_margin = [], []
    for clip in _single_object_frames("test", 16):
        obj = clip["scene"]["objects"][0]
        other_color = "green" if obj["color"] != "green" else "red"
        other_shape = "cube" if obj["shape"] != "cube" else "sphere"
        own = scorer.score(clip["frames"], f"a {obj['color']} {obj['shape']}")
        color_margin.append(own - scorer.score(clip["frames"], f"a {other_color} {obj['shape']}"))
        shape_margin.append(own - scorer.score(clip["frames"], f"a {obj['color']} {other_shape}"))
    color_margin, shape_margin = np.array(color_margin), np.array(shape_margin)
    assert (color_margin > 0.05).all() and color_margin.mean() > 0.25, color_margin
    assert shape_margin.mean() > 0.1 and (shape_margin > 0).mean() >= 0.8, shape_margin


def test_codec_augmentation_gives_the_frames_a_generated_clip_would_have():
    """pretrain_clip's codec round trip: each frame comes back as the first or a group frame of the
    codec's decode of a still clip; latent noise degrades it further."""
    from studio.codec import TinyWorldCodec
    from studio.tinyworld import render_clip
    from training.pretrain_clip import codec_round_trip

    codec = TinyWorldCodec.from_pretrained("assets/generator/vae").eval()
    f = render_clip("Camera pan left. A red cone and a blue cube.", seed=1).frames[:6]
    out = codec_round_trip(codec, f, np.random.default_rng(0))
    assert out.shape == f.shape and out.dtype == np.uint8
    with torch.no_grad():
        still = codec.decode(codec.encode(codec.frames_to_video(np.repeat(f[:, None], 5, 1)))).sample
    still = ((still.clamp(-1, 1) + 1) * 127.5 + 0.5).byte().permute(0, 2, 3, 4, 1).numpy()  # (N, 5, H, W, 3)
    for k in range(len(f)):
        assert min(np.abs(still[k, j].astype(int) - out[k].astype(int)).max() for j in range(5)) <= 1

    def psnr(a):
        return 10 * np.log10(255**2 / np.mean((a.astype(float) - f.astype(float)) ** 2))

    assert 22 < psnr(out) < 35  # blurred, not destroyed
    assert psnr(codec_round_trip(codec, f, np.random.default_rng(0), latent_noise=1.0)) < psnr(out) - 1


def test_sample_batch_sends_the_p_codec_share_of_frames_through_the_codec():
    from studio.codec import TinyWorldCodec
    from training.pretrain_clip import ClipTrainConfig, sample_batch

    rng = np.random.default_rng(0)
    n = 12
    data = {"frames": rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8),
            "instance": np.zeros((n, 64, 64), np.int32), "objects": [[("red", "cube", 50)]] * n,
            "clip_ids": np.arange(n), "scenes": [{"objects": [{"color": "red", "shape": "cube"}]}] * n}
    codec = TinyWorldCodec.from_pretrained("assets/generator/vae").eval()

    def batch(p_codec):
        cfg = ClipTrainConfig(batch=8, p_recolor=0.0, p_attribute=1.0, p_codec=p_codec)
        return sample_batch(data, cfg, np.random.default_rng(1), codec)[0]

    plain, coded = batch(0.0), batch(1.0)
    # Same draws up to the codec step: noise frames come back smoothed, every one of them.
    per_frame = np.abs(plain.astype(int) - coded.astype(int)).mean(axis=(1, 2, 3))
    assert (per_frame > 20).all()
    assert np.abs(np.diff(coded.astype(float), axis=2)).mean() < 0.5 * np.abs(np.diff(plain.astype(float), axis=2)).mean()


def test_clip_training_settings_that_cannot_work_fail_before_any_rendering(tmp_path):
    from training.pretrain_clip import ClipTrainConfig, check_config

    check_config(ClipTrainConfig(p_codec=0.5))  # the generator's codec ships
    with pytest.raises(ValueError, match="p_codec is a probability"):
        check_config(ClipTrainConfig(p_codec=1.5))
    with pytest.raises(ValueError, match="codec_latent_noise"):
        check_config(ClipTrainConfig(p_codec=0.5, codec_latent_noise=-1))
    with pytest.raises(FileNotFoundError, match="TinyWorldCodec folder"):
        check_config(ClipTrainConfig(p_codec=0.5, codec=str(tmp_path)))
    check_config(ClipTrainConfig(p_codec=0.0, codec=str(tmp_path)))  # no codec needed without p_codec
