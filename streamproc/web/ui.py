"""The monitor's browser UI: static files shipped in the package (`static/`), no front-end build.

The page is plain HTML, CSS and JavaScript: it reads `/api/config` once, follows `/api/stream` (SSE)
for the live figures, and calls the JSON API for a task page and the actions.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"
router = APIRouter(include_in_schema=False)


@router.get("/")
async def home() -> RedirectResponse:
    return RedirectResponse("/ui/")


def mount(app: FastAPI) -> None:
    """Serve the UI's files under /ui (index.html for /ui/)."""
    app.mount("/ui", StaticFiles(directory=STATIC, html=True), name="ui")
