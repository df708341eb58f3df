"""Generate & compare: baseline and tuned from the same seed, analysed side by side."""

from __future__ import annotations

import json

import numpy as np

from studio.app.compare import compare
from studio.pipelines import load_pipeline

PROMPT = "Camera pan left. A red cube on a checkered floor."
SETTINGS = dict(seed=3, num_frames=9, height=64, width=64, steps=4, guidance=5.0)


def test_both_sides_come_from_the_same_seed_and_differ_only_by_the_adapter(tmp_path, tuned_lora):
    c = compare(PROMPT, lora=tuned_lora, out_dir=tmp_path, **SETTINGS)
    base, tuned = c.side("baseline"), c.side("tuned")
    assert [s.label for s in c.sides] == ["baseline", "tuned"]
    # The baseline side is exactly what the base pipeline gives for that seed, analysis overlap or not.
    alone = load_pipeline("tinyworld").generate(PROMPT, **SETTINGS)
    np.testing.assert_array_equal(base.clip.frames, alone.frames)
    assert np.abs(base.clip.frames.astype(int) - tuned.clip.frames.astype(int)).mean() > 0.5
    # Every metric row has both values and their delta; the files the UI offers exist.
    rows = {r[0]: r for r in c.table}
    for label in ("Depth-consistency L1", "Reconstruction PSNR (dB)", "Trajectory error (°)"):
        b, t, d = rows[label][1:4]
        assert d is not None and abs((t - b) - d) < 1e-3
    for side in c.sides:
        for path in side.files.values():
            assert (tmp_path / path.split("/")[-1]).stat().st_size > 0
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert set(report["sides"]) == {"baseline", "tuned"}
    assert {"baseline/generate_s", "tuned/analyze_s", "total_s"} <= set(c.timings)


def test_without_a_tuned_checkpoint_the_baseline_stands_alone_with_a_note(tmp_path):
    c = compare(PROMPT, out_dir=tmp_path, **SETTINGS)
    assert [s.label for s in c.sides] == ["baseline"]
    assert any("No tuned model in the slot" in n for n in c.notes)
    assert all(r[2] is None for r in c.table)
