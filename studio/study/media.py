"""The study's media: attention-check copies, the clips a page is served, and a synthetic clip
generator. Video goes through studio.video (PyAV in-process, the project's one MP4 reader and writer).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import shutil
import tempfile
from pathlib import Path

import numpy as np

from studio.util import served_folder
from studio.video import probe_video, read_mp4, write_mp4


def shuffled_order(num_frames: int, seed: int) -> np.ndarray:
    """A frame permutation that leaves at most a quarter of frames in place.

    A random permutation of a short clip can be nearly the identity; the attention check
    needs a clip whose motion is visibly broken.
    """
    if num_frames < 2:
        raise ValueError("a clip needs at least 2 frames to be shuffled")
    rng = np.random.default_rng(seed)
    for _ in range(1000):
        order = rng.permutation(num_frames)
        if np.sum(order == np.arange(num_frames)) <= num_frames // 4:
            return order
    return np.roll(np.arange(num_frames), 1)


def write_shuffled_copy(src: Path, dst: Path, seed: int) -> None:
    """Write `dst`: the frames of `src` in a shuffled order (same fps), atomically."""
    frames = read_mp4(src)
    write_mp4(frames[shuffled_order(len(frames), seed)], dst, fps=probe_video(src).fps or 8.0)


def default_served_dir() -> Path:
    """The folder the study serves clips from: its own folder inside Gradio's upload folder
    (GRADIO_TEMP_DIR, else <tmp>/gradio, as gradio.utils.get_upload_folder computes it).

    Gradio serves that folder without `allowed_paths`, and hands out a file already inside it
    under its own path. A file from anywhere else is copied into a folder named by the hash of
    its bytes, which would tell an API client that the two sides of an identical-clips check,
    or two battles, show the same clip.
    """
    return served_folder("study-media")


def load_or_create_key(path: Path) -> bytes:
    """A 32-byte secret kept in `path` (created once, owner-only), so served names stay the same
    across restarts and differ between data dirs."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return bytes.fromhex(path.read_text().strip())
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex())
    return key


class ServedMedia:
    """Copies of the clips of open battles, one per battle side, in a folder that holds nothing
    else, named by an HMAC of (battle, side): the name (which the browser sees in the URL) tells
    neither the system, nor the prompt, nor whether two sides are the same clip."""

    def __init__(self, folder: Path, key: bytes) -> None:
        self.folder, self._key = Path(folder), key

    def path(self, battle_id: int, side: str) -> Path:
        token = hmac.new(self._key, f"{int(battle_id)}:{side}".encode(), hashlib.sha256).hexdigest()[:32]
        return self.folder / f"{token}.mp4"

    def publish(self, battle_id: int, side: str, clip: Path) -> Path:
        """The served copy of `clip` for this battle side (written once, atomically)."""
        out = self.path(battle_id, side)
        if not out.exists():
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".partial-", suffix=".mp4")
            os.close(fd)
            try:
                shutil.copyfile(clip, tmp)
                os.replace(tmp, out)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        return out

    def withdraw(self, battle_id: int) -> None:
        for side in ("left", "right"):
            self.path(battle_id, side).unlink(missing_ok=True)


def synthetic_clip(system: str, prompt: str, seed: int, num_frames: int = 16, size: int = 32) -> np.ndarray:
    """A deterministic clip for tests and the load script: a square drifting over a tinted
    background, so frame order matters (a shuffled copy visibly jumps)."""
    digest = hashlib.sha256(f"{system}|{prompt}|{seed}".encode()).digest()
    background = np.frombuffer(digest[:3], dtype=np.uint8).astype(np.float32) * 0.5 + 32
    square = 255 - background
    frames = np.empty((num_frames, size, size, 3), dtype=np.uint8)
    side = size // 4
    for f in range(num_frames):
        frame = np.broadcast_to(background, (size, size, 3)).copy()
        x = int(round(f * (size - side) / max(num_frames - 1, 1)))
        y = (size - side) // 2
        frame[y : y + side, x : x + side] = square
        frames[f] = frame
    return frames


def generate_synthetic(system: str, prompt: str, seed: int, out_path: Path) -> None:
    """`GenerateFn` that writes `synthetic_clip` as an MP4 (tests, load script)."""
    write_mp4(synthetic_clip(system, prompt, seed), out_path)
