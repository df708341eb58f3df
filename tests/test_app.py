"""app.py as a user starts it: Gradio's environment variables, the Space files."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_gradio_server_port_alone_sets_the_port(tmp_path):
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STUDIO_", "GRADIO_SERVER", "PORT"))}
    env.update(GRADIO_SERVER_PORT=str(port), STUDIO_DATA_DIR=str(tmp_path / "data"), HF_HUB_OFFLINE="1")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            assert proc.poll() is None, proc.stderr.read()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
                    assert r.status == 200
                    break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail(f"the studio did not answer on {port} within 120 s")
    finally:
        proc.terminate()
        proc.wait(30)


def _front_matter() -> dict:
    import yaml

    text = (ROOT / "README.md").read_text()
    m = re.match(r"^---\n(.*?)\n---\n", text, re.S)
    assert m, "README.md must start with the Space's front matter"
    return yaml.safe_load(m.group(1))


def test_the_space_front_matter_matches_the_app_and_the_pins():
    meta = _front_matter()
    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert meta["sdk"] == "gradio" and meta["sdk_version"] == pins["gradio[oauth]"]
    assert (ROOT / meta["app_file"]).is_file() and meta["app_file"] == "app.py"
    assert str(meta["python_version"]) == "3.11"
    assert meta.get("hf_oauth") is True  # the study's signed-in evaluators (Spaces.md)


def test_packages_txt_is_what_setup_installs():
    packages = [p.strip() for p in (ROOT / "packages.txt").read_text().splitlines() if p.strip() and not p.startswith("#")]
    assert "libusb-1.0-0" in packages  # open3d does not import without libusb-1.0.so.0
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    assert "packages.txt" in setup  # one list for the Space and for setup.sh
    out = subprocess.run(["bash", "-c", 'source <(sed -n "/^apt_pkgs=/,/^apt_pkgs=/p" scripts/setup.sh | head -n 1); '
                          'printf "%s\\n" "${apt_pkgs[@]}"'], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.split() == packages
