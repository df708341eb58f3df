"""World-R1 Studio entry point: parse arguments, build the Blocks, launch."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

# One BLAS thread in the server, set before anything imports numpy: when any library forks while
# another request's thread is inside a multi-threaded OpenBLAS call, OpenBLAS's fork handler
# leaves that thread stuck for good (tests/test_video.py). The analysis's matrices are small: a
# 17-frame analysis takes 0.42 s of CPU with one BLAS thread or two.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def build_app(data_dir: str | Path = "data"):
    import gradio as gr

    from studio import __version__
    from studio.errors import install as install_error_path
    from studio.app.services import Services
    from studio.ui.analyze_section import build_analyze_section
    from studio.ui.generate_tab import build_generate_tab
    from studio.ui.study_admin import build_study_admin
    from studio.ui.study_tab import build_study_tab
    from studio.ui.tinyworld_tab import build_tinyworld_tab
    from studio.ui.train_tab import build_train_tab

    services = Services(data_dir, db_url=os.environ.get("STUDIO_DB_URL"))
    with gr.Blocks(title="World-R1 Studio") as demo:
        gr.Markdown(f"# World-R1 Studio <small>v{__version__}</small>\n"
                    "Text-to-video with a 3D-consistency check, blind A/B studies, and Flow-GRPO tuning "
                    "toward 3D consistency (World-R1). Embedded world: **TinyWorld**.")
        if os.environ.get("SYSTEM") == "spaces" and os.environ.get("OAUTH_CLIENT_ID"):  # Space with `hf_oauth: true`
            gr.LoginButton()
        with gr.Tab("Generate & compare", id="generate"):
            build_generate_tab(services)
            build_analyze_section(services.data_dir)
        with gr.Tab("A/B study", id="study"):
            study_dropdown = build_study_tab(services)
            build_study_admin(services, study_dropdown)
        with gr.Tab("Training", id="training"):
            build_train_tab(services.training)
        with gr.Tab("TinyWorld", id="tinyworld"):
            build_tinyworld_tab(services.data_dir)
    install_error_path(demo)  # malformed payloads get a message too (studio.errors)
    demo.services = services
    return demo


def launch_kwargs(data_dir: str | Path) -> dict:
    """What `launch` serves: Gradio's upload folder and nothing of the data dir
    (studio.ui.serving has the why), the tabs' CSS, and 4xx statuses for user errors."""
    from studio.ui.generate_tab import GENERATE_CSS
    from studio.ui.serving import launch_options
    from studio.ui.study_tab import STUDY_CSS

    return launch_options(data_dir, css=GENERATE_CSS + STUDY_CSS)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="World-R1 Studio")
    env = os.environ.get
    # Gradio's own variables (what Spaces and Docker users set) count as well as the studio's.
    ap.add_argument("--host", default=env("STUDIO_HOST") or env("GRADIO_SERVER_NAME") or "127.0.0.1")
    port = env("STUDIO_PORT") or env("GRADIO_SERVER_PORT") or env("PORT")
    ap.add_argument("--port", type=int, default=int(port) if port else None,
                    help="default: 7860, or the next free port when a second studio already uses it")
    ap.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR", "data"))
    args = ap.parse_args(argv)
    # The studio's own INFO lines (one per refused request, studio.errors) and everyone's warnings.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("studio").setLevel(logging.INFO)
    os.environ["STUDIO_DATA_DIR"] = args.data_dir
    os.environ["STUDIO_HOST"] = args.host
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(args.data_dir)
    from studio.uploads import MAX_UPLOAD_BYTES

    # Gradio refuses a larger upload while it streams in, before it fills the disk.
    demo.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port,
                                                   max_file_size=MAX_UPLOAD_BYTES, **launch_kwargs(args.data_dir))


if __name__ == "__main__":
    main()
