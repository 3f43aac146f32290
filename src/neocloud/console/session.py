"""Console sessions: the signed-in API key sealed in a cookie, and the CSRF tokens of forms.

The session cookie holds ``{key, csrf, issued}`` sealed with the platform's ``SecretBox``
(Fernet: encrypted and authenticated), so the key is never readable in the browser, never in a
page and never stored on the server. It is ``HttpOnly``, ``SameSite=Strict``, ``Path=/`` and
``Secure`` when the request came over HTTPS, and it expires after ``SESSION_TTL``.

CSRF: every form and every htmx request carries the session's own token (``csrf`` field or
``X-CSRF-Token`` header), compared in constant time. The sign-in form, before any session
exists, uses a double-submit token: a random ``nc_csrf`` cookie that the form repeats.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from neocloud.kernel.clock import Clock
from neocloud.kernel.secrets import SealedSecretError, SecretBox

SESSION_COOKIE = "nc_session"
SIGNIN_CSRF_COOKIE = "nc_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"
SESSION_TTL = timedelta(hours=12)
MAX_KEY_CHARS = 200  # longer than any key the platform issues; a bound on the sign-in field


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: the API key it acts with and its CSRF token."""

    key: str
    csrf: str
    issued: datetime


def new_token() -> str:
    return secrets.token_urlsafe(24)


def seal_session(box: SecretBox, *, key: str, clock: Clock) -> tuple[str, Session]:
    """A new session for ``key``: the cookie value and the session it opens to."""
    session = Session(key=key, csrf=new_token(), issued=clock.now())
    value = box.seal({"k": key, "c": session.csrf, "t": session.issued.timestamp()})
    return value, session


def open_session(box: SecretBox, value: str | None, *, clock: Clock) -> Session | None:
    """The session in a cookie value, or ``None`` when absent, forged, from another secret key
    or expired."""
    if not value or len(value) > 4096:
        return None
    try:
        data = box.open(value)
        issued = datetime.fromtimestamp(float(data["t"]), tz=clock.now().tzinfo)
        session = Session(key=str(data["k"]), csrf=str(data["c"]), issued=issued)
    except (SealedSecretError, KeyError, ValueError, TypeError, UnicodeEncodeError):
        return None
    if clock.now() - session.issued > SESSION_TTL:
        return None
    return session


def same_token(expected: str | None, given: str | None) -> bool:
    """Constant-time equality of two CSRF tokens; a missing one never matches."""
    if not expected or not given:
        return False
    return hmac.compare_digest(expected.encode(), given.encode())
