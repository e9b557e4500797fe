"""The memory domain, free of MCP: models, the SQLite store, retrieval, extraction, LLM access."""
