"""World-R1 Studio entry point: parse arguments, build the Blocks, launch."""

from __future__ import annotations

import argparse
import os


def build_app():
    import gradio as gr

    from studio import __version__
    from studio.ui.tinyworld_tab import build_tinyworld_tab

    with gr.Blocks(title="World-R1 Studio") as demo:
        gr.Markdown(f"# World-R1 Studio <small>v{__version__}</small>\n"
                    "Text-to-video with 3D-consistency analysis. Embedded world: **TinyWorld**.")
        with gr.Tab("TinyWorld"):
            build_tinyworld_tab()
    return demo


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="World-R1 Studio")
    ap.add_argument("--host", default=os.environ.get("STUDIO_HOST", "127.0.0.1"))
    ap.add_argument("--port", type=int, default=int(os.environ.get("STUDIO_PORT", os.environ.get("PORT", 7860))))
    ap.add_argument("--data-dir", default=os.environ.get("STUDIO_DATA_DIR", "data"))
    args = ap.parse_args(argv)
    os.environ["STUDIO_DATA_DIR"] = args.data_dir
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    demo = build_app()
    demo.queue().launch(server_name=args.host, server_port=args.port)


if __name__ == "__main__":
    main()
