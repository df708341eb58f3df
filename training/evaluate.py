"""Baseline vs tuned generators on held-out prompts: the paper's table with bootstrap CIs.

    python -m training.evaluate --baseline tinyworld --tuned runs/NAME [--tuned runs/ABLATION ...] \
        --prompts tinyworld:test --n-prompts 32 --seeds 0 1 2 --out docs/results

Every system generates every (prompt, seed) with the same seeds, so baseline and tuned start from
the same initial noise (``prepare_latents`` draws noise from the seed alone). Each clip is analysed
by the geometry engine (``studio.geometry.analyze``) and scored with the trainer's reward functions
(``studio.rewards``): the table holds depth_consistency_l1, recon_psnr, trajectory_error_deg,
clip_score and the reward components s_recon, s_meta, s_traj, r_gen.

Statistics: seeds are averaged within a prompt first (they are not independent draws of the
prompt population); the 95 % CI of a mean is the percentile bootstrap over prompts, and the paired
difference tuned − baseline is bootstrapped over the per-prompt differences (seeded, so re-runs
give the same intervals).

Beside the table: colour/shape correctness by the CLIP scorer's zero-shot judge (single-object
prompts, the judge of training/eval_generator.py); the dynamic split with a motion magnitude that
must not collapse (mean absolute frame difference and Farneback optical-flow magnitude); ablation
rows for every further --tuned and, with --no-camera-init, the first tuned LoRA and the baseline
sampled without camera-aware initialization (each compared with the main baseline).

Outputs: OUT.md, OUT.json (``{"command", "train_minutes", "n_prompts", "seeds", "metrics": {name:
{"baseline", "tuned", "diff", "ci"}}}`` for the first tuned system; OUT.<label>.json the same for
each further one), OUT.details.json (per-system CIs, per-item records, run configs) and OUT.png, a
contact sheet of paired clips (baseline row over tuned row). Clips and their measurements are
cached on disk per (system, prompt, seed), keyed by the weights' content, so re-runs are cheap.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from studio.util import atomic_write_text
from training.checkpoints import TRAINER_STATE, list_checkpoints, read_trainer_state
from training.plan import load_prompts

ROOT = Path(__file__).resolve().parents[1]
CACHE_VERSION = 2  # bump when what a cached record holds changes

TABLE_METRICS = ("depth_consistency_l1", "recon_psnr", "trajectory_error_deg", "clip_score",
                 "s_recon", "s_meta", "s_traj", "r_gen")
ATTRIBUTE_METRICS = ("color_correct", "shape_correct")
DYNAMIC_METRICS = ("motion_absdiff", "motion_flow_px", "clip_score")
# Camera adherence move by move: single-move clauses whole, and each move of a two-move clause
# on its own half of the clip (studio.geometry.metrics.move_trajectory_errors).
CLAUSE_METRICS = ("trajectory_error_single_deg", "trajectory_error_move1_deg", "trajectory_error_move2_deg")
LOWER_IS_BETTER = {"depth_consistency_l1", "trajectory_error_deg", *CLAUSE_METRICS}
CLAUSE_LABELS = {"trajectory_error_single_deg": "single move", "trajectory_error_move1_deg": "two moves: 1st",
                 "trajectory_error_move2_deg": "two moves: 2nd"}
CONTACT_FRAMES = (0, 4, 8, 12, 16)


# ---------------------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------------------
def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean of the finite values and its percentile-bootstrap CI.

    Resamples the values with replacement `n_boot` times (seeded). NaNs are dropped first; no
    finite value gives (nan, nan, nan), a single one gives a zero-width interval.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return math.nan, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(x.mean()), float(lo), float(hi)


def per_prompt_means(records: list[dict], metric: str, n_prompts: int) -> np.ndarray:
    """(n_prompts,) mean over seeds of a metric per prompt index; NaN where no seed has a value."""
    sums, counts = np.zeros(n_prompts), np.zeros(n_prompts)
    for r in records:
        v = r.get(metric)
        if v is None or not np.isfinite(v):
            continue
        sums[r["prompt_index"]] += float(v)
        counts[r["prompt_index"]] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def paired_summary(base: np.ndarray, tuned: np.ndarray | None, n_boot: int = 2000, seed: int = 0) -> dict:
    """Means with CIs of both systems and the paired difference tuned − baseline with its CI.

    Both arrays are per-prompt means; the difference uses only prompts where both are finite.
    """
    b_mean, b_lo, b_hi = bootstrap_ci(base, n_boot, seed)
    out = {"baseline": b_mean, "baseline_ci": [b_lo, b_hi], "n_baseline": int(np.isfinite(base).sum())}
    if tuned is None:
        return out | {"tuned": None, "tuned_ci": None, "diff": None, "ci": None, "n_paired": 0}
    t_mean, t_lo, t_hi = bootstrap_ci(tuned, n_boot, seed)
    both = np.isfinite(base) & np.isfinite(tuned)
    d_mean, d_lo, d_hi = bootstrap_ci(tuned[both] - base[both], n_boot, seed)
    return out | {"tuned": t_mean, "tuned_ci": [t_lo, t_hi], "n_tuned": int(np.isfinite(tuned).sum()),
                  "diff": d_mean, "ci": [d_lo, d_hi], "n_paired": int(both.sum())}


# ---------------------------------------------------------------------------------------------
# Per-clip measurements
# ---------------------------------------------------------------------------------------------
def motion_magnitude(frames: np.ndarray) -> dict[str, float]:
    """How much a clip moves: mean |frame_{t+1} − frame_t| in grey levels (0–255) and the mean
    Farneback optical-flow magnitude in pixels per frame. Both are ~0 for a frozen clip."""
    import cv2

    f = frames.astype(np.float32)
    absdiff = float(np.abs(np.diff(f, axis=0)).mean()) if len(f) > 1 else 0.0
    grey = [cv2.cvtColor(x, cv2.COLOR_RGB2GRAY) for x in frames]
    flows = []
    for a, b in zip(grey[:-1], grey[1:]):
        flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 2, 9, 3, 5, 1.1, 0)
        flows.append(float(np.linalg.norm(flow, axis=-1).mean()))
    return {"motion_absdiff": absdiff, "motion_flow_px": float(np.mean(flows)) if flows else 0.0}


_MISSING_SCORERS: set[str] = set()


def load_scorer_or_none(name: str | None):
    """The CLIP scorer through the rewards' cache (one instance per process), or None if missing."""
    if not name or name == "none" or name in _MISSING_SCORERS:
        return None
    from studio.rewards import get_scorer

    try:
        return get_scorer(name)
    except (ImportError, OSError, RuntimeError, ValueError) as e:
        _MISSING_SCORERS.add(name)
        print(f"warning: CLIP scorer {name!r} unavailable ({type(e).__name__}: {e}); clip_score, s_meta, r_gen "
              "and the colour/shape judge are left out", file=sys.stderr)
        return None


def measure_clip(frames: np.ndarray, prompt: str, estimator: str, scorer_name: str | None,
                 depth: np.ndarray | None = None, K: np.ndarray | None = None, geometry: bool = True):
    """Every per-clip number: geometry metrics, reward components, CLIP score, motion.

    Returns (record, analysis); analysis is None without geometry or when the clip could not be
    reconstructed (then record["analysis_failed"] says why and the 3D numbers are missing).
    """
    from studio import rewards as R

    record: dict = dict(motion_magnitude(frames))
    scorer = load_scorer_or_none(scorer_name)
    clip_score = float(scorer.score(frames, prompt)) if scorer is not None else None
    record["clip_score"] = clip_score
    record["r_gen"] = clip_score  # R_gen is the CLIP text-frame alignment averaged over frames
    analysis = None
    if geometry:
        from studio.geometry import analyze

        kwargs = {"depth": depth, "K": K} if estimator == "ground-truth" else {}
        t0 = time.perf_counter()
        try:
            analysis = analyze(frames, prompt, estimator=estimator, clip_scorer=None, **kwargs)
        except ValueError as e:  # too broken to reconstruct: a bad clip, not a crash
            record["analysis_failed"] = str(e)
            record.update(s_recon=0.0, s_meta=0.0, s_traj=0.0)  # what the trainer's reward gives it
        record["analyze_s"] = time.perf_counter() - t0
        if analysis is not None:
            analysis.metrics["clip_score"] = clip_score
            for k, v in analysis.metrics.items():
                if isinstance(v, (int, float)) or v is None:
                    record[k] = None if v is None else float(v)
            ctx = {"analyses": [analysis], "scorer": scorer_name}
            record["s_recon"] = R.s_recon([prompt], [frames], **ctx)[0]
            record["s_traj"] = R.s_traj([prompt], [frames], **ctx)[0]
            record["s_meta"] = R.s_meta([prompt], [frames], **ctx)[0] if scorer is not None else None
            if scorer is not None:
                record["r_gen"] = R.r_gen([prompt], [frames], **ctx)[0]
            record["warnings"] = list(analysis.warnings)
            record.update(clause_records(analysis, prompt))
    return record, analysis


def clause_records(analysis, prompt: str) -> dict:
    """CLAUSE_METRICS of one clip: which of the clause's moves the estimated camera path follows."""
    from studio.geometry import focus_distance
    from studio.geometry.metrics import move_trajectory_errors

    errors = move_trajectory_errors(analysis.c2w, prompt, unit_length=focus_distance(analysis.depth))
    if not errors:
        return {}
    if len(errors) == 1:
        return {"trajectory_error_single_deg": errors[0]}
    return {f"trajectory_error_move{k + 1}_deg": e for k, e in enumerate(errors[:2])}


# ---------------------------------------------------------------------------------------------
# Systems, prompts and fingerprints
# ---------------------------------------------------------------------------------------------
def _hash_files(paths: list[Path], content_limit: int = 256 << 20) -> str:
    """Content hash; files above `content_limit` bytes (Wan checkpoints) enter by size and mtime."""
    h = hashlib.sha1()
    for p in sorted(paths):
        h.update(str(p.name).encode())
        st = p.stat()
        if st.st_size > content_limit:
            h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            continue
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def dir_fingerprint(path: Path | None, patterns=("*.safetensors", "*.json", "*.bin")) -> str | None:
    """Content hash of the weights and configs under a folder (None if it holds none)."""
    if path is None or not Path(path).exists():
        return None
    path = Path(path)
    files = [path] if path.is_file() else [p for pat in patterns for p in path.rglob(pat) if p.is_file()]
    return _hash_files(files) if files else None


def model_dir(model: str) -> Path | None:
    if model == "tinyworld":
        return ROOT / "assets" / "generator"
    p = Path(model).expanduser()
    return p if p.exists() else None


def resolve_lora_dir(path: str | Path) -> Path:
    """A LoRA file, a checkpoint folder, or a run folder (→ its latest checkpoint)."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"--tuned {path}: no such file or folder")
    if p.is_dir() and (p / "checkpoints").is_dir():
        ckpts = list_checkpoints(p)
        if not ckpts:
            raise FileNotFoundError(f"--tuned {path}: run folder without checkpoints")
        return ckpts[-1]
    return p


def run_info(lora: Path) -> dict:
    """What the LoRA's run recorded: train minutes (checkpoint state, else metrics.jsonl) and config."""
    folder = lora if lora.is_dir() else lora.parent
    info: dict = {"train_minutes": None, "config": None}
    best = folder / "best.json"  # checkpoints/best: the LoRA chosen on validation during the run
    if best.is_file():
        meta = json.loads(best.read_text(encoding="utf-8"))
        if meta.get("elapsed_seconds") is not None:
            info["train_minutes"] = float(meta["elapsed_seconds"]) / 60.0
        elif (folder.parent.parent / "metrics.jsonl").is_file():  # runs before best.json kept the time
            rows = [json.loads(x) for x in (folder.parent.parent / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
            seconds = [r["seconds"] for r in rows if r.get("seconds") is not None and r.get("epoch", 1e9) < meta["epoch"]]
            info["train_minutes"] = float(max(seconds)) / 60.0 if seconds else None
    if (folder / TRAINER_STATE).is_file():
        meta = read_trainer_state(folder)
        if meta.get("elapsed_seconds") is not None:
            info["train_minutes"] = float(meta["elapsed_seconds"]) / 60.0
        info["config"] = meta.get("config")
    for run in (folder, folder.parent, folder.parent.parent):
        if info["config"] is None and (run / "config.json").is_file():
            info["config"] = json.loads((run / "config.json").read_text(encoding="utf-8"))
        metrics = run / "metrics.jsonl"
        if info["train_minutes"] is None and metrics.is_file():
            seconds = [json.loads(x).get("seconds") for x in metrics.read_text(encoding="utf-8").splitlines() if x.strip()]
            seconds = [s for s in seconds if s is not None]
            if seconds:
                info["train_minutes"] = float(max(seconds)) / 60.0
    return info


def lora_label(lora: Path) -> str:
    parts = lora.resolve().parts
    if "checkpoints" in parts:
        i = parts.index("checkpoints")
        return f"{parts[i - 1]}@{parts[i + 1].replace('checkpoint-', '').lstrip('0') or '0'}"
    return lora.stem if lora.is_file() else lora.name


@dataclass
class System:
    """One generator to evaluate: a model, optionally a LoRA, sampled with or without camera init."""

    label: str
    model: str
    lora: str | None = None
    camera_init: bool = True
    train_minutes: float | None = None
    run_config: dict | None = None

    def fingerprint(self, settings: "Settings") -> str:
        lora = dir_fingerprint(Path(self.lora)) if self.lora else None
        d = model_dir(self.model)
        key = {"model": dir_fingerprint(d) or self.model, "lora": lora, "camera_init": self.camera_init,
               **settings.generation()}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Settings:
    """Generation and measurement settings shared by every system (None: the model's default)."""

    num_frames: int | None = None
    height: int | None = None
    width: int | None = None
    steps: int | None = None
    guidance: float | None = None
    estimator: str = "tinyworld"
    scorer: str | None = "tinyworld"

    def generation(self) -> dict:
        return {k: getattr(self, k) for k in ("num_frames", "height", "width", "steps", "guidance")}

    def measurement_fingerprint(self) -> str:
        weights = {
            "estimator": dir_fingerprint(ROOT / "assets" / "depth") if self.estimator == "tinyworld" else None,
            "scorer": dir_fingerprint(ROOT / "assets" / "clip") if self.scorer == "tinyworld" else None,
        }
        key = {"estimator": self.estimator, "scorer": self.scorer, "weights": weights, "version": CACHE_VERSION}
        return hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]


def load_rows(source: str, n: int | None = None) -> list[dict]:
    """Prompt rows {"prompt", optional "scene", "seed"}: 'tinyworld:SPLIT', a JSONL of such rows, or
    any prompt file training.train.load_prompts reads. The first n (deterministic)."""
    if source.startswith("tinyworld:"):
        from studio.tinyworld.corpus import load_split

        rows = load_split(source.split(":", 1)[1])
    elif source.endswith(".jsonl") and Path(source).is_file():
        rows = [json.loads(x) for x in Path(source).read_text(encoding="utf-8").splitlines() if x.strip()]
        rows = [r if isinstance(r, dict) else {"prompt": str(r)} for r in rows]
    else:
        rows = [{"prompt": p} for p in load_prompts(source)]
    if not rows:
        raise ValueError(f"prompt source {source!r} has no prompts")
    return rows[:n] if n else rows


def render_depth(row: dict, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth and K of the TinyWorld render of a prompt's scene, at the clip's size: what the
    "ground-truth" estimator uses on generated clips (plumbing and tests; it is not their geometry)."""
    from studio.tinyworld import Scene, render_clip

    f, h, w = frames.shape[:3]
    scene = Scene.from_dict(row["scene"]) if row.get("scene") else None
    rc = render_clip(row["prompt"], num_frames=f, height=h, width=w, seed=int(row.get("seed", 0)), scene=scene)
    return rc.depth, rc.K


# ---------------------------------------------------------------------------------------------
# Cache
# ---------------------------------------------------------------------------------------------
class EvalCache:
    """Clips (npz) and their measurements (json) on disk, one file per (system, prompt, seed).

    Layout: ROOT/<system fingerprint>/<prompt hash>-s<seed>.npz and …-s<seed>.<measurement
    fingerprint>.json, so a new LoRA, new generator weights, another estimator or scorer each get
    fresh entries while unchanged ones are reused.
    """

    def __init__(self, root: Path | None):
        self.root = Path(root) if root else None
        self.hits = self.misses = 0

    @staticmethod
    def _stem(prompt: str, seed: int) -> str:
        return f"{hashlib.sha1(prompt.encode()).hexdigest()[:16]}-s{seed}"

    def frames(self, system_key: str, prompt: str, seed: int, make) -> np.ndarray:
        if self.root is None:
            return make()
        path = self.root / system_key / f"{self._stem(prompt, seed)}.npz"
        if path.is_file():
            self.hits += 1
            with np.load(path) as z:
                return z["frames"]
        self.misses += 1
        frames = make()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, frames=frames, prompt=np.array(prompt))
        tmp.replace(path)
        return frames

    def record(self, system_key: str, measure_key: str, prompt: str, seed: int, make) -> dict:
        if self.root is None:
            return make()
        path = self.root / system_key / f"{self._stem(prompt, seed)}.{measure_key}.json"
        if path.is_file():
            self.hits += 1
            return json.loads(path.read_text(encoding="utf-8"))
        self.misses += 1
        record = make()
        atomic_write_text(path, json.dumps(record))
        return record


# ---------------------------------------------------------------------------------------------
# Generate and measure
# ---------------------------------------------------------------------------------------------
_PIPELINES: dict[tuple, object] = {}


def get_pipeline(system: System):
    key = (system.model, system.lora)
    if key not in _PIPELINES:
        from studio.pipelines import load_pipeline

        _PIPELINES[key] = load_pipeline(system.model, lora=system.lora, device="cpu")
    return _PIPELINES[key]


def generate_frames(system: System, prompt: str, seed: int, settings: Settings) -> np.ndarray:
    pipe = get_pipeline(system)
    clip = pipe.generate(prompt, seed=seed, camera_init=system.camera_init, **settings.generation())
    return np.asarray(clip.frames)


def evaluate_system(system: System, rows: list[dict], seeds: list[int], settings: Settings, cache: EvalCache,
                    geometry: bool = True, progress: str = "") -> tuple[list[dict], dict]:
    """Records (one per prompt × seed) and the frames by (prompt index, seed) of one system."""
    skey, mkey = system.fingerprint(settings), settings.measurement_fingerprint() + ("" if geometry else "-2d")
    records, frames_by = [], {}
    total, t0 = len(rows) * len(seeds), time.perf_counter()
    for i, row in enumerate(rows):
        prompt = row["prompt"]
        for seed in seeds:
            frames = cache.frames(skey, prompt, seed, lambda: generate_frames(system, prompt, seed, settings))
            frames_by[(i, seed)] = frames

            def make():
                depth, K = render_depth(row, frames) if settings.estimator == "ground-truth" else (None, None)
                return measure_clip(frames, prompt, settings.estimator, settings.scorer, depth, K, geometry)[0]

            rec = cache.record(skey, mkey, prompt, seed, make)
            records.append({**rec, "prompt_index": i, "seed": seed, "system": system.label})
            done = len(records)
            if progress and (done == total or done % max(1, total // 10) == 0):
                print(f"  {progress} {system.label}: {done}/{total} clips, {time.perf_counter() - t0:.0f} s", flush=True)
    return records, frames_by


def judge_attribute_records(frames_by: dict, rows: list[dict], seeds: list[int], scorer, system: str) -> list[dict]:
    """color_correct / shape_correct (0/1) per (single-object prompt, seed) by the CLIP zero-shot judge."""
    from studio.tinyworld.scene import COLORS, SHAPES
    from training.eval_generator import judge_attributes

    items = [(i, s) for i, r in enumerate(rows) if len((r.get("scene") or {}).get("objects", [])) == 1 for s in seeds]
    if not items or scorer is None:
        return []
    color_idx, shape_idx = judge_attributes(scorer, [frames_by[k] for k in items])
    colors, shapes = list(COLORS), list(SHAPES)
    out = []
    for (i, s), c, sh in zip(items, color_idx, shape_idx):
        obj = rows[i]["scene"]["objects"][0]
        out.append({"prompt_index": i, "seed": s, "system": system,
                    "color_correct": float(colors[c] == obj["color"]), "shape_correct": float(shapes[sh] == obj["shape"])})
    return out


# ---------------------------------------------------------------------------------------------
# Contact sheet
# ---------------------------------------------------------------------------------------------
def contact_sheet(path: Path, rows: list[dict], systems: list[System], frames: dict, seed: int,
                  n_prompts: int = 4, scale: int = 2) -> Path:
    """Per prompt: one row per system (baseline first) of frames 0, 4, 8, 12, 16, labelled."""
    from PIL import Image, ImageDraw

    label_w, caption_h, gap = 150, 14, 6
    some = next(iter(frames.values()))
    f_n, h, w = some.shape[:3]
    idx = [i for i in CONTACT_FRAMES if i < f_n] or list(range(f_n))
    tile_w, tile_h = w * scale, h * scale
    prompts = list(range(min(n_prompts, len(rows))))
    width = label_w + len(idx) * tile_w
    height = len(prompts) * (caption_h + len(systems) * tile_h + gap)
    sheet = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    y = 0
    for i in prompts:
        text = rows[i]["prompt"]
        draw.text((2, y + 1), text if len(text) < 110 else text[:107] + "...", fill=(0, 0, 0))
        y += caption_h
        for system in systems:
            clip = frames[(system.label, i, seed)]
            draw.text((2, y + tile_h // 2 - 5), system.label[:24], fill=(0, 0, 0))
            for j, k in enumerate(idx):
                tile = Image.fromarray(clip[k]).resize((tile_w, tile_h), Image.NEAREST)
                sheet.paste(tile, (label_w + j * tile_w, y))
            y += tile_h
        y += gap
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def _fmt(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}f}"


def _fmt_ci(mean, ci, digits: int = 3) -> str:
    if mean is None or ci is None or not math.isfinite(mean):
        return "–"
    return f"{_fmt(mean, digits)} [{_fmt(ci[0], digits)}, {_fmt(ci[1], digits)}]"


def summarise(records: dict[str, list[dict]], baseline: str, others: list[str], metrics, n_prompts: int,
              n_boot: int, seed: int) -> dict[str, dict[str, dict]]:
    """{system: {metric: paired_summary vs the baseline}} (the baseline's own entry: tuned None)."""
    out: dict[str, dict[str, dict]] = {}
    base = {m: per_prompt_means(records[baseline], m, n_prompts) for m in metrics}
    out[baseline] = {m: paired_summary(base[m], None, n_boot, seed) for m in metrics}
    for label in others:
        out[label] = {m: paired_summary(base[m], per_prompt_means(records[label], m, n_prompts), n_boot, seed)
                      for m in metrics}
    return out


def result_json(command: str, train_minutes, n_prompts: int, seeds: list[int], summary: dict[str, dict]) -> dict:
    """The agreed JSON shape: metrics → {baseline, tuned, diff, ci} (tuned − baseline)."""
    return {
        "command": command,
        "train_minutes": train_minutes,
        "n_prompts": n_prompts,
        "seeds": list(seeds),
        "metrics": {m: {"baseline": s["baseline"], "tuned": s["tuned"], "diff": s["diff"], "ci": s["ci"]}
                    for m, s in summary.items()},
    }


def _own(s: dict, is_baseline: bool) -> tuple:
    """(mean, ci) of the system a paired summary row belongs to."""
    return (s["baseline"], s["baseline_ci"]) if is_baseline else (s["tuned"], s["tuned_ci"])


def _change(s: dict) -> str:
    if s.get("diff") is None or not s["baseline"] or not math.isfinite(s["baseline"]):
        return "–"
    return f"{100.0 * s['diff'] / abs(s['baseline']):+.1f} %"


def _verdict(metric: str, s: dict) -> str:
    ci = s.get("ci")
    if not ci or not all(math.isfinite(c) for c in ci):
        return ""
    if ci[0] > 0 or ci[1] < 0:
        better = (ci[1] < 0) if metric in LOWER_IS_BETTER else (ci[0] > 0)
        return "better" if better else "worse"
    return "n.s."


def markdown_report(res: dict) -> str:
    base, main = res["baseline"], res["main"]
    lines = [f"# Evaluation: {base} vs {main}" if main else f"# Evaluation: {base} (no tuned system)", "",
             f"Command: `{res['command']}`", "",
             f"- Held-out prompts: {res['n_prompts']} from `{res['prompts']}`, seeds {res['seeds']} (same seeds, "
             "same initial noise for every system); generation settings "
             f"{json.dumps(res['settings']['generation'])}; estimator `{res['settings']['estimator']}`, "
             f"scorer `{res['settings']['scorer']}`.",
             f"- Train minutes of the tuned run: {_fmt(res['train_minutes'], 1)}.",
             "- Mean [95 % CI] by percentile bootstrap over prompts (seeds averaged within a prompt first, "
             f"{res['n_boot']} resamples, seed {res['boot_seed']}); Δ = tuned − baseline, paired per prompt.",
             "- ↓: lower is better. Verdict: the CI of Δ excludes 0 (better / worse) or not (n.s.)."]
    systems = res["systems"]
    base_init = next((s["camera_init"] for s in systems if s["label"] == base), True)
    lines += [("- The baseline samples with camera-aware initialization, so Δ is what RL fine-tuning alone adds."
               if base_init else
               "- The baseline samples as the base model is released (no camera-aware initialization); the tuned "
               "system is World-R1 (camera-aware initialization + the LoRA), as in the paper's comparison."), ""]
    sm = res["summary"]
    if main:
        lines += [f"## Held-out test prompts: {main} vs {base}", "",
                  "| metric | baseline | tuned | Δ tuned − baseline | change | verdict | n |",
                  "|---|---|---|---|---|---|---|"]
        for m in TABLE_METRICS:
            s = sm[main][m]
            arrow = " ↓" if m in LOWER_IS_BETTER else ""
            lines.append(f"| {m}{arrow} | {_fmt_ci(s['baseline'], s['baseline_ci'])} | {_fmt_ci(s['tuned'], s['tuned_ci'])} "
                         f"| {_fmt_ci(s['diff'], s['ci'])} | {_change(s)} | {_verdict(m, s)} | {s['n_paired']} |")
    else:
        lines += [f"## Held-out test prompts: {base}", "", "| metric | baseline | n |", "|---|---|---|"]
        for m in TABLE_METRICS:
            s = sm[base][m]
            arrow = " ↓" if m in LOWER_IS_BETTER else ""
            lines.append(f"| {m}{arrow} | {_fmt_ci(s['baseline'], s['baseline_ci'])} | {s['n_baseline']} |")
    lines.append("")

    attr = res.get("attributes") or {}
    if attr:
        lines += ["## Colour / shape correctness (CLIP zero-shot, single-object held-out prompts)", "",
                  "Collapse watch: fine-tuning must not lose these. " + (attr.get("note") or ""), "",
                  "| system | colour right | shape right | Δ colour | Δ shape | n clips |", "|---|---|---|---|---|---|"]
        for label, s in attr["summary"].items():
            c, sh = s["color_correct"], s["shape_correct"]
            lines.append(f"| {label} | {_fmt_ci(*_own(c, label == base), 2)} | {_fmt_ci(*_own(sh, label == base), 2)} "
                         f"| {_fmt_ci(c['diff'], c['ci'], 2)} | {_fmt_ci(sh['diff'], sh['ci'], 2)} | {attr['n_clips'][label]} |")
        lines.append("")

    clauses = (res.get("clauses") or {}).get("summary") or {}
    if clauses:
        lines += ["## Camera adherence move by move", "",
                  "Trajectory error (°, ↓) of single-move clauses, and of each move of a two-move clause "
                  "measured on its own half of the clip (its segment re-expressed to its own first pose). "
                  "Mean [95 % CI] per system; Δ vs the baseline, paired per prompt.", "",
                  "| system | " + " | ".join(CLAUSE_LABELS[m] for m in CLAUSE_METRICS) + " |",
                  "|---|" + "---|" * len(CLAUSE_METRICS)]
        for label, per in clauses.items():
            cells = []
            for m in CLAUSE_METRICS:
                s = per[m]
                own = _fmt_ci(*_own(s, label == base), 1)
                cells.append(own + ("" if label == base else f"; Δ {_fmt_ci(s['diff'], s['ci'], 1)}"))
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        n_single, n_two = (clauses[base][m]["n_baseline"] for m in CLAUSE_METRICS[:2])
        lines += ["", f"n prompts: {n_single} single-move, {n_two} two-move.", ""]

    dyn = res.get("dynamic") or {}
    if dyn:
        lines += [f"## Dynamic split ({dyn['n_prompts']} prompts from `{dyn['prompts']}`, R_3D off in training)", "",
                  "Motion must not collapse: motion_absdiff = mean |frame_{t+1} − frame_t| (grey levels), "
                  "motion_flow_px = mean Farneback flow magnitude (px/frame).", "",
                  "| system | metric | value | Δ vs baseline | change |", "|---|---|---|---|---|"]
        for label, per in dyn["summary"].items():
            for m in DYNAMIC_METRICS:
                s = per[m]
                lines.append(f"| {label} | {m} | {_fmt_ci(*_own(s, label == base))} | {_fmt_ci(s['diff'], s['ci'])} | {_change(s)} |")
        lines.append("")

    extra = [s for s in systems if s["label"] not in (base, main)]
    if extra:
        lines += ["## Ablations (each vs the baseline above, same prompts and seeds)", "",
                  "| system | camera init | run config | " + " | ".join(f"Δ {m}" for m in TABLE_METRICS) + " |",
                  "|---|---|---|" + "---|" * len(TABLE_METRICS)]
        for s in extra:
            cfg = s.get("run_config") or {}
            run = ", ".join(f"{k}={cfg[k]}" for k in ("camera_init", "dynamic_steps", "dynamic_prompts") if k in cfg) or "–"
            cells = [_fmt_ci(sm[s["label"]][m]["diff"], sm[s["label"]][m]["ci"]) for m in TABLE_METRICS]
            lines.append(f"| {s['label']} | {'on' if s['camera_init'] else 'off'} | {run} | " + " | ".join(cells) + " |")
        lines.append("")

    lines += ["## Notes", ""]
    for label, n in res["failed"].items():
        if n:
            lines.append(f"- {label}: {n} clips could not be reconstructed (3D metrics missing for them; s_* count as 0).")
    lines.append(f"- Systems: " + "; ".join(f"{s['label']} = {s['model']}" + (f" + LoRA {s['lora']}" if s["lora"] else "")
                                           + ("" if s["camera_init"] else " (no camera init)") for s in systems) + ".")
    lines.append(f"- Cache: {res['cache']['hits']} hits, {res['cache']['misses']} misses in `{res['cache']['root']}`; "
                 f"wall time {res['seconds']:.0f} s.")
    if res.get("contact_sheet"):
        lines += ["", f"![contact sheet: baseline row over tuned row]({Path(res['contact_sheet']).name})"]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------
def build_systems(args) -> list[System]:
    """Baseline first, then the tuned LoRAs (camera init on), then the ablation rows.

    --vanilla-baseline: the reference is the base model as its users sample it (no camera init),
    World-R1's own comparison (base model vs camera init + RL); "baseline + camera init" then shows
    what the initialization alone does. Without it the baseline has camera init too, isolating RL.
    """
    vanilla = args.vanilla_baseline
    systems = [System("baseline", args.baseline, None, not vanilla)]
    seen = {"baseline"}
    for path in args.tuned or []:
        lora = resolve_lora_dir(path)
        info = run_info(lora)
        label = lora_label(lora)
        while label in seen:
            label += "'"
        seen.add(label)
        minutes = info["train_minutes"] if info["train_minutes"] is not None else args.train_minutes
        systems.append(System(label, args.baseline, str(lora), True, minutes, info["config"]))
    tuned = systems[1] if len(systems) > 1 else None
    if vanilla:
        systems.append(System("baseline + camera init", args.baseline, None, True))
    elif args.no_camera_init:
        systems.append(System("baseline, no camera init", args.baseline, None, False))
    if args.no_camera_init and tuned is not None:
        systems.append(System(f"{tuned.label}, no camera init", tuned.model, tuned.lora, False, tuned.train_minutes,
                              tuned.run_config))
    return systems


def check_backends(settings: Settings) -> None:
    """Fail before generating anything when the estimator cannot load."""
    if settings.estimator != "ground-truth":
        from studio.geometry import get_estimator

        try:
            get_estimator(settings.estimator)
        except (RuntimeError, ValueError, OSError) as e:
            raise SystemExit(f"error: depth estimator {settings.estimator!r}: {e}") from None


def run(args, argv: list[str]) -> dict:
    import torch

    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    try:
        import cv2

        cv2.setNumThreads(args.threads)
    except ImportError:
        pass
    settings = Settings(args.num_frames, args.height, args.width, args.steps, args.guidance, args.estimator,
                        None if args.scorer == "none" else args.scorer)
    check_backends(settings)
    rows = load_rows(args.prompts, args.n_prompts)
    systems = build_systems(args)
    cache = EvalCache(args.cache)
    scorer = load_scorer_or_none(settings.scorer)
    base, main = systems[0].label, (systems[1].label if len(systems) > 1 and systems[1].lora else None)
    others = [s.label for s in systems[1:]]

    records, attr_records, frames = {}, {}, {}
    for s in systems:
        recs, fr = evaluate_system(s, rows, args.seeds, settings, cache, progress="test")
        records[s.label] = recs
        attr_records[s.label] = judge_attribute_records(fr, rows, args.seeds, scorer, s.label)
        frames.update({(s.label, i, seed): f for (i, seed), f in fr.items()})
    summary = summarise(records, base, others, TABLE_METRICS, len(rows), args.n_boot, args.boot_seed)

    attributes = None
    if any(attr_records.values()):
        attributes = {"summary": summarise(attr_records, base, others, ATTRIBUTE_METRICS, len(rows), args.n_boot, args.boot_seed),
                      "n_clips": {k: len(v) for k, v in attr_records.items()},
                      "note": "Judge: top-1 of 'a photo of a {colour} object' / 'a photo of a {shape}' over frames 0, 4, 8, 12, 16."}

    clauses = {"summary": summarise(records, base, others, CLAUSE_METRICS, len(rows), args.n_boot, args.boot_seed)}

    dynamic = None
    if args.n_dynamic > 0 and args.dynamic_prompts:
        drows = load_rows(args.dynamic_prompts, args.n_dynamic)
        drecords = {s.label: evaluate_system(s, drows, args.seeds, settings, cache, geometry=False, progress="dynamic")[0]
                    for s in systems}
        dynamic = {"prompts": args.dynamic_prompts, "n_prompts": len(drows),
                   "summary": summarise(drecords, base, others, DYNAMIC_METRICS, len(drows), args.n_boot, args.boot_seed),
                   "records": drecords}

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet = None
    if args.contact_prompts > 0:
        shown = [s for s in systems if s.camera_init or s.label == base][:4]
        sheet = contact_sheet(out.with_suffix(".png"), rows, shown, frames, args.seeds[0], args.contact_prompts)

    command = "python -m training.evaluate " + " ".join(shlex.quote(a) for a in argv)
    main_sys = next((s for s in systems if s.label == main), None)
    train_minutes = main_sys.train_minutes if main_sys else args.train_minutes
    res = {
        "command": command, "train_minutes": train_minutes, "n_prompts": len(rows), "seeds": list(args.seeds),
        "prompts": args.prompts, "baseline": base, "main": main, "settings": {"generation": settings.generation(),
        "estimator": settings.estimator, "scorer": settings.scorer}, "n_boot": args.n_boot, "boot_seed": args.boot_seed,
        "systems": [asdict(s) for s in systems], "summary": summary, "attributes": attributes, "clauses": clauses,
        "dynamic": {k: v for k, v in dynamic.items() if k != "records"} if dynamic else None,
        "failed": {k: sum(1 for r in v if r.get("analysis_failed")) for k, v in records.items()},
        "cache": {"root": str(args.cache), "hits": cache.hits, "misses": cache.misses},
        "contact_sheet": str(sheet) if sheet else None,
    }
    res["seconds"] = time.perf_counter() - t_start

    def metrics_for(label):
        table = {m: summary[label][m] for m in TABLE_METRICS}
        if attributes:
            table.update({f"attr/{m}": attributes["summary"][label][m] for m in ATTRIBUTE_METRICS})
        table.update({f"clause/{m}": clauses["summary"][label][m] for m in CLAUSE_METRICS})
        if dynamic:
            table.update({f"dynamic/{m}": dynamic["summary"][label][m] for m in DYNAMIC_METRICS})
        return table

    primary = main or base
    atomic_write_text(out.with_suffix(".json"), json.dumps(
        result_json(command, train_minutes, len(rows), args.seeds, metrics_for(primary)), indent=1) + "\n")
    for s in systems[1:]:
        if s.label == main:
            continue
        safe = "".join(ch if ch.isalnum() or ch in "-_@" else "_" for ch in s.label)
        atomic_write_text(out.parent / f"{out.name}.{safe}.json", json.dumps(
            result_json(command, s.train_minutes, len(rows), args.seeds, metrics_for(s.label)), indent=1) + "\n")
    details = dict(res, records=records, attribute_records=attr_records,
                   dynamic_records=dynamic["records"] if dynamic else None)
    atomic_write_text(out.parent / f"{out.name}.details.json", json.dumps(details, indent=1, default=_json_default) + "\n")
    atomic_write_text(out.with_suffix(".md"), markdown_report(res))
    return res


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def parse_args(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description="Baseline vs tuned generators on held-out prompts, with bootstrap CIs.")
    ap.add_argument("--baseline", default="tinyworld", help="base model: 'tinyworld', a preset, a diffusers folder or hub id")
    ap.add_argument("--tuned", action="append", default=[], metavar="LORA",
                    help="LoRA file, checkpoint folder or run folder (latest checkpoint); repeat for ablation rows")
    ap.add_argument("--prompts", default="tinyworld:test", help="held-out prompts: tinyworld:SPLIT, a .jsonl of rows or a prompt file")
    ap.add_argument("--n-prompts", type=int, default=32)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--dynamic-prompts", default="tinyworld:dynamic", help="fluid-phase prompts reported apart ('' to skip)")
    ap.add_argument("--n-dynamic", type=int, default=16, help="dynamic prompts (0 = skip the dynamic split)")
    ap.add_argument("--no-camera-init", action="store_true",
                    help="ablation rows: the baseline and the first tuned LoRA sampled without camera-aware initialization")
    ap.add_argument("--vanilla-baseline", action="store_true",
                    help="the baseline samples without camera init (the base model as released; World-R1's comparison) "
                         "and 'baseline + camera init' becomes an ablation row")
    ap.add_argument("--train-minutes", type=float, default=None, help="used when the LoRA's run folder does not record it")
    ap.add_argument("--out", default="docs/results", help="output prefix: OUT.md, OUT.json, OUT.details.json, OUT.png")
    ap.add_argument("--cache", default=str(ROOT / "runs" / "eval-cache"), help="clip/measurement cache folder ('' = none)")
    ap.add_argument("--estimator", default="tinyworld", help="studio.geometry depth estimator ('ground-truth': the prompt's render depth, tests only)")
    ap.add_argument("--scorer", default="tinyworld", help="studio.scoring scorer name ('none' to skip CLIP numbers)")
    ap.add_argument("--num-frames", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--guidance", type=float, default=None)
    ap.add_argument("--n-boot", type=int, default=2000)
    ap.add_argument("--boot-seed", type=int, default=0)
    ap.add_argument("--contact-prompts", type=int, default=4, help="prompts on the contact sheet (0 = none)")
    ap.add_argument("--threads", type=int, default=2, help="torch / OpenCV threads")
    args = ap.parse_args(argv)
    if args.n_prompts < 1:
        ap.error("--n-prompts must be ≥ 1")
    if args.n_boot < 100:
        ap.error("--n-boot must be ≥ 100")
    args.cache = args.cache or None
    # Every input checked before the baseline's minutes of generation: a corrupt or missing LoRA, an
    # unknown model, estimator or scorer fail here with the flag's name.
    from studio.geometry import ESTIMATORS
    from studio.pipelines import resolve_lora, resolve_model

    if args.estimator not in ESTIMATORS:
        ap.error(f"--estimator {args.estimator!r}: expected one of {', '.join(sorted(ESTIMATORS))}")
    try:
        resolve_model(args.baseline)
        for path in args.tuned:
            resolve_lora(resolve_lora_dir(path))
    except (ValueError, FileNotFoundError) as e:
        ap.error(str(e))
    return args


def main(argv: list[str] | None = None) -> int:
    from training.run_setup import report_main

    return report_main(parse_args, run, markdown_report, argv)


if __name__ == "__main__":
    sys.exit(main())
