"""Find the user's `App` from a `MODULE:ATTR` string (`--app handlers.app:app`).

The worker and `submit --app` both load it; each way it can go wrong is one line that says what
to fix, because a traceback from importlib tells a user little about a typo in a flag.
"""

from __future__ import annotations

import importlib
import os
import sys

from streamproc.app import App
from streamproc.errors import StreamprocError


def load_app(spec: str) -> App:
    """Import MODULE and return its attribute ATTR (dots allowed), which must be an `App`.

    The current directory goes first on `sys.path`, as with `python -m`, so that
    `handlers.app:app` works from the project root even when run through the installed script.
    """
    module_name, sep, attr_path = spec.partition(":")
    if not sep or not module_name or not attr_path:
        raise StreamprocError(f"--app {spec!r}: expected MODULE:ATTR, e.g. handlers.app:app")
    cwd = os.getcwd()
    if sys.path[:1] != [cwd]:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
            raise StreamprocError(
                f"--app {spec!r}: no module named {module_name!r} (run from the directory that contains it, "
                "or add that directory to PYTHONPATH)"
            ) from exc
        raise StreamprocError(f"--app {spec!r}: importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:  # the user's module raised while importing: report it on one line
        raise StreamprocError(f"--app {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    target: object = module
    for part in attr_path.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise StreamprocError(f"--app {spec!r}: module {module_name!r} has no attribute {attr_path!r}") from None
    if not isinstance(target, App):
        raise StreamprocError(
            f"--app {spec!r}: {attr_path!r} is a {type(target).__name__}, not a streamproc App (app = App())"
        )
    return target
