"""The long-lived objects behind the UI and API: data dir, training runs, the A/B study.

Pipelines and database engines cannot live in gr.State (they are not deep-copyable), so app.py
builds one `Services` and the tab builders close over it.
"""

from __future__ import annotations

import json
from pathlib import Path

from studio.rewards import with_trajectory_score
from studio.app.training_service import TrainingService
from studio.util import atomic_write_json


class Services:
    def __init__(self, data_dir: Path | str = "data", db_url: str | None = None):
        from studio.app.study_service import StudyService

        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.training = TrainingService(self.data_dir)
        self.study = StudyService(self.data_dir, db_url=db_url, generate=self.generate_for_study,
                                  metrics=self.metrics_for_study)

    # ------------------------------------------------------------------ systems
    def system_spec(self, system: str) -> tuple[str, str | None]:
        """'baseline' -> TinyWorld; 'tuned' -> TinyWorld + the tuned slot; 'MODEL' or 'MODEL|LORA' otherwise."""
        if system == "baseline":
            return "tinyworld", None
        if system == "tuned":
            lora = self.training.tuned_lora()
            if lora is None:
                raise ValueError("the tuned slot is empty: train a run or load a checkpoint first")
            return "tinyworld", lora
        model, _, lora = system.partition("|")
        return model, (lora or None)

    def generate_for_study(self, system: str, prompt: str, seed: int, out_path: Path) -> None:
        """Study clip generator: writes the MP4 and, beside it, the clip's automatic metrics."""
        from studio.geometry import analyze
        from studio.pipelines import load_pipeline

        model, lora = self.system_spec(system)
        clip = load_pipeline(model, lora=lora).generate(prompt, seed=int(seed))
        clip.to_mp4(out_path)
        try:
            analysis = analyze(clip.frames, prompt, target_c2w=clip.trajectory)
            metrics = {k: v for k, v in with_trajectory_score(analysis).items() if isinstance(v, (int, float))}
        except Exception as e:  # noqa: BLE001 - metrics are optional beside the votes
            metrics = {"error": str(e)}
        atomic_write_json(Path(out_path).with_suffix(".metrics.json"), metrics)

    @staticmethod
    def metrics_for_study(clip_path: Path) -> dict[str, float]:
        path = Path(clip_path).with_suffix(".metrics.json")
        if not path.exists():
            return {}
        data = json.loads(path.read_text())
        return {k: float(v) for k, v in data.items() if isinstance(v, (int, float))}
