"""Amaranth 0.5 components, parameterised by the reference config."""
