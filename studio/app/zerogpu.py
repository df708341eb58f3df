"""ZeroGPU: GPU-bound calls run under ``spaces.GPU`` when the ``spaces`` package is importable.

On a ZeroGPU Space a GPU is attached only inside functions decorated with ``spaces.GPU``, for at most
the duration the decorator asks for; elsewhere (a CPU Space, a workstation, CI) ``spaces`` is absent
and the functions run as they are. The duration is computed per call from what the call will do
(``spaces.GPU`` accepts a callable that takes the decorated function's arguments), so a 2-step
TinyWorld preview does not reserve the minutes a 50-step Wan clip needs.
"""

from __future__ import annotations

from typing import Callable

# Seconds per denoising step of Wan2.1-1.3B at 480x832x81 (32,760 tokens) on an H200-class slice,
# with CFG (two transformer passes); cost taken as linear in tokens, which over-reserves small clips.
WAN_STEP_S_AT_480P = 1.5
WAN_TOKENS_AT_480P = 21 * 60 * 104 // 4  # latent frames x latent grid / patch (1, 2, 2)
LOAD_S = 30.0     # moving a loaded pipeline to the GPU, VAE decode, MP4 and analysis
MAX_S = 300.0     # ZeroGPU refuses longer reservations for most accounts
MIN_S = 10.0


def generation_seconds(model: str, steps: int, num_frames: int, height: int, width: int, sides: int = 2) -> float:
    """GPU seconds to reserve for ``sides`` clips (baseline and tuned) of this size."""
    if model == "tinyworld":
        return MIN_S
    tokens = ((num_frames - 1) // 4 + 1) * (height // 16) * (width // 16)
    per_step = WAN_STEP_S_AT_480P * tokens / WAN_TOKENS_AT_480P
    return float(min(MAX_S, max(MIN_S, LOAD_S + sides * steps * per_step)))


def on_gpu(duration: float | Callable[..., float]) -> Callable:
    """Decorator: ``spaces.GPU(duration=duration)`` when ``spaces`` is importable, else the function itself."""

    def wrap(fn: Callable) -> Callable:
        try:
            import spaces
        except ImportError:
            return fn
        return spaces.GPU(duration=duration)(fn)

    return wrap
