"""Live monitoring: the alert monitor the projector process runs."""
