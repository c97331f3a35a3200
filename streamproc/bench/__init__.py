"""`streamproc bench`: streamproc against a bare aiokafka loop and FastStream, measured in one run (SPEC §10)."""
