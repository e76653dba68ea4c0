"""`GET /`: a small page to try the model in a browser, self-contained (`static/index.html`, inline CSS and JS).

A person pastes texts and sees, per task, the label probabilities as bars, plus the embedding size and the model's
fingerprint; the page calls the v1 API (`GET /v1/tasks`, `POST /v1/predict`) from the same origin. `?text=...`
(repeatable) fills the boxes and classifies at once, for links and screenshots. Its Content-Security-Policy allows
only its own inline script and style (by hash) and requests to its own origin, so it never loads anything from
elsewhere.
"""

from __future__ import annotations

import base64
import hashlib
import re
from functools import cache
from pathlib import Path

from fastapi.responses import HTMLResponse

PAGE_FILE = Path(__file__).resolve().parent / "static" / "index.html"


def _hashes(html: str, tag: str) -> str:
    """CSP source expressions ('sha256-...') of every inline `<tag>` element's content."""
    contents = re.findall(rf"<{tag}>(.*?)</{tag}>", html, flags=re.DOTALL)
    digests = (base64.b64encode(hashlib.sha256(content.encode()).digest()).decode() for content in contents)
    return " ".join(f"'sha256-{digest}'" for digest in digests)


@cache
def _page() -> tuple[str, str]:
    """The page and its Content-Security-Policy, read once per process."""
    html = PAGE_FILE.read_text(encoding="utf-8")
    policy = (
        f"default-src 'none'; script-src {_hashes(html, 'script')}; style-src {_hashes(html, 'style')}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return html, policy


def page_response() -> HTMLResponse:
    html, policy = _page()
    return HTMLResponse(html, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})
