"""Studies, pre-generation, blind battles, attention checks and vote locking, on real MP4s."""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from studio.study.battles import (
    PromptSpec,
    StudySpec,
    create_study,
    generation_progress,
    load_clip_metrics,
    load_votes,
    next_battle,
    pregenerate,
    start_pregeneration,
    submit_vote,
)
from studio.study.media import generate_synthetic
from studio.video import read_mp4
from studio.study.stats import evaluator_summary

pytestmark = pytest.mark.db_backends("sqlite", "postgresql")


def test_study_spec_is_checked_up_front(engine, spec):
    with pytest.raises(ValueError, match="at least 2 systems"):
        create_study(engine, spec(systems=["only"]))
    with pytest.raises(ValueError, match="category"):
        create_study(engine, StudySpec("x", [PromptSpec("p", "moving")], [0], ["a", "b"]))
    create_study(engine, spec())
    with pytest.raises(ValueError, match="already exists"):
        create_study(engine, spec())


def test_pregeneration_caches_resumes_and_records_failures(engine, data_dir, spec):
    create_study(engine, spec())
    calls: list[tuple[str, str, int]] = []

    def flaky(system, prompt, seed, out_path):
        calls.append((system, prompt, seed))
        if system == "tuned" and seed == 1 and "cone" in prompt and calls.count(calls[-1]) == 1:
            out_path.write_bytes(b"half a clip")  # a crash mid-write leaves no final file
            raise RuntimeError("out of memory")
        generate_synthetic(system, prompt, seed, out_path)

    first = pregenerate(engine, data_dir, "s1", flaky)
    assert (first.total, first.ready, first.failed) == (12, 11, 1)
    assert not list(data_dir.rglob(".partial-*"))
    second = pregenerate(engine, data_dir, "s1", flaky)  # retries only the failed clip
    assert (second.ready, second.failed) == (12, 0) and len(calls) == 13
    frames = read_mp4(next(data_dir.rglob("*.mp4")))
    assert frames.shape == (16, 256, 256, 3) and frames.dtype == np.uint8  # 32 px shown at 8x, crisp
    assert len(list(data_dir.rglob("*.mp4"))) == 12 + 2 * 6  # + shuffled copy and twin per first-system clip


def test_generator_sidecar_files_and_metrics_are_kept(engine, data_dir, spec):
    """A generator may write files beside the clip (here its metrics, as studio/services.py does)."""
    create_study(engine, spec(systems=["a", "b"]))

    def with_metrics(system, prompt, seed, out_path):
        generate_synthetic(system, prompt, seed, out_path)
        out_path.with_suffix(".metrics.json").write_text(json.dumps({"clip_score": len(prompt) + seed}))

    def read_metrics(clip_path):
        return json.loads(clip_path.with_suffix(".metrics.json").read_text())

    pregenerate(engine, data_dir, "s1", with_metrics, metrics=read_metrics)
    metrics = load_clip_metrics(engine, "s1")
    assert len(metrics) == 12
    assert metrics[("a red cube on a checker floor", 1, "b")] == {"clip_score": 30.0}


def test_background_pregeneration_reports_progress(engine, data_dir, spec):
    create_study(engine, spec())
    seen: list[float] = []
    job = start_pregeneration(engine, data_dir, "s1", generate_synthetic)
    for _ in range(10_000):  # bounded poll; the job ends long before
        seen.append(job.progress().fraction)
        if not job.running:
            break
    result = job.join(timeout=120)
    assert result.ready == 12 and generation_progress(engine, "s1").fraction == 1.0
    assert seen == sorted(seen)


def test_battles_are_blind_stable_until_voted_and_reveal_names_after(engine, data_dir, ready_study, rng):
    view = next_battle(engine, data_dir, ready_study, "anon:a", rng=rng)
    shown = asdict(view)
    assert "baseline" not in str(shown) and "tuned" not in str(shown)  # paths included
    assert "system" not in " ".join(shown) and "kind" not in shown
    assert next_battle(engine, data_dir, ready_study, "anon:a", rng=rng).battle_id == view.battle_id  # reload
    receipt = submit_vote(engine, view.battle_id, "anon:a", {"overall": "left", "camera": "both_good"}, "v1")
    assert receipt.recorded and {receipt.left_system, receipt.right_system} == {"baseline", "tuned"}
    assert next_battle(engine, data_dir, ready_study, "anon:a", rng=rng).battle_id != view.battle_id


def test_vote_is_locked_after_submit(engine, data_dir, ready_study):
    view = next_battle(engine, data_dir, ready_study, "anon:a")
    first = submit_vote(engine, view.battle_id, "anon:a", {"overall": "left"}, "v1")
    again = submit_vote(engine, view.battle_id, "anon:a", {"overall": "right", "camera": "left"}, "v1")
    assert not again.recorded and again.vote_id == first.vote_id
    assert again.answers == {"3d_consistency": None, "camera": None, "overall": "left"}
    assert len(load_votes(engine, ready_study)) == 1


def test_answers_are_validated_and_battles_belong_to_their_evaluator(engine, data_dir, ready_study):
    view = next_battle(engine, data_dir, ready_study, "anon:a")
    with pytest.raises(ValueError, match="overall"):
        submit_vote(engine, view.battle_id, "anon:a", {"camera": "left"}, "v1")
    with pytest.raises(ValueError, match="one of"):
        submit_vote(engine, view.battle_id, "anon:a", {"overall": "maybe"}, "v1")
    with pytest.raises(PermissionError):
        submit_vote(engine, view.battle_id, "anon:b", {"overall": "left"}, "v1")
    assert load_votes(engine, ready_study) == []


def test_pairs_are_unseen_balanced_randomised_and_capped(engine, data_dir, spec):
    create_study(engine, spec(max_votes_per_evaluator=4, attention_rate=0.0))
    pregenerate(engine, data_dir, "s1", generate_synthetic)
    rng = random.Random(0)
    left_is_baseline = Counter()
    for e in range(6):
        evaluator = f"anon:{e}"
        items = []
        for _ in range(10):
            view = next_battle(engine, data_dir, "s1", evaluator, rng=rng)
            if view is None:
                break
            receipt = submit_vote(engine, view.battle_id, evaluator, {"overall": "left"}, "v1")
            items.append((view.prompt, view.seed))
            left_is_baseline[receipt.left_system == "baseline"] += 1
        assert len(items) == 4 and len(set(items)) == 4  # the cap; never the same pair twice
    per_item = Counter((v["prompt"], v["seed"]) for v in load_votes(engine, "s1"))
    assert len(per_item) == 6 and max(per_item.values()) - min(per_item.values()) <= 1  # balanced
    assert left_is_baseline[True] > 0 and left_is_baseline[False] > 0


def test_no_battle_when_every_pair_was_seen(engine, data_dir, ready_study):
    for _ in range(6):
        view = next_battle(engine, data_dir, ready_study, "anon:a")
        submit_vote(engine, view.battle_id, "anon:a", {"overall": "both_bad"}, "v1")
    assert next_battle(engine, data_dir, ready_study, "anon:a") is None


def square_x(frames: np.ndarray) -> np.ndarray:
    """Per frame, the centre column of the synthetic clip's square (differs from the corner)."""
    h = frames.shape[1]  # the 32-px synthetic clip, shown at an integer scale
    rows = frames[:, h * 12 // 32 : h * 20 // 32].astype(np.float32)
    off = np.abs(rows - frames[:, :1, :1].astype(np.float32)).sum(axis=3).mean(axis=1) > 40
    cols = np.arange(frames.shape[2])
    return (off * cols).sum(axis=1) / np.maximum(off.sum(axis=1), 1)


def test_attention_checks_use_identical_or_shuffled_clips_and_flag_careless_voters(engine, data_dir, spec):
    create_study(engine, spec(attention_rate=1.0, attention_fail_limit=2, max_votes_per_evaluator=30))
    pregenerate(engine, data_dir, "s1", generate_synthetic)
    rng = random.Random(3)
    kinds = Counter()
    for evaluator, careful in (("anon:careful", True), ("anon:careless", False)):
        for _ in range(8):
            view = next_battle(engine, data_dir, "s1", evaluator, rng=rng)
            assert view.left_video != view.right_video  # never the same URL twice
            if Path(view.left_video).read_bytes() == Path(view.right_video).read_bytes():
                answer = "both_good" if careful else "left"
            else:
                left = read_mp4(view.left_video)
                right = read_mp4(view.right_video)
                # The shuffled copy has the same frames in another order.
                means_l, means_r = left.mean(axis=(1, 2, 3)), right.mean(axis=(1, 2, 3))
                assert np.allclose(np.sort(means_l), np.sort(means_r), atol=2)
                xs_l, xs_r = square_x(left), square_x(right)
                original_is_left = np.all(np.diff(xs_l) >= -1)  # the square drifts steadily right
                assert original_is_left != np.all(np.diff(xs_r) >= -1)
                broken_side = "right" if original_is_left else "left"
                answer = ("left" if broken_side == "right" else "right") if careful else broken_side
            receipt = submit_vote(engine, view.battle_id, evaluator, {"overall": answer}, "v1")
            assert receipt.attention_check
            kinds[(receipt.attention_failed, careful)] += 1
    assert kinds[(True, True)] == 0 and kinds[(False, False)] == 0
    # min_vote_ms=0: this test votes the instant a pair is dealt; only the attention checks are judged.
    summary = {e["evaluator"]: e for e in evaluator_summary(load_votes(engine, "s1"), 2, min_vote_ms=0)}
    assert summary["anon:careless"]["careless"] and not summary["anon:careful"]["careless"]
    assert summary["anon:careless"]["flags"] == "failed attention checks"
    assert {v["kind"] for v in load_votes(engine, "s1")} == {"attention_identical", "attention_shuffled"}
