"""Who may launch training and administer studies when the studio is exposed.

Locally (bound to loopback, not on a Space) everyone is admin. Exposed, an admin either types the
password in STUDIO_ADMIN_PASSWORD (a Space secret) or is signed in with HF OAuth as a member of an
organisation listed in STUDIO_ADMIN_ORGS (comma-separated) or as a user in STUDIO_ADMIN_USERS.
"""

from __future__ import annotations

import hmac
import os


def is_exposed() -> bool:
    host = os.environ.get("STUDIO_HOST", "127.0.0.1")
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("STUDIO_EXPOSED") == "1" or host not in (
        "127.0.0.1", "localhost", "::1")


def _names(var: str) -> set[str]:
    return {x.strip().lower() for x in os.environ.get(var, "").split(",") if x.strip()}


def check_admin(password: str | None = None, profile: dict | None = None) -> None:
    """Raise PermissionError unless the caller may administer this studio."""
    if not is_exposed():
        return
    secret = os.environ.get("STUDIO_ADMIN_PASSWORD", "")
    if secret and password and hmac.compare_digest(password.encode(), secret.encode()):
        return
    if profile:
        user = str(profile.get("preferred_username") or profile.get("name") or "").lower()
        orgs = {str(o.get("preferred_username", o.get("name", ""))).lower() if isinstance(o, dict) else str(o).lower()
                for o in profile.get("orgs", []) or []}
        if user and user in _names("STUDIO_ADMIN_USERS") or orgs & _names("STUDIO_ADMIN_ORGS"):
            return
    if not secret and not _names("STUDIO_ADMIN_ORGS") and not _names("STUDIO_ADMIN_USERS"):
        raise PermissionError("training and study administration are disabled on this exposed studio: "
                              "set STUDIO_ADMIN_PASSWORD or STUDIO_ADMIN_ORGS to enable them")
    raise PermissionError("admin only: enter the admin password or sign in with an allowed Hugging Face account")
