"""The scaler's HTTP port: metrics, health, and the enqueue API (app, enqueue, openapi, and the
pieces they share: auth, validation, responses)."""
