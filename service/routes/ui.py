"""The dashboard: the HTML pages of /ui and the folder of their scripts, styles and chart library.

The pages hold no data, so they need no API key: their scripts read /v1 with the key the
user types in (kept in sessionStorage, sent as a bearer header). A page says whether the
server wants a key, so that it asks before its first request instead of after a 401.
"""

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

ASSETS = Path(__file__).resolve().parents[1] / "ui"

router = APIRouter(prefix="/ui", tags=["dashboard"], include_in_schema=False)


def assets() -> StaticFiles:
    """Gives the app serving service/ui/ (scripts, styles, vendor/uPlot), mounted at /ui/static."""
    return StaticFiles(directory=ASSETS)


def page(name: str, request: Request) -> HTMLResponse:
    """Gives the page service/ui/`name`, told whether the server wants an API key."""
    keys = "required" if request.app.state.settings.api_keys else "none"
    html = (ASSETS / name).read_text(encoding="utf-8").replace("{{api_keys}}", keys)
    return HTMLResponse(html, headers={"Cache-Control": "no-cache"})


@router.get("")
async def models_page(request: Request) -> HTMLResponse:
    """Gives the list of models, refreshed live."""
    return page("models.html", request)


@router.get("/models/{model_id}")
async def model_page(model_id: str, request: Request) -> HTMLResponse:
    """Gives the training charts of one model (the script reads the id from the URL)."""
    return page("model.html", request)
