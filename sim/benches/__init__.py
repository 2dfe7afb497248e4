"""cocotb test modules, run by metafab.sim.runner."""
