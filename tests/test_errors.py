"""studio.errors: one error path for every handler (known -> a message and one INFO line; unknown ->
an id that matches one logged traceback), and a time limit."""

import inspect
import logging
import re
import socket
import time

import gradio as gr
import pytest

from studio.errors import RequestTimeout, UserError, handler, install


def test_a_user_error_names_the_field_and_the_fix():
    e = UserError("12 frames; pick 2 to 65", field="Frames", fix="Move the slider")
    assert str(e) == "Frames: 12 frames; pick 2 to 65. Move the slider" and isinstance(e, ValueError)


@pytest.mark.parametrize("error", [ValueError("seed must be a whole number"), UserError("too long", field="Prompt"),
                                   PermissionError("admin only"), FileNotFoundError(2, "missing", "/srv/x/clip.mp4")])
def test_known_errors_become_a_message_and_one_info_line(error, caplog):
    @handler
    def on_click(x):
        raise error

    caplog.set_level(logging.INFO, logger="studio")
    with pytest.raises(gr.Error) as e:
        on_click(1)
    assert e.value.print_exception is False  # Gradio prints no traceback for it
    assert "/srv/x" not in e.value.message and e.value.message
    assert [(r.levelno, r.exc_info) for r in caplog.records] == [(logging.INFO, None)]


@pytest.mark.parametrize("error", [RuntimeError("cuda out of memory"), MemoryError(), KeyError("race")])
def test_unknown_errors_get_an_id_that_matches_one_logged_traceback(error, caplog):
    @handler
    def on_click():
        raise error

    with pytest.raises(gr.Error) as e:
        on_click()
    error_id = re.search(r"error id ([0-9a-f]{10})", e.value.message).group(1)
    assert e.value.print_exception is False
    logged = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(logged) == 1 and error_id in logged[0].getMessage() and logged[0].exc_info[1] is error


def test_a_gr_error_raised_on_purpose_passes_through_without_a_traceback():
    @handler
    def on_click():
        raise gr.Error("pick a study first")

    with pytest.raises(gr.Error, match="pick a study first") as e:
        on_click()
    assert e.value.print_exception is False


def test_the_wrapper_keeps_the_signature_generators_and_a_time_limit():
    @handler(timeout_s=0.5)
    def on_slow(x, progress=gr.Progress()):
        time.sleep(5)

    assert list(inspect.signature(on_slow).parameters) == ["x", "progress"]  # Gradio still sees gr.Progress
    start = time.monotonic()
    with pytest.raises(gr.Error, match="did not finish within 0.5 s"):
        on_slow(1)
    assert time.monotonic() - start < 2

    @handler(timeout_s=5)
    def on_fast(x):
        return x + 1

    assert on_fast(1) == 2

    @handler
    def on_stream(n):
        yield 1
        raise ValueError("stopped at 1")

    stream = on_stream(2)
    assert inspect.isgenerator(stream) and next(stream) == 1
    with pytest.raises(gr.Error, match="stopped at 1"):
        next(stream)
    assert issubclass(RequestTimeout, UserError)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_through_a_live_server_a_user_error_reads_well_and_logs_no_traceback(capfd, caplog):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    @handler
    def on_go(x):
        if x == "bad":
            raise UserError("must not be 'bad'", field="Text", fix="Type something else")
        raise RuntimeError("a bug")

    with gr.Blocks() as demo:
        box, out = gr.Textbox(), gr.Textbox()
        gr.Button().click(on_go, box, out, api_name="go")
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        with pytest.raises(AppError, match="Text: must not be 'bad'. Type something else"):
            client.predict("bad", api_name="/go")
        assert "Traceback" not in capfd.readouterr().err
        with pytest.raises(AppError, match="error id [0-9a-f]{10}") as e:
            client.predict("other", api_name="/go")
        assert "Traceback" not in capfd.readouterr().err  # Gradio printed none ...
        error_id = re.search(r"error id ([0-9a-f]{10})", str(e.value)).group(1)
        logged = [r for r in caplog.records if r.exc_info]
        assert len(logged) == 1 and error_id in logged[0].getMessage()  # ... we logged one, with the id
    finally:
        demo.close()


def test_a_malformed_payload_gets_a_message_not_error_null(capfd):
    """Gradio reads the inputs before any handler runs; a payload it cannot read came back as
    {"error": null} with a traceback in the log."""
    import json
    import urllib.request

    with gr.Blocks() as demo:
        f, out = gr.File(type="filepath"), gr.Textbox()
        gr.Button().click(lambda x: "ok", f, out, api_name="take")
    install(demo)
    port = free_port()
    demo.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    url = f"http://127.0.0.1:{port}/gradio_api/call/take"
    try:
        for data, expected in (([12345], "FileData"), ([{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}],
                                                      "not uploaded by a user"), ([], "enough input values")):
            req = urllib.request.Request(url, data=json.dumps({"data": data}).encode(),
                                         headers={"Content-Type": "application/json"})
            event_id = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
            text = urllib.request.urlopen(f"{url}/{event_id}", timeout=30).read().decode()
            payload = json.loads(re.search(r"event: error\ndata: (.*)", text).group(1))
            message = payload["error"] if isinstance(payload, dict) else payload
            assert message and "could not be read" in message and expected in message, text
        assert "Traceback" not in capfd.readouterr().err
    finally:
        demo.close()
