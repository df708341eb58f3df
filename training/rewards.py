"""The trainer's side of the World-R1 reward: the configured reward set, a start-up check of what it
needs, and a pool that computes rewards while the next batch rolls out. The reward functions
themselves are in studio/rewards.py.
"""
from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from studio.rewards import RewardSet, as_frames, get_scorer, r_gen, s_meta, s_recon, s_traj


def world_r1_rewards(cfg) -> RewardSet:
    """The configured World-R1 reward: w_3d·(w_recon·S_recon + w_meta·S_meta + w_traj·S_traj) + w_gen·R_gen."""
    return RewardSet(
        functions={"s_recon": s_recon, "s_meta": s_meta, "s_traj": s_traj, "r_gen": r_gen},
        weights={
            "s_recon": cfg.w_3d * cfg.w_recon,
            "s_meta": cfg.w_3d * cfg.w_meta,
            "s_traj": cfg.w_3d * cfg.w_traj,
            "r_gen": cfg.w_gen,
        },
        norm=cfg.reward_norm,
        context={"estimator": cfg.geometry_estimator, "scorer": cfg.scorer},
    )


def check_backends(cfg) -> None:
    """Load what the configured rewards need (geometry engine, scorer) now, so a missing piece is a
    clear error at start-up rather than in the reward thread after the first rollout."""
    if cfg.w_3d > 0 and (cfg.w_recon or cfg.w_meta or cfg.w_traj):
        try:
            from studio.geometry import analyze  # noqa: F401
        except ImportError as e:
            raise RuntimeError(f"R_3D needs studio.geometry.analyze ({e}); set w_3d=0 to train without it") from None
    if cfg.w_gen > 0 or (cfg.w_3d > 0 and cfg.w_meta > 0):
        try:
            get_scorer(cfg.scorer)
        except (ImportError, OSError, RuntimeError, ValueError) as e:
            raise RuntimeError(f"R_gen needs the scorer {cfg.scorer!r}: {e}") from None


# ---------------------------------------------------------------------------------------------
# Overlap with the next rollout
# ---------------------------------------------------------------------------------------------
@dataclass
class RewardResult:
    values: dict[str, np.ndarray]
    seconds: float  # time spent computing (in the worker thread)


class RewardPool:
    """Computes rewards in worker threads so the main thread can roll out the next batch meanwhile."""

    def __init__(self, reward_set: Callable[..., dict], workers: int = 1):
        self.reward_set = reward_set
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="reward")

    def _run(self, prompts, clips, use_3d, targets) -> RewardResult:
        start = time.perf_counter()
        values = self.reward_set(prompts, clips, use_3d=use_3d, **({} if targets is None else {"targets": targets}))
        return RewardResult(values, time.perf_counter() - start)

    def submit(self, prompts, clips, use_3d=None, targets=None) -> Future:
        """targets: each clip's target camera path (the pipeline's camera_paths), passed on to the reward set."""
        return self.executor.submit(self._run, list(prompts), [as_frames(c) for c in clips], use_3d, targets)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
