"""The front doors: the CLI, the MCP server, the Python API and the MCP server's jobs."""
