"""Example handlers: `streamproc worker --app handlers.app:app`."""
