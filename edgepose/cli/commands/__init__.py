"""One module per group of edgepose commands (registered in edgepose.cli)."""
