"""Small dramatiq apps used by runner and end-to-end tests (run in subprocesses)."""
