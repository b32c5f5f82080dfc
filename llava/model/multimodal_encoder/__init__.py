"""Vision encoders that turn pixels into patch features."""
