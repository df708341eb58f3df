"""Handlers behind the Training tab and the /train_* endpoints: plain data in, plain data out.

Runs go through `studio.app.jobs.JobManager` (a background process per run, the same CLI as
`python -m training.train`); the tuned slot remembers which LoRA the Generate tab compares against.
`tuned_lora()` reads it from disk on every call, and the Generate handler calls it per request
(studio.app.catalog's 'tuned'), so a checkpoint loaded here applies at the next click.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import asdict
from pathlib import Path

from studio.app.jobs import JobManager
from studio.util import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parents[2]
# The default tuned slot: the LoRA that keeps colour (0.91 vs 0.76 for the rigid/fluid one); docs/results.md
SHIPPED_LORA = REPO_ROOT / "assets" / "lora" / "world-r1-tinyworld-no-schedule" / "pytorch_lora_weights.safetensors"
# The knobs the tab exposes, by their TrainConfig names (one name everywhere: CLI, UI, run dir).
KNOBS = ("epochs", "max_minutes", "group_size", "lr", "kl_beta", "w_recon", "w_meta", "w_traj", "w_gen",
         "main_steps", "dynamic_steps", "camera_init", "seed")
# Under reward_norm=group the logged total is a sum of per-group z-scores, 0 on average by
# construction; the weighted sum of the raw component means is the reward that moves.
RAW_REWARD = "reward/weighted_raw/mean"
CURVES = {
    "rewards": [RAW_REWARD, "reward/s_recon/mean", "reward/s_meta/mean", "reward/s_traj/mean", "reward/r_gen/mean"],
    "policy": ["kl", "approx_kl", "clip_frac", "zero_std_ratio"],
}
# Seconds per epoch measured by `python -m benchmarks.bench_train` on the tinyworld-cpu preset
# (acceptance run, rigid epochs, 2-core EPYC): the estimate's reference until a run has its own.
BENCH_SECONDS_PER_EPOCH = {"tinyworld": (30.5, "tinyworld-cpu")}
# A new key=value inside a line: "epochs=2, lr=1e-4" is two overrides, "lora_targets=to_q,to_k" one.
_NEXT_OVERRIDE = re.compile(r"[\s,;]+(?=[A-Za-z_][\w.-]*=)")


def parse_overrides(text: str) -> dict[str, str]:
    """'key=value' overrides from a text box: one per line or several on a line; a value keeps its
    commas (lora_targets=to_q,to_k) and may be empty (dynamic_prompts= turns the fluid phase off)."""
    out: dict[str, str] = {}
    for line in (text or "").splitlines():
        for item in _NEXT_OVERRIDE.split(line.strip()):
            item = item.strip()
            if not item:
                continue
            if "=" not in item:
                raise ValueError(f"override {item!r} is not key=value (one per line, e.g. lr=1e-4)")
            k, v = item.split("=", 1)
            out[k.strip()] = v.strip()
    return out


class TrainingService:
    def __init__(self, data_dir: Path | str, max_running: int = 1):
        self.data_dir = Path(data_dir)
        self.jobs = JobManager(self.data_dir / "runs", max_running=max_running)
        self._slot_file = self.data_dir / "tuned_slot.json"

    # ------------------------------------------------------------ config
    @staticmethod
    def presets() -> list[str]:
        from training.config import PRESETS

        return list(PRESETS)

    @staticmethod
    def resolve(preset: str, knobs: dict | None = None, extra: str = ""):
        """Preset + knobs + free-form 'key=value' lines -> (config, overrides, batch verdict). Raises ValueError."""
        from training.config import ConfigError, apply_overrides, get_preset, plan_batches, validate

        overrides = {k: v for k, v in (knobs or {}).items() if v is not None and v != ""}  # an empty box = the preset's value
        overrides.update(parse_overrides(extra))
        try:
            cfg = apply_overrides(get_preset(preset), [f"{k}={_fmt(v)}" for k, v in overrides.items()])
            validate(cfg)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return cfg, {k: _fmt(v) for k, v in overrides.items()}, plan_batches(cfg)

    @staticmethod
    def check_inputs(cfg) -> None:
        """What a run reads before it trains, checked before it is queued rather than failing in the
        background: every prompt source selects prompts and the generator is on disk."""
        from training.config import ConfigError
        from training.train import load_prompts

        sources = [("train_prompts", cfg.train_prompts)]
        if cfg.dynamic_prompts and (cfg.dynamic_steps > 0 or cfg.dynamic_mix > 0):
            sources.append(("dynamic_prompts", cfg.dynamic_prompts))
        if cfg.num_eval_clips > 0:
            sources.append(("eval_prompts", cfg.eval_prompts))
        for key, source in sources:
            try:
                if not load_prompts(source):
                    raise ConfigError(f"prompt source {source!r} holds no prompts")
            except (ConfigError, OSError, ValueError) as e:
                raise ValueError(f"{key}: {e}") from None
        from studio.pipelines import resolve_model

        try:
            resolve_model(cfg.pipeline)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"pipeline: {e}") from None

    def verdict(self, preset: str, knobs: dict | None = None, extra: str = "") -> str:
        try:
            return self.resolve(preset, knobs, extra)[2].verdict
        except ValueError as e:
            return f"NOT OK: {e}"

    def estimate(self, preset: str, knobs: dict | None = None, extra: str = "") -> str:
        """How long the run would take: seconds per epoch from the newest run of the same generator
        (else the bench_train figure), scaled by clips × pixels × model passes, × epochs, capped by max_minutes."""
        try:
            cfg = self.resolve(preset, knobs, extra)[0]
        except ValueError as e:
            return f"no estimate: {e}"
        reference = self._reference_epoch(cfg.pipeline)
        if reference is None:
            return (f"no estimate for {cfg.pipeline!r} yet: no bench figure and no earlier run of it "
                    "(the first epochs of a run will tell; `python -m benchmarks.bench_train` measures one)")
        seconds, ref_cfg, source = reference
        per_epoch = seconds * _work(cfg) / _work(ref_cfg)
        full = per_epoch * cfg.epochs
        text = f"≈ {_duration(per_epoch)} per epoch ({source}); {cfg.epochs:,} epochs ≈ {_duration(full)}"
        if cfg.max_minutes > 0 and full > cfg.max_minutes * 60:
            # The trainer stops before an epoch that would pass the budget (training.train).
            epochs = max(1, int(cfg.max_minutes * 60 // per_epoch) - 1)
            text += (f"; the {cfg.max_minutes:g}-minute budget stops it after ≈ {epochs:,} epochs "
                     f"(≈ {epochs * cfg.steps_per_epoch:,} optimizer steps)")
        elif cfg.max_minutes > 0:
            text += f", within the {cfg.max_minutes:g}-minute budget"
        return text

    def _reference_epoch(self, pipeline: str):
        """(seconds per epoch, its config, where it comes from) of the newest run of this generator
        that logged an epoch, else the bench figure; None without either."""
        from training.config import from_dict, get_preset

        for s in reversed(self.jobs.list()):
            rows = [r for r in self.jobs.metrics(s.name) if not r.get("eval") and r.get("seconds")]
            try:
                cfg = from_dict(json.loads((self.jobs.run_dir(s.name) / "config.json").read_text()))
            except (OSError, ValueError, TypeError):
                continue
            if rows and cfg.pipeline == pipeline:
                return rows[-1]["seconds"] / (rows[-1]["epoch"] + 1), cfg, f"measured on run {s.name}"
        if pipeline in BENCH_SECONDS_PER_EPOCH:
            seconds, preset = BENCH_SECONDS_PER_EPOCH[pipeline]
            return seconds, get_preset(preset), f"bench_train figure for {preset}"
        return None

    # ------------------------------------------------------------ runs
    def start(self, name: str, preset: str, knobs: dict | None = None, extra: str = "") -> dict:
        cfg, overrides, plan = self.resolve(preset, knobs, extra)
        if not plan.ok:
            raise ValueError(plan.verdict)
        self.check_inputs(cfg)
        state = self.jobs.submit(name, preset, overrides)
        return asdict(state)

    def runs(self) -> list[dict]:
        self.jobs.poll()
        rows = []
        states = self.jobs.list()
        queued = [s.name for s in states if s.status == "queued"]
        for s in reversed(states):
            last = [r for r in self.jobs.metrics(s.name) if not r.get("eval")][-1:]
            weights = self._weights(s.name)
            rows.append({"name": s.name, "status": s.status, "preset": s.preset,
                         "queue": queued.index(s.name) + 1 if s.name in queued else None,
                         "step": last[0].get("step") if last else None,
                         "reward": weighted_raw_reward(last[0], weights) if last else None,
                         "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(s.started)) if s.started else "",
                         "checkpoints": len(self.jobs.checkpoints(s.name))})
        return rows

    def status(self, name: str, log_lines: int = 30) -> dict:
        self.jobs.poll()
        s = self.jobs.get(name)
        run_dir = self.jobs.run_dir(name)
        samples = sorted(run_dir.glob("samples/**/*.mp4"), key=lambda p: p.stat().st_mtime)
        weights = self._weights(name)
        metrics = [r if r.get("eval") else {**r, RAW_REWARD: weighted_raw_reward(r, weights)} for r in self.jobs.metrics(name)]
        return {"state": asdict(s), "queue": self.jobs.queue_position(name), "metrics": metrics,
                "log": self.jobs.log_tail(name, log_lines), "error": self.failure(name),
                "checkpoints": [str(p) for p in self.jobs.checkpoints(name)], "samples": [str(p) for p in samples[-4:]]}

    def _weights(self, name: str) -> dict:
        try:
            cfg = json.loads((self.jobs.run_dir(name) / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return {k: cfg.get(k) for k in ("w_recon", "w_meta", "w_traj", "w_3d", "w_gen")}

    def failure(self, name: str) -> str | None:
        """Why a failed or interrupted run stopped: the trainer's last 'error:' or exception line."""
        s = self.jobs.get(name)
        if s.status not in ("failed", "interrupted"):
            return None
        lines = [ln.strip() for ln in self.jobs.log_tail(name, 200).splitlines() if ln.strip()]
        reason = next((ln for ln in reversed(lines) if ln.startswith("error:") or re.match(r"^\w+(Error|Exception)\b", ln)), None)
        if s.status == "interrupted":
            return reason or "its process ended without an exit code (the machine or the app was stopped)"
        return reason or (lines[-1] if lines else f"exit code {s.returncode}")

    def notices(self, seen: dict[str, str] | None, rows: list[dict]) -> tuple[list[str], dict[str, str]]:
        """Messages for runs that failed or were interrupted since the statuses in `seen` (name ->
        status, from the previous call; None on a fresh page, which reports nothing old), and the
        statuses to pass next time."""
        now = {r["name"]: r["status"] for r in rows}
        messages = []
        if seen is not None:
            for name, status in now.items():
                if status in ("failed", "interrupted") and seen.get(name) != status:
                    messages.append(f"Run {name} {status}: {self.failure(name)}")
        return messages, now

    def cancel(self, name: str) -> dict:
        """First call: stop at the next safe point with a checkpoint. A call while the run is already
        stopping forces it (stops at once, keeping the last checkpoint). The state has a 'message'."""
        s = self.jobs.get(name)
        force = s.status == "cancelling"
        state = asdict(self.jobs.cancel(name, force=force))
        if s.status == "queued":
            state["message"] = f"Run {name} was queued; it is dropped from the queue."
        elif force:
            state["message"] = (f"Forcing {name} to stop now: the epoch in progress is not saved; the run keeps its "
                                "last checkpoint (a checkpoint being written is finished first).")
        else:
            state["message"] = (f"Stopping {name}: it saves a checkpoint at its next safe point (between rollouts, or "
                                "once the update in progress is done), which can take up to an epoch's update. "
                                "Cancel again to force it.")
        return state

    def resume(self, name: str, extra: str = "") -> dict:
        """Queue a stopped run again from its latest checkpoint; a run stopped before it saved one
        starts over. `extra`: 'key=value' lines changed for the rest of the run (e.g. max_minutes=120)."""
        s = self.jobs.get(name)
        overrides = parse_overrides(extra)
        if overrides:
            self.resolve(s.preset, {**s.overrides, **overrides})  # refuse bad values before queueing
        has_checkpoint = bool(self.jobs.checkpoints(name))
        state = asdict(self.jobs.resume(name, overrides, from_checkpoint=has_checkpoint))
        state["message"] = (f"Run {name} continues from its latest checkpoint." if has_checkpoint else
                            f"Run {name} has no checkpoint yet: it starts over from epoch 0.")
        return state

    def delete(self, name: str) -> str:
        """Delete a stopped run's folder; the tuned slot forgets it if it pointed there. Returns a message."""
        run_dir = self.jobs.run_dir(name)
        slot = self._slot()
        self.jobs.delete(name)
        if slot and Path(slot).resolve().is_relative_to(run_dir):
            self.reset_tuned()
            return f"Deleted run {name}; the tuned slot held one of its checkpoints and is back to {self.tuned_lora() or 'empty'}."
        return f"Deleted run {name}."

    # ------------------------------------------------------------ tuned slot
    def _slot(self) -> str | None:
        if self._slot_file.exists():
            try:
                return json.loads(self._slot_file.read_text()).get("lora")
            except (ValueError, AttributeError):
                return None
        return None

    def tuned_lora(self) -> str | None:
        """The LoRA the studio compares against: the one chosen last, else the shipped World-R1 LoRA.
        Read from disk on every call, so a checkpoint loaded a moment ago applies to the next request."""
        path = self._slot()
        if path and Path(path).is_file():
            return path
        return str(SHIPPED_LORA) if SHIPPED_LORA.is_file() else None

    def checkpoint_choices(self, name: str) -> list[tuple[str, str]]:
        """(label, path) of a run's LoRA checkpoints for a picker: the validation-chosen best first
        (keep_best), then the rest newest first."""
        ckpts = self.jobs.checkpoints(name)
        best = [p for p in ckpts if p.parent.name == "best"]
        rest = [p for p in reversed(ckpts) if p.parent.name != "best"]
        out = []
        for p in best:
            try:
                meta = json.loads((p.parent / "best.json").read_text())
                out.append((f"best (epoch {meta.get('epoch')}, score {float(meta.get('score')):.3f})", str(p)))
            except (OSError, ValueError, TypeError):
                out.append(("best", str(p)))
        out += [(p.parent.name, str(p)) for p in rest]
        return out

    def use_checkpoint(self, name: str, checkpoint: str | None = None) -> str:
        """Put a run's checkpoint in the tuned slot (default: the best one on validation when the run
        kept one, else its newest)."""
        ckpts = self.jobs.checkpoints(name)
        if not ckpts:
            raise ValueError(f"run {name!r} has no LoRA checkpoint yet")
        path = Path(checkpoint) if checkpoint else Path(self.checkpoint_choices(name)[0][1])
        if path.resolve() not in [c.resolve() for c in ckpts]:
            raise ValueError(f"{checkpoint} is not a checkpoint of run {name!r}")
        atomic_write_json(self._slot_file, {"lora": str(path), "run": name, "set_at": time.time()})
        return str(path)

    def use_lora(self, path: str) -> str:
        """Put any diffusers LoRA file (or a directory holding one) in the tuned slot."""
        from studio.pipelines import resolve_lora

        resolved = resolve_lora(path)
        atomic_write_json(self._slot_file, {"lora": str(resolved), "run": None, "set_at": time.time()})
        return str(resolved)

    def reset_tuned(self) -> str | None:
        self._slot_file.unlink(missing_ok=True)
        return self.tuned_lora()


def weighted_raw_reward(record: dict, weights: dict) -> float | None:
    """w_3d·(w_recon·S_recon + w_meta·S_meta + w_traj·S_traj)·frac_3d + w_gen·R_gen from a metrics row's
    raw component means: the mean total a run would log with reward_norm=none. The 3D means are over
    the items with R_3D on (a frac_3d share of them), so they count with that share."""
    def w(key: str) -> float:
        return 1.0 if weights.get(key) is None else float(weights[key])

    frac_3d = record.get("frac_3d", 1.0)
    terms = {"s_recon": w("w_3d") * w("w_recon") * frac_3d, "s_meta": w("w_3d") * w("w_meta") * frac_3d,
             "s_traj": w("w_3d") * w("w_traj") * frac_3d, "r_gen": w("w_gen")}
    values = {n: record.get(f"reward/{n}/mean") for n in terms}
    present = {n: v for n, v in values.items() if v is not None and math.isfinite(v)}
    return sum(terms[n] * v for n, v in present.items()) if present else None


def _work(cfg) -> float:
    """Relative cost of one epoch: clips × pixels × model passes (rollout steps, plus forward,
    backward and the reference's forward for each trained step)."""
    samples = cfg.per_device_batch_size * cfg.num_batches_per_epoch
    return samples * cfg.num_frames * cfg.height * cfg.width * (cfg.num_steps + 4 * cfg.trained_step_count())


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return str(int(v))
    return str(v)
