"""Prompt corpora: splits, held-out combinations, determinism, loaders."""

import json

import numpy as np
import pytest

from studio.camera import parse_camera_motion
from studio.prompts import describe_prompts, load_prompt_file, open_world_prompts
from studio.tinyworld.corpus import (
    HELD_OUT_PAIRS, HELD_OUT_SEQUENCES, SPLIT_SIZES, build_split, load_split, make_caption, scene_of,
)
from studio.tinyworld.scene import parse_scene_prompt


def test_shipped_splits_have_the_promised_sizes_and_are_reproducible_from_the_seed():
    for split, n in SPLIT_SIZES.items():
        rows = load_split(split)
        assert len(rows) == n
        assert len({r["prompt"] for r in rows}) == n
    assert build_split("test", SPLIT_SIZES["test"]) == load_split("test")
    assert build_split("dynamic", 50) == load_split("dynamic")[:50]


def test_every_prompt_parses_back_to_its_structured_scene():
    for split in ("train", "test", "dynamic"):
        for row in load_split(split)[:400]:
            parsed = parse_scene_prompt(row["prompt"])
            assert parsed.unknown_words == [], row["prompt"]
            assert parsed.moves == row["scene"]["moves"]
            got = [(o.color, o.shape, o.motion) for o in parsed.objects]
            want = [(o["color"], o["shape"], o["motion"]) for o in row["scene"]["objects"]]
            assert got == want, row["prompt"]


def test_training_never_sees_held_out_pairs_or_sequences_and_test_always_does():
    for row in load_split("train"):
        assert not {(o["color"], o["shape"]) for o in row["scene"]["objects"]} & HELD_OUT_PAIRS
        assert tuple(row["scene"]["moves"]) not in HELD_OUT_SEQUENCES
    for row in load_split("test"):
        assert parse_camera_motion(row["prompt"])  # every test prompt has a camera clause
        pairs = {(o["color"], o["shape"]) for o in row["scene"]["objects"]}
        assert pairs & HELD_OUT_PAIRS or tuple(row["scene"]["moves"]) in HELD_OUT_SEQUENCES


def test_dynamic_split_has_moving_objects_and_static_splits_do_not():
    assert all(any(o["motion"] for o in r["scene"]["objects"]) for r in load_split("dynamic"))
    assert not any(o["motion"] for r in load_split("train") for o in r["scene"]["objects"])
    assert scene_of(load_split("dynamic")[0]).is_dynamic


def test_captions_carry_a_camera_clause_only_sometimes_in_varied_words():
    rng = np.random.default_rng(0)
    rows = load_split("train")[:600]
    captions = [make_caption(r["scene"], rng, camera_prob=0.4) for r in rows]
    with_cam = [c for c, r in zip(captions, rows) if parse_camera_motion(c)]
    assert 0.3 < len(with_cam) / len(captions) < 0.45
    for c, r in zip(captions, rows):
        moves = parse_camera_motion(c)
        assert moves in ([], r["scene"]["moves"]), c
    assert len({c.split(".")[0] for c in with_cam}) > 40  # many wordings


def test_open_world_corpus_is_deterministic_with_camera_clauses():
    a, b = open_world_prompts(50, seed=1), open_world_prompts(50, seed=1)
    assert a == b and all(parse_camera_motion(r["prompt"]) == r["moves"] for r in a)
    assert len(load_split("open_world")) == 400


def test_prompt_file_loader_reads_text_jsonl_json_and_csv(tmp_path):
    (tmp_path / "p.txt").write_text("# my prompts\nCamera push in. A castle.\n\nA dog runs.\n")
    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "Camera pan left. A boat."}) + "\n" + json.dumps("A cat.") + "\n")
    (tmp_path / "p.json").write_text(json.dumps({"prompts": [{"text": "A tree."}, "A bird."]}))
    (tmp_path / "p.csv").write_text("id,prompt\n1,A bridge.\n2,\"Camera orbit left, then push in. A hut.\"\n")
    assert load_prompt_file(tmp_path / "p.txt") == ["Camera push in. A castle.", "A dog runs."]
    assert load_prompt_file(tmp_path / "p.jsonl") == ["Camera pan left. A boat.", "A cat."]
    assert load_prompt_file(tmp_path / "p.json") == ["A tree.", "A bird."]
    assert load_prompt_file(tmp_path / "p.csv")[1] == "Camera orbit left, then push in. A hut."
    assert describe_prompts(load_prompt_file(tmp_path / "p.csv"))["with_camera"] == 1


@pytest.mark.parametrize("name, content, match", [
    ("bad.jsonl", "{not json\n", "not valid JSON"),
    ("empty.txt", "\n# only a comment\n", "no prompts"),
    ("bad.csv", "id,title\n1,x\n", "column"),
    ("bin.txt", b"\xff\xfe\x00", "UTF-8"),
])
def test_prompt_file_loader_rejects_malformed_files_clearly(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(ValueError, match=match):
        load_prompt_file(p)
    with pytest.raises(FileNotFoundError):
        load_prompt_file(tmp_path / "missing.txt")
    with pytest.raises(ValueError, match="unknown split"):
        load_split("validation")
