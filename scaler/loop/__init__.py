"""The control loop: observe, plan (``scaler.policy``), act, and the process around it."""
