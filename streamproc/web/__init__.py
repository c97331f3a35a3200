"""`streamproc web`: a materialised view of `<prefix>.status` and the HTTP API over it (SPEC §12, §14).

- `store`: the SQLite file holding each task id's latest status and the offsets read so far;
- `view`: follows the status topic into the store (no consumer group), off the event loop;
- `app`: the FastAPI application (`create_app`): `GET /api/tasks/{id}`, `GET /api/health`;
- `client`: `WebClient` / `fetch_status`, what `Producer.status()` uses when `STREAMPROC_WEB_URL` is set.

Only `app` needs the `web` extra (FastAPI); the client needs httpx alone.
"""
