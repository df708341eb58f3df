"""One error path for every Gradio handler: what the user did wrong becomes a message naming the
field and the fix; what went wrong on our side becomes a short message with an id that matches
exactly one logged traceback.

Use it on a handler with one line:

    from studio.errors import handler

    @handler(timeout_s=600)
    def on_generate(prompt, seed, progress=gr.Progress()):
        ...

Known errors (`UserError`, ValueError, FileNotFoundError, PermissionError, a gr.Error raised on
purpose, a request that ran out of time) reach the user as a gr.Error with their message and
leave one INFO line in the log, no traceback. Anything else is logged once, with its traceback,
under a fresh id, and the user sees "Something went wrong on our side (error id ...)".
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import threading
import uuid

log = logging.getLogger("studio.errors")

# The time limit of a request that has no limit of its own (generation, rendering); seconds.
REQUEST_TIMEOUT_S = float(os.environ.get("STUDIO_REQUEST_TIMEOUT_S", 900))


class UserError(ValueError):
    """A problem with what the user sent. `field` names the input, `fix` says what to do instead."""

    def __init__(self, message: str, *, field: str | None = None, fix: str | None = None):
        self.field, self.fix = field, fix
        text = f"{field}: {message}" if field else message
        super().__init__(f"{text}. {fix}" if fix else text)


class RequestTimeout(UserError):
    """The request ran past its time limit (it was stopped, or abandoned where it cannot be stopped)."""


KNOWN_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, PermissionError, TimeoutError)


def user_message(error: BaseException) -> str:
    """The text a user sees for a known error (a missing file is named, not shown with its full path)."""
    if isinstance(error, FileNotFoundError) and error.filename:
        return f"file not found: {str(error.filename).rsplit('/', 1)[-1]}"
    if isinstance(error, KeyError) and error.args:  # str(KeyError) quotes its message
        return str(error.args[0])
    return str(error) or type(error).__name__


def _title(error: BaseException) -> str:
    """The error's title, which studio.ui.serving turns into the HTTP status an API client sees."""
    if isinstance(error, RequestTimeout | TimeoutError):
        return "Timed out"
    if isinstance(error, PermissionError):
        return "Not allowed"
    if isinstance(error, FileNotFoundError):
        return "Not found"
    return "Invalid input"


def to_gradio_error(error: BaseException, what: str = "request", not_found: tuple[type[BaseException], ...] = ()):
    """The gr.Error a handler raises for `error`; logs one INFO line (known) or one traceback (unknown).

    `not_found`: error types that mean, for this handler, that the id or name the user sent names
    nothing (the study and training services raise KeyError for that): a user error answered 404.
    Anywhere else a KeyError is a bug (a race, a missing field) and gets an error id.
    """
    import gradio as gr

    if not_found and isinstance(error, not_found):
        message = user_message(error)
        log.info("%s refused (not found): %s", what, message)
        return gr.Error(message, title="Not found", print_exception=False)

    if isinstance(error, gr.Error):
        log.info("%s refused: %s", what, error.message)
        error.print_exception = False  # gradio would print a traceback for a message we meant to show
        return error
    if isinstance(error, KNOWN_ERRORS):
        message = user_message(error)
        log.info("%s refused (%s): %s", what, type(error).__name__, message)
        return gr.Error(message, title=_title(error), print_exception=False)
    error_id = uuid.uuid4().hex[:10]
    log.error("%s failed [error id %s]", what, error_id, exc_info=error)
    return gr.Error(f"Something went wrong on our side ({type(error).__name__}, error id {error_id}). "
                    "Try again; if it happens again, report the id.", print_exception=False)


def run_with_timeout(fn, args: tuple, kwargs: dict, timeout_s: float, what: str = "request"):
    """Run fn in a daemon thread (with the caller's context, so gr.Progress keeps working) and wait
    at most timeout_s. Past it, RequestTimeout: a thread cannot be stopped, so it is abandoned
    (work that must really stop runs in a process: studio.worker)."""
    result: dict = {}
    ctx = contextvars.copy_context()

    def target():
        try:
            result["value"] = ctx.run(fn, *args, **kwargs)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
            result["error"] = e

    thread = threading.Thread(target=target, name=f"request:{what}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise RequestTimeout(f"the {what} did not finish within {timeout_s:g} s and was abandoned",
                             fix="Try a smaller input (fewer frames, a smaller size) or try again later")
    if "error" in result:
        raise result["error"]
    return result.get("value")


def handler(fn=None, *, timeout_s: float | None = None, what: str | None = None):
    """Decorator: the project's error path (and an optional time limit) for a Gradio handler.

    Keeps the handler's signature, so gr.Progress and gr.Request parameters still work. Generator
    handlers are wrapped as generators (without a time limit: each step returns to Gradio).
    """
    def deco(f):
        name = what or f.__name__.removeprefix("on_").replace("_", " ")

        if inspect.isgeneratorfunction(f):
            @functools.wraps(f)
            def gen_wrapper(*args, **kwargs):
                try:
                    yield from f(*args, **kwargs)
                except Exception as e:  # noqa: BLE001 - this is the error path
                    raise to_gradio_error(e, name) from None
            return gen_wrapper

        @functools.wraps(f)
        def wrapper(*args, **kwargs):
            try:
                if timeout_s:
                    return run_with_timeout(f, args, kwargs, timeout_s, name)
                return f(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 - this is the error path
                raise to_gradio_error(e, name) from None
        return wrapper

    return deco(fn) if fn is not None else deco


def install(demo) -> None:
    """Route Gradio's own input errors through the error path too: a payload that cannot be read
    (a malformed file object, a path the server did not receive, missing inputs) fails in Gradio's
    preprocessing, before any handler runs, and reached the client as `{"error": null}` with a
    traceback in the log. Now it is a gr.Error titled "Invalid input" saying what was wrong, and one
    INFO line."""
    import gradio as gr

    original = demo.preprocess_data

    async def preprocess_data(*args, **kwargs):
        try:
            return await original(*args, **kwargs)
        except gr.Error as e:  # Gradio's own checks (a value past a slider's maximum): already a message
            log.info("request refused before its handler: %s", e.message)
            e.print_exception = False
            raise
        except Exception as e:  # noqa: BLE001 - any failure to read the request's inputs
            first = (str(e).strip().splitlines() or [type(e).__name__])
            detail = " ".join(line.strip() for line in first[:2])[:300]
            log.info("request refused before its handler (%s): %s", type(e).__name__, detail)
            raise gr.Error(f"The request's inputs could not be read: {detail}", title="Invalid input",
                           print_exception=False) from None

    demo.preprocess_data = preprocess_data
