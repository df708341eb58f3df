"""What an epoch trains on: prompt sources, the rigid/fluid schedule (method §4), and the plan of
prompts, groups and noise seeds of every rollout round. Everything here is a function of the config,
the seed and the epoch, so a resumed run and a run split over several processes repeat it exactly."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.config import ConfigError, TrainConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_prompts(source: str) -> list[str]:
    """Prompts from a file (.txt/.jsonl/.json/.csv, through studio.prompts.load_prompt_file),
    optionally filtered by category with 'FILE#category' (JSONL rows with a "category" field),
    or from a TinyWorld split 'tinyworld:train|test|dynamic'."""
    if source.startswith("tinyworld:"):
        from studio.tinyworld.corpus import load_split

        m = re.fullmatch(r"tinyworld:(\w+)(?:\[(\d*):(\d*)\])?", source)
        if m is None:
            raise ConfigError(f"prompt source {source!r}: expected tinyworld:SPLIT or tinyworld:SPLIT[start:stop]")
        split, start, stop = m.group(1), m.group(2), m.group(3)
        try:
            prompts = [row["prompt"] for row in load_split(split)]
        except (FileNotFoundError, ValueError) as e:
            raise ConfigError(f"prompt source {source!r}: {e}") from None
        prompts = prompts[int(start) if start else None : int(stop) if stop else None]
        if not prompts:
            raise ConfigError(f"prompt source {source!r} selects no prompts")
        return prompts
    path_text, _, category = source.partition("#")
    path = Path(path_text)
    if not path.is_absolute() and not path.exists() and (REPO_ROOT / path).exists():
        path = REPO_ROOT / path  # presets name repository files; runs may start elsewhere
    if not path.is_file():
        raise ConfigError(f"prompt file {path_text!r} does not exist")
    if category:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        prompts = [r["prompt"] for r in rows if isinstance(r, dict) and r.get("category") == category]
        if not prompts:
            raise ConfigError(f"prompt source {source!r}: no rows with category {category!r}")
        return prompts
    from studio.prompts import load_prompt_file

    try:
        return load_prompt_file(path)
    except (FileNotFoundError, ValueError) as e:
        raise ConfigError(f"prompt source {source!r}: {e}") from None


def phase_at(step: int, cfg: TrainConfig, has_dynamic: bool) -> str:
    """'rigid' or 'fluid' for the optimizer step `step` of the periodic decoupled schedule (method §4)."""
    if not has_dynamic or cfg.dynamic_steps == 0:
        return "rigid"
    return "rigid" if step % (cfg.main_steps + cfg.dynamic_steps) < cfg.main_steps else "fluid"


@dataclass
class RoundPlan:
    """One rollout round over all processes: P × B items, K consecutive items per prompt."""

    prompts: list[str]
    group_ids: list[int]
    use_3d: list[bool]
    seeds: list[int]


def plan_epoch(cfg: TrainConfig, epoch: int, phase: str, rigid: list[str], dynamic: list[str], num_processes: int) -> list[RoundPlan]:
    """Prompts, groups and noise seeds of an epoch: a function of (seed, epoch) only, so resume repeats it.

    Fluid phase: every group from the dynamic prompts. Rigid phase: static-world prompts, except a
    `dynamic_mix` share of groups from the dynamic prompts; R_3D is off for exactly those items.
    """
    rng = np.random.default_rng([cfg.seed, epoch, 0x5EED])
    per_round = num_processes * cfg.per_device_batch_size
    groups = per_round // cfg.group_size
    orders = {"rigid": rng.permutation(len(rigid)), "fluid": rng.permutation(len(dynamic)) if dynamic else None}
    drawn = {"rigid": 0, "fluid": 0}
    rounds = []
    for r in range(cfg.num_batches_per_epoch):
        prompts, use_3d = [], []
        for _ in range(groups):
            source = phase
            if phase == "rigid" and dynamic and cfg.dynamic_mix > 0 and rng.uniform() < cfg.dynamic_mix:
                source = "fluid"
            pool = dynamic if source == "fluid" else rigid
            prompt = pool[int(orders[source][drawn[source] % len(pool)])]
            drawn[source] += 1
            prompts += [prompt] * cfg.group_size
            use_3d += [source == "rigid"] * cfg.group_size
        rounds.append(
            RoundPlan(
                prompts=prompts,
                group_ids=[r * groups + g for g in range(groups) for _ in range(cfg.group_size)],
                use_3d=use_3d,
                seeds=[int(s) for s in (np.repeat(rng.integers(0, 2**31 - 1, size=groups), cfg.group_size) if cfg.same_noise
                                        else rng.integers(0, 2**31 - 1, size=per_round))],
            )
        )
    return rounds


def sde_seed(seed: int, epoch: int, round_index: int, item: int) -> int:
    """Seed of the SDE noise of one rollout item: its place in the round, not in a process's batch."""
    return int(np.random.SeedSequence([seed, epoch, round_index, item]).generate_state(1)[0])


def gathered_positions(num_local: int, num_processes: int, batch_size: int) -> np.ndarray:
    """For each sample in plan order (round by round, as plan_epoch numbers them), its position in the
    arrays gathered from all processes (process by process, each one's samples round by round)."""
    plan = np.arange(num_local * num_processes)
    per_round = num_processes * batch_size
    r, i = plan // per_round, plan % per_round
    return (i // batch_size) * num_local + r * batch_size + i % batch_size
