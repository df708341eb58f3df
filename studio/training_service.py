"""Handlers behind the Training tab and the /train_* endpoints: plain data in, plain data out.

Runs go through `studio.jobs.JobManager` (a background process per run, the same CLI as
`python -m training.train`); the tuned slot remembers which LoRA the Generate tab compares against.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from studio.jobs import JobManager
from studio.util import atomic_write_json

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIPPED_LORA = REPO_ROOT / "assets" / "lora" / "world-r1-tinyworld" / "pytorch_lora_weights.safetensors"
# The knobs the tab exposes, by their TrainConfig names (one name everywhere: CLI, UI, run dir).
KNOBS = ("epochs", "max_minutes", "group_size", "lr", "kl_beta", "w_recon", "w_meta", "w_traj", "w_gen",
         "main_steps", "dynamic_steps", "camera_init", "seed")
CURVES = {
    "rewards": ["reward/total/mean", "reward/s_recon/mean", "reward/s_meta/mean", "reward/s_traj/mean", "reward/r_gen/mean"],
    "policy": ["kl", "approx_kl", "clip_frac", "zero_std_ratio"],
}


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

        overrides = {k: v for k, v in (knobs or {}).items() if v is not None and v != ""}
        for line in (extra or "").replace(",", "\n").splitlines():
            line = line.strip()
            if not line:
                continue
            if "=" not in line:
                raise ValueError(f"override {line!r} is not key=value")
            k, v = line.split("=", 1)
            overrides[k.strip()] = v.strip()
        try:
            cfg = apply_overrides(get_preset(preset), [f"{k}={_fmt(v)}" for k, v in overrides.items()])
            validate(cfg)
        except ConfigError as e:
            raise ValueError(str(e)) from None
        return cfg, {k: _fmt(v) for k, v in overrides.items()}, plan_batches(cfg)

    def verdict(self, preset: str, knobs: dict | None = None, extra: str = "") -> str:
        try:
            return self.resolve(preset, knobs, extra)[2].verdict
        except ValueError as e:
            return f"NOT OK: {e}"

    # ------------------------------------------------------------ runs
    def start(self, name: str, preset: str, knobs: dict | None = None, extra: str = "") -> dict:
        cfg, overrides, plan = self.resolve(preset, knobs, extra)
        if not plan.ok:
            raise ValueError(plan.verdict)
        state = self.jobs.submit(name, preset, overrides)
        return asdict(state)

    def runs(self) -> list[dict]:
        self.jobs.poll()
        rows = []
        for s in reversed(self.jobs.list()):
            last = self.jobs.metrics(s.name, last=1)
            rows.append({"name": s.name, "status": s.status, "preset": s.preset,
                         "step": last[0].get("step") if last else None,
                         "reward": last[0].get("reward/total/mean") if last else None,
                         "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(s.started)) if s.started else "",
                         "checkpoints": len(self.jobs.checkpoints(s.name))})
        return rows

    def status(self, name: str, log_lines: int = 30) -> dict:
        self.jobs.poll()
        s = self.jobs.get(name)
        run_dir = self.jobs.run_dir(name)
        samples = sorted(run_dir.glob("samples/**/*.mp4"), key=lambda p: p.stat().st_mtime)
        return {"state": asdict(s), "metrics": self.jobs.metrics(name), "log": self.jobs.log_tail(name, log_lines),
                "checkpoints": [str(p) for p in self.jobs.checkpoints(name)], "samples": [str(p) for p in samples[-4:]]}

    def cancel(self, name: str) -> dict:
        return asdict(self.jobs.cancel(name))

    def resume(self, name: str) -> dict:
        return asdict(self.jobs.resume(name))

    # ------------------------------------------------------------ tuned slot
    def tuned_lora(self) -> str | None:
        """The LoRA the studio compares against: the one chosen last, else the shipped World-R1 LoRA."""
        if self._slot_file.exists():
            try:
                path = json.loads(self._slot_file.read_text()).get("lora")
                if path and Path(path).is_file():
                    return path
            except (ValueError, AttributeError):
                pass
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


def _fmt(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float) and v.is_integer() and abs(v) >= 1:
        return str(int(v))
    return str(v)
