"""Errors that streamproc reports to users as one clear line (the CLI exits 1 on them)."""


class StreamprocError(Exception):
    """A problem the user can fix: the message says what is wrong and what to do."""


class PermanentError(Exception):
    """Raised by a handler for a failure no retry can fix: the task goes to the DLQ at once."""


class PoisonRecord(Exception):
    """A record no attempt can process (bad value, unknown task…); `reason` is its DLQ reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
