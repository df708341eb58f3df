"""Studio timings in a real browser: page ready, and generate & compare (two clips + analysis) end to end.

Starts app.py on a free loopback port with a temporary data dir and drives Debian's Chromium.
Usage: python -m benchmarks.bench_studio [--runs 3]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline-only", action="store_true", help="empty the tuned slot (one clip instead of two)")
    args = ap.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tempfile.mkdtemp(prefix="bench-studio-")
    url = f"http://127.0.0.1:{port}"
    app = subprocess.Popen([sys.executable, "app.py", "--port", str(port), "--data-dir", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while True:
            try:
                urllib.request.urlopen(url, timeout=1)
                break
            except OSError:
                if time.time() - t0 > 120:
                    raise SystemExit("app did not start")
                time.sleep(0.2)
        print(f"app process start to first HTTP 200: {time.time() - t0:.1f} s")
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS)
            ready, compare = [], []
            for i in range(args.runs):
                page = b.new_page()
                t = time.perf_counter()
                page.goto(url, wait_until="load")
                page.wait_for_selector("#gen-go")
                ready.append(time.perf_counter() - t)
                if args.baseline_only:
                    page.fill("#gen-lora textarea, #gen-lora input", "")
                page.locator("#gen-prompt textarea").fill(f"Camera orbit left, then push in. A red cube and a blue sphere. {i}")
                t = time.perf_counter()
                page.click("#gen-go")
                page.wait_for_selector("#gen-baseline video[src]", timeout=120_000)
                page.wait_for_selector("#gen-pc-baseline canvas", timeout=60_000)
                if not args.baseline_only:  # the shipped World-R1 LoRA is in the tuned slot
                    page.wait_for_selector("#gen-tuned video[src]", timeout=60_000)
                    page.wait_for_selector("#gen-pc-tuned canvas", timeout=60_000)
                compare.append(time.perf_counter() - t)
                page.close()
            b.close()
        print(f"page ready (load + studio rendered): median {statistics.median(ready):.2f} s over {len(ready)} (target 3 s)")
        what = "baseline only" if args.baseline_only else "baseline and tuned, both analysed"
        print(f"generate & analyse, click to results shown ({what}): "
              f"median {statistics.median(compare):.2f} s, all {[round(x, 2) for x in compare]}")
    finally:
        app.terminate()
        app.wait(timeout=20)


if __name__ == "__main__":
    main()
