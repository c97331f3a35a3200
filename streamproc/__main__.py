"""`python -m streamproc` and the `streamproc` script.

For `streamproc worker`, SIGTERM is caught before the CLI (and aiokafka, pydantic, the user's
app) is imported, so a SIGTERM during start-up ends the worker cleanly instead of killing it (see
`termination`). Other commands keep the default: SIGTERM ends them at once.

The command's own dependencies (typer, rich) are the `cli` extra: without them it says so in one line.
"""

from __future__ import annotations

import sys

from streamproc import termination


def _command(args: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option (the only global option, --debug, takes no value)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


CLI_MODULES = frozenset({"typer", "click", "rich"})  # the `cli` extra and what it brings


def main() -> None:
    if _command(sys.argv[1:]) == "worker":
        termination.record()
    try:
        from streamproc.cli import main as run  # after the handler: this import is most of the start-up
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in CLI_MODULES:
            raise
        sys.stderr.write(
            f"error: the streamproc command needs the cli extra ({exc.name} is not installed): "
            "pip install 'streamproc[cli]'\n"
        )
        sys.exit(1)
    run()


if __name__ == "__main__":
    main()
