"""What the HTTP server exposes, in one place: launch options, served URLs, user-error statuses.

Served files: Gradio serves its own upload folder (GRADIO_TEMP_DIR), where it copies every file a
handler returns, and whatever `allowed_paths` names. The data dir holds the study database
(every vote, every evaluator id, which clip is which system), exports, training runs and the
secret that names served clips, so it is never in `allowed_paths`: the study publishes the clips
a page needs into a folder of their own inside the upload folder (`studio.study.media`), and
`blocked_paths` keeps Gradio from copying the database, its WAL or the exports out of it.

Serving the database also lost votes: closing any non-SQLite handle on the file (Gradio's, after
sending it) drops every POSIX lock the app process holds on it, so the next process that opens
and closes the database believes it is the last user, checkpoints and deletes the WAL, and the
app's later commits go to the deleted file. Back up with SQLite's online backup (README).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from studio.study.db import DB_FILENAME
from studio.app.study_service import MEDIA_KEY_FILENAME

# Gradio answers every error of POST /gradio_api/run/<name> with 500. Handlers raise user errors
# through studio.errors (the one error path), whose titles survive into the error payload;
# `UserErrorStatus` turns a title into the 4xx (or 504) a client should see. Anything else stays a 500.
STATUS_BY_TITLE = {"Invalid input": 400, "Not allowed": 403, "Not found": 404, "Timed out": 504}


class UserErrorStatus:
    """ASGI middleware: a 500 from /gradio_api/run/... whose payload carries a studio.errors title
    is sent with that title's status instead (the body is unchanged)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or "/run/" not in scope.get("path", ""):
            await self.app(scope, receive, send)
            return
        held: dict | None = None
        body = b""

        async def send_with_status(message) -> None:
            nonlocal held, body
            if message["type"] == "http.response.start" and message["status"] == 500:
                held = message
                return
            if held is None or message["type"] != "http.response.body":
                await send(message)
                return
            body += message.get("body", b"")
            if message.get("more_body"):
                return
            status = 500
            try:
                status = STATUS_BY_TITLE.get(json.loads(body).get("title"), 500)
            except (ValueError, AttributeError):
                pass
            await send({**held, "status": status})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, send_with_status)


def served_url(path: str | Path) -> str:
    """URL, relative to the app's root URL, of a file in Gradio's upload folder
    (urllib.parse.urljoin(app_url, served_url(path)) fetches it)."""
    return f"gradio_api/file={Path(path).as_posix()}"


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def launch_options(data_dir: str | Path, css: str = "") -> dict:
    """Keyword arguments for `Blocks.launch`: nothing of the data dir is served.

    Gradio copies a returned file into its upload folder only when the file lies in the working
    directory, the temp dir or `allowed_paths`. A data dir elsewhere (/data on a Space) gets only
    its `compare` folder (the generate tab's public outputs) allowed, so those can still be shown.
    """
    from starlette.middleware import Middleware

    data_dir = Path(data_dir).resolve()
    allowed: list[str] = []
    if not (_inside(data_dir, Path(os.getcwd())) or _inside(data_dir, Path(tempfile.gettempdir()))):
        allowed.append(str(data_dir / "compare"))
    blocked = [str(data_dir / name) for name in (DB_FILENAME, f"{DB_FILENAME}-wal", f"{DB_FILENAME}-shm",
                                                 f"{DB_FILENAME}-journal", MEDIA_KEY_FILENAME, "exports")]
    return {"allowed_paths": allowed, "blocked_paths": blocked, "css": css,
            "app_kwargs": {"middleware": [Middleware(UserErrorStatus)]}}
