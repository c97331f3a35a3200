"""`python -m streamproc` and the `streamproc` script.

For `streamproc worker`, SIGTERM is caught before the CLI (and aiokafka, pydantic, the user's
app) is imported, so a SIGTERM during start-up ends the worker cleanly instead of killing it (see
`termination`). Other commands keep the default: SIGTERM ends them at once.
"""

from __future__ import annotations

import sys

from streamproc import termination


def _command(args: list[str]) -> str | None:
    """The subcommand: the first argument that is not an option (the only global option, --debug, takes no value)."""
    return next((arg for arg in args if not arg.startswith("-")), None)


def main() -> None:
    if _command(sys.argv[1:]) == "worker":
        termination.record()
    from streamproc.cli import main as run  # after the handler: this import is most of the start-up

    run()


if __name__ == "__main__":
    main()
