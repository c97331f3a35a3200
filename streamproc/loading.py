"""Find the user's `App` from a `MODULE:ATTR` string (`--app handlers.app:app`).

The worker and `submit --app` both load it; each way it can go wrong is one line that says what
to fix, because a traceback from importlib tells a user little about a typo in a flag. A module
that raises while it is imported (a SyntaxError, an ImportError inside it, any exception) is
reported with the file and line where it failed; `streamproc --debug` shows the traceback.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
import traceback

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
        raise StreamprocError(f"--app {spec!r}: importing {module_name!r} failed{_where(exc)}: {_what(exc)}") from exc
    except Exception as exc:  # the user's module raised while importing: report it on one line
        raise StreamprocError(f"--app {spec!r}: importing {module_name!r} failed{_where(exc)}: {_what(exc)}") from exc
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


def _what(exc: BaseException) -> str:
    """The exception on one line (a SyntaxError's own text repeats its file and line)."""
    text = exc.msg if isinstance(exc, SyntaxError) and exc.msg else str(exc)
    return f"{type(exc).__name__}: {' '.join(text.split())}" if text else type(exc).__name__


def _where(exc: BaseException) -> str:
    """` at FILE:LINE` where the import failed: a SyntaxError's own position, else the innermost
    frame of the user's code (not importlib's, the standard library's or an installed package's),
    else the innermost frame there is."""
    if isinstance(exc, SyntaxError) and exc.filename and exc.lineno:
        return f" at {_shown(exc.filename)}:{exc.lineno}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<")]
    if not frames:
        return ""
    installed = {sysconfig.get_path(name) for name in ("stdlib", "platstdlib", "purelib", "platlib")}
    here = os.path.dirname(os.path.abspath(__file__))
    own = [
        f
        for f in frames
        if not any(os.path.abspath(f.filename).startswith(p + os.sep) for p in installed if p)
        and os.path.dirname(os.path.abspath(f.filename)) != here
    ]
    frame = (own or frames)[-1]
    return f" at {_shown(frame.filename)}:{frame.lineno}"


def _shown(filename: str) -> str:
    """A path relative to the current directory when it is inside it."""
    path = os.path.abspath(filename)
    cwd = os.getcwd()
    return os.path.relpath(path, cwd) if path.startswith(cwd + os.sep) else filename
