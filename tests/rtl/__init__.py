"""cocotb test benches of the processor's RTL (Verilator), wrapped in pytest functions."""
