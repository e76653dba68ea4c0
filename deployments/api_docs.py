"""`GET /docs`: FastAPI's Swagger UI with its scripts and styles served by the service itself, not by a CDN.

FastAPI's default `/docs` page loads Swagger UI from cdn.jsdelivr.net, so on a cluster without internet access it
is blank. The same Swagger UI ships in the `swagger-ui-bundle` package; its files are served under `/docs/assets/`
(behind the same auth as every route but `/healthz`), and the page points at them.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path

ASSETS = "/docs/assets"


def install_api_docs(app: FastAPI) -> None:
    """Serve Swagger UI at `/docs` from the package's files (create the app with `docs_url=None`)."""
    app.mount(ASSETS, StaticFiles(directory=swagger_ui_path), name="swagger-ui")

    @app.get("/docs", include_in_schema=False)
    async def docs(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + (app.openapi_url or "/openapi.json"),
            title=f"{app.title}: API",
            swagger_js_url=f"{root}{ASSETS}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS}/favicon-32x32.png",
        )
