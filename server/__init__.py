"""The process and the protocol: CLI, settings, building the MCP server, transports, identity."""
