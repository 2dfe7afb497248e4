"""cocotb benches, stream models, scoreboards and the simulator runner."""
