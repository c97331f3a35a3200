"""The task lifecycle on Kafka (SPEC §12): status records, awaiting results, cancel, de-duplication.

- `status`: the states and the status record (`<prefix>.status`), one definition for writers and readers;
- `control`: cancel records (`<prefix>.control`); `cancel_follower`: the cancels a worker follows;
- `tracking`: the worker's side: statuses written, tasks skipped; `status_batches`: how statuses are
  sent (a batch per partition, offsets finished on the acknowledgement); `cancelling`: running
  handlers cancelled;
- `follower`: one reader per process that resolves awaited task ids, with no polling;
- `lookup`: the bounded read of a status without `streamproc web`; `client`: what a producer asks;
- `handle`: `TaskHandle`, what `submit` returns;
- `identity`: task ids from idempotency keys and payload hashes;
- `restore`: the ids a crashed worker finished after its last commit, so they are not run again;
- `reading`: the bounded read those readers share.
"""
