"""Numbers and models: the specification the hardware is checked against (numpy only)."""
