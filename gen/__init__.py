"""The metafab CLI, Verilog export, synthesis flow and reports."""
