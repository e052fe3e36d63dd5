"""SSD network zoo: presets and builders (``symbol.symbol_factory``), one module per backbone."""
