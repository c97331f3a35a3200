"""The whole `streamproc web` app: the status API, the monitor's API and actions, and the UI."""

from __future__ import annotations

from fastapi import FastAPI

from streamproc.web import actions, monitor_api, ui
from streamproc.web.app import create_app
from streamproc.web.view import StatusView


def create_monitor_app(view: StatusView, monitoring: monitor_api.Monitoring) -> FastAPI:
    app = create_app(view, [monitor_api.router, actions.router, ui.router])
    app.state.monitoring = monitoring
    ui.mount(app)
    return app
