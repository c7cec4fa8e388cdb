"""What the scaler tells operators: metrics, logs, costs."""
