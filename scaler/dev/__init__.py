"""``scaler dev``: the whole system on one machine (Redis, the local Machines API, the scaler and an
example app), with a live terminal view. The command lives in :mod:`scaler.commands.dev`."""
