"""The composition root: the agent (sequences + API on real adapters) and the machine supervisor."""
