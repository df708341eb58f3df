"""World-R1 Studio entry point: parse arguments, build the Blocks, launch."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def build_app(data_dir: str | Path = "data"):
    import gradio as gr

    from studio import __version__
    from studio.services import Services
    from studio.ui.generate_tab import build_analyze_section, build_generate_tab
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
            build_analyze_section()
        with gr.Tab("A/B study", id="study"):
            build_study_tab(services)
            build_study_admin(services)
        with gr.Tab("Training", id="training"):
            build_train_tab(services.training)
        with gr.Tab("TinyWorld", id="tinyworld"):
            build_tinyworld_tab()
    demo.services = services
    return demo


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="World-R1 Studio")
    ap.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", os.environ.get("PORT", 7860))))
    ap.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR", "data"))
    args = ap.parse_args(argv)
    os.environ["STUDIO_DATA_DIR"] = args.data_dir
    os.environ["STUDIO_HOST"] = args.host
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app(args.data_dir)
    demo.queue(default_concurrency_limit=4).launch(server_name=args.host, server_port=args.port,
                                                   allowed_paths=[str(Path(args.data_dir).resolve())])


if __name__ == "__main__":
    main()
