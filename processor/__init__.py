"""The processor: configuration, instruction set, and the Amaranth gateware generated from them."""
