"""Small Amaranth designs used only by the test suite."""
