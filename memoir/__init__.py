"""memoir: long-term memory about users for any MCP-capable agent."""

__version__ = "0.1.0"
