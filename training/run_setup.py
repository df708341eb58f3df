"""What every offline training or evaluation script does first and last: seed, thread count and
a run folder that records its config; a CLI main that turns bad input into one error line."""
from __future__ import annotations

import json
import os
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np


def start_run(cfg: Any) -> tuple[np.random.Generator, Path]:
    """Seed torch, set its threads, create cfg.run_dir with train_config.json; return (rng, run_dir).

    cfg is a dataclass with seed, threads and run_dir; the same seed gives the same run.
    """
    import torch

    torch.manual_seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))
    print(json.dumps(asdict(cfg), indent=2), flush=True)
    return np.random.default_rng(cfg.seed), run_dir


def report_main(parse_args: Callable[[list[str]], Any], run: Callable[[Any, list[str]], dict],
                report: Callable[[dict], str], argv: list[str] | None = None,
                errors: tuple[type[BaseException], ...] = (FileNotFoundError, ValueError)) -> int:
    """Offline by default, parse, run, print the Markdown report; a user error is one line, exit 2."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        res = run(args, argv)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report(res))
    return 0
