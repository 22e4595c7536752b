"""What the machine tells about itself: fingerprint, load, throttling, peaks, idle thread pools."""
