"""Adversarial load on a live studio: hostile uploads and concurrent requests, bounded in time.

Starts `app.py` on a free loopback port with a fresh data dir (or uses --url), then sends, all at
once from a thread pool: the uploads the limits must refuse (a frame over 8.3 MP, a clip over the
decoded-pixel budget, an extreme aspect ratio, random bytes, a zero-byte file, a truncated MP4) and
the ones they must analyse (1920x1080x60, 2,000 black frames (flagged degenerate), a GIF), several
analyses of one clip at once, generations, TinyWorld renders and malformed API payloads. Every
request has an expected outcome; it prints the server's peak memory (itself and its worker
processes), the longest request, the tracebacks in the server log, and every wrong result (an
unexpected outcome, a message without text, a request past its deadline).

Usage: python -m scripts.stress_studio [--minutes 6] [--workers 8] [--url http://127.0.0.1:7860/]
Exit status 1 when any result is wrong.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

from benchmarks.bench_upload import encode, make_case, scene_frames  # noqa: E402
from studio.worker import rss_bytes  # noqa: E402
from studio import uploads  # noqa: E402

PROMPT = "Camera orbit left, then push in. A red cube and a blue sphere on a checkered floor."


@dataclass
class Request:
    name: str
    kind: str            # "analyze", "generate", "render", "raw"
    args: tuple
    expect: str          # "ok" or a regex the error message must match
    check: object = None  # callable(result) -> str | None (what is wrong with an ok result)


@dataclass
class Outcome:
    request: Request
    seconds: float
    ok: bool
    detail: str
    wrong: str | None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree(pid: int) -> dict[int, int]:
    """{pid: RSS bytes} of pid and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    out, todo = {}, [pid]
    while todo:
        p = todo.pop()
        out[p] = rss_bytes(p)
        todo.extend(children.get(p, []))
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()[:90]
    except OSError:
        return "?"


class MemoryWatch(threading.Thread):
    """Samples the server and its descendants every 0.2 s: peak of each process and of their sum."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.peak_total = pid, 0
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            tree = process_tree(self.pid)
            for p, rss in tree.items():
                if p not in self.names:
                    self.names[p] = _cmdline(p)
                self.peaks[p] = max(self.peaks.get(p, 0), rss)
            self.peak_total = max(self.peak_total, sum(tree.values()))
            time.sleep(0.2)


def make_uploads(folder: Path) -> dict[str, Path]:
    """The adversarial and the ordinary uploads."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: make_case(name, folder) for name in ("hd60", "black2000", "gif")}
    files["huge"] = encode(folder / "huge.mp4", np.zeros((2, 8, 8, 3), np.uint8), 2304, 4096)
    over = uploads.MAX_DECODED_PIXELS // (1280 * 720) + 10
    files["over_budget"] = encode(folder / "over_budget.mp4", np.zeros((over, 8, 8, 3), np.uint8), 720, 1280)
    files["thin"] = encode(folder / "thin.mp4", scene_frames(4, 40, 400), 40, 400)
    files["corrupt"] = folder / "corrupt.mp4"
    files["corrupt"].write_bytes(np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes())
    files["zero"] = folder / "zero.mp4"
    files["zero"].write_bytes(b"")
    data = files["hd60"].read_bytes()
    files["truncated"] = folder / "truncated.mp4"
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["small"] = encode(folder / "small.mp4", scene_frames(9, 64, 64), 64, 64)
    return files


def analysed(frames: str, degenerate: str | None = None):
    def check(result) -> str | None:
        metrics = result[3]
        if not isinstance(metrics, dict):
            return f"metrics is {type(metrics).__name__}"
        if frames not in str(metrics.get("frames_analysed")):
            return f"frames_analysed {metrics.get('frames_analysed')!r}, expected {frames!r}"
        got = metrics.get("degenerate")
        if (degenerate is None) != (got is None) or (degenerate and not str(got).startswith(degenerate)):
            return f"degenerate {got!r}, expected {degenerate!r}"
        return None
    return check


def requests_for(files: dict[str, Path]) -> list[Request]:
    a = "analyze"
    reqs = [
        Request("huge 4096x2304", a, (files["huge"], PROMPT), r"Clip to analyse: .*4096x2304.*limit is 8\.3 MP"),
        Request("over decoded-pixel budget", a, (files["over_budget"], PROMPT), r"Clip to analyse: .*million pixels to decode"),
        Request("aspect 10:1", a, (files["thin"], PROMPT), r"Clip to analyse: .*aspect ratio"),
        Request("corrupt bytes", a, (files["corrupt"], PROMPT), r"Clip to analyse: could not read"),
        Request("zero-byte", a, (files["zero"], PROMPT), r"Clip to analyse: .*empty"),
        Request("truncated mp4", a, (files["truncated"], PROMPT), r"ok|Clip to analyse: could not"),
        Request("no file", a, (None, PROMPT), r"Clip to analyse: upload a video"),
        Request("prompt of 5000 chars", a, (files["small"], "x" * 5000), r"Its prompt: 5000 characters"),
        Request("1920x1080x60", a, (files["hd60"], PROMPT), "ok", analysed("60 of 60 at 128x64")),
        Request("2000 black 640x480", a, (files["black2000"], PROMPT), "ok", analysed("129 of 2000 at 128x96", "blank")),
        Request("gif 320x240x100", a, (files["gif"], PROMPT), "ok", analysed("100 of 100 at 128x96")),
    ]
    reqs += [Request(f"same clip, concurrent #{i}", a, (files["small"], PROMPT), "ok", analysed("9 of 9")) for i in range(3)]
    reqs += [
        Request("generate", "generate", (PROMPT, 0, 8, 5.0, 17, 64, True, "tinyworld", "none"), "ok"),
        Request("generate, concurrent", "generate", (PROMPT, 1, 8, 5.0, 17, 64, True, "tinyworld", "none"), "ok"),
        Request("generate, empty prompt", "generate", ("  ", 0, 8, 5.0, 17, 64, True, "tinyworld", "none"), r"prompt is empty"),
        Request("render", "render", (PROMPT, 0, 17, 128), "ok"),
        Request("render 257x1024 (not offered)", "render", (PROMPT, 0, 257, 1024),
                r"Frames: 257 frames|Size: 1024|greater than maximum"),
        Request("raw: a server path as the upload", "raw",
                ("analyze", [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, "x"]),
                r"could not be read: .*not uploaded by a user"),
        Request("raw: a number as the upload", "raw", ("analyze", [12345, None]), r"could not be read: .*FileData"),
        Request("raw: no arguments", "raw", ("analyze", []), r"could not be read: .*enough input values"),
    ]
    return reqs


def call(url: str, req: Request, deadline_s: float):
    """Run one request; returns (ok, result or message)."""
    if req.kind == "raw":
        return call_raw(url, *req.args, deadline_s=deadline_s)
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False)
    args = list(req.args)
    api = {"analyze": "/analyze", "generate": "/generate", "render": "/render_tinyworld"}[req.kind]
    if req.kind == "analyze":
        args[0] = handle_file(str(args[0])) if args[0] else None
    try:
        job = client.submit(*args, api_name=api)
        return True, job.result(timeout=deadline_s)
    except AppError as e:
        return False, str(e)
    except TimeoutError:
        return False, "TIMEOUT"


def call_raw(url: str, api: str, data: list, deadline_s: float):
    """POST /gradio_api/call/<api> with a hand-made payload; (ok, data or the error's message)."""
    body = json.dumps({"data": data}).encode()
    r = urllib.request.Request(f"{url}gradio_api/call/{api}", data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(r, timeout=deadline_s) as resp:
            event_id = json.loads(resp.read())["event_id"]
    except urllib.error.HTTPError as e:
        return False, f"HTTP {e.code}: {e.read()[:200].decode(errors='replace')}"
    with urllib.request.urlopen(f"{url}gradio_api/call/{api}/{event_id}", timeout=deadline_s) as resp:
        text = resp.read().decode(errors="replace")
    events = re.findall(r"event: (\w+)\ndata: (.*)", text)
    for name, payload in events:
        if name == "error":
            message = json.loads(payload) if payload.strip() else None
            if isinstance(message, dict):
                message = message.get("error")
            return False, message if message else f"ERROR WITHOUT A MESSAGE ({payload.strip()})"
        if name == "complete":
            return True, json.loads(payload)
    return False, f"no result: {text[:200]}"


def run_one(url: str, req: Request, deadline_s: float) -> Outcome:
    start = time.monotonic()
    try:
        ok, result = call(url, req, deadline_s)
    except Exception as e:  # noqa: BLE001 - a client-side failure is a result too
        ok, result = False, f"client {type(e).__name__}: {e}"
    seconds = time.monotonic() - start
    detail = "ok" if ok else str(result)
    wrong = None
    if result == "TIMEOUT":
        wrong = f"no answer within {deadline_s:.0f} s"
    elif ok and req.expect != "ok" and not re.search(req.expect, "ok"):
        wrong = f"succeeded, expected an error matching {req.expect!r}"
    elif ok and req.check:
        wrong = req.check(result)
    elif not ok and req.expect == "ok":
        wrong = f"failed: {detail[:200]}"
    elif not ok and not re.search(req.expect, detail):
        wrong = f"message {detail[:200]!r} does not match {req.expect!r}"
    if not ok and ("error id" in detail or "WITHOUT A MESSAGE" in detail or not detail.strip()):
        wrong = wrong or f"a message that does not say what to fix: {detail[:200]!r}"
    return Outcome(req, seconds, ok, detail, wrong)


def wait_ready(url: str, proc, timeout_s: float) -> None:
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the studio exited with {proc.returncode} while starting")
        try:
            with urllib.request.urlopen(f"{url}gradio_api/info", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"the studio did not answer within {timeout_s:.0f} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=6.0, help="hard limit for the whole run")
    ap.add_argument("--workers", type=int, default=8, help="requests in flight at once")
    ap.add_argument("--url", help="an already running studio (then its memory is not measured)")
    args = ap.parse_args()
    end = time.monotonic() + args.minutes * 60
    work = Path(tempfile.mkdtemp(prefix="stress-studio-"))
    proc = log = None
    try:
        print(f"load average: {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; writing the uploads ...", flush=True)
        files = make_uploads(work / "uploads")
        if args.url:
            url = args.url.rstrip("/") + "/"
        else:
            port = free_port()
            url = f"http://127.0.0.1:{port}/"
            log = open(work / "server.log", "w")
            env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                   "GRADIO_TEMP_DIR": str(work / "gradio")}
            proc = subprocess.Popen([sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port),
                                     "--data-dir", str(work / "data")], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                                    env=env)
            wait_ready(url, proc, min(240, end - time.monotonic()))
            print(f"studio up at {url} (pid {proc.pid})", flush=True)
        watch = MemoryWatch(proc.pid) if proc else None
        if watch:
            watch.start()
        reqs = requests_for(files)
        outcomes: list[Outcome] = []
        with ThreadPoolExecutor(max_workers=args.workers) as pool:
            futures = [pool.submit(run_one, url, r, max(10.0, end - time.monotonic() - 20)) for r in reqs]
            for f in as_completed(futures):
                o = f.result()
                outcomes.append(o)
                print(f"  {o.seconds:6.1f} s  {'WRONG' if o.wrong else 'right'}  {o.request.name}: "
                      f"{o.detail[:110]}", flush=True)
        if watch:
            watch.stop.set()
            watch.join()
        print()
        longest = max(outcomes, key=lambda o: o.seconds)
        print(f"requests: {len(outcomes)}; longest: {longest.seconds:.1f} s ({longest.request.name})")
        if watch:
            print(f"peak memory, the server and its child processes at once: {watch.peak_total / 2**20:.0f} MiB")
            for p, rss in sorted(watch.peaks.items(), key=lambda kv: -kv[1])[:4]:
                who = "server" if p == watch.pid else "child"
                print(f"  {who} {p}: peak {rss / 2**20:.0f} MiB  {watch.names.get(p, '')}")
        if log is not None:
            log.flush()
            text = (work / "server.log").read_text(errors="replace")
            print(f"server log: {text.count('Traceback')} traceback(s), "
                  f"{len(re.findall(r'refused', text))} refused-request line(s)")
            for line in re.findall(r".*studio\.worker.*", text)[:6]:
                print(f"  {line}")
            for last in re.findall(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)+(.*)", text)[:5]:
                print(f"  {last}")
        wrong = [o for o in outcomes if o.wrong]
        print(f"wrong results: {len(wrong)}")
        for o in wrong:
            print(f"  {o.request.name}: {o.wrong}")
        return 1 if wrong else 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        if log is not None:
            log.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
