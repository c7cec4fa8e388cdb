"""The scaler's HTTP port: metrics, health, and the enqueue API."""
