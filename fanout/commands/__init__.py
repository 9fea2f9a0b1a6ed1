"""Click commands, one module per command group. ``fanout.cli`` assembles them."""
