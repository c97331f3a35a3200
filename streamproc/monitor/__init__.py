"""The live monitor (SPEC §14): workers report (`reporter`, `report`), and `streamproc web` and
`streamproc top` read the reports and the group's offsets into one live picture (`live`, from the
pure `board` of workers and `queues` of topics)."""
