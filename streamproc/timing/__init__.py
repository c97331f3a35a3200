"""Time (SPEC §13): delayed tasks (`submit(countdown=…/eta=…)`, fired by `scheduler`) and periodic
tasks (`@app.periodic`, fired by `periodic_runner`), both on `<prefix>.schedules`; `keeper` runs
them beside a worker."""
