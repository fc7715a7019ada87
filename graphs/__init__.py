"""The AIDSAFE deliberation state machine (LangGraph)."""
