"""Host rejuvenation: the orchestrator and its on-disk journal."""
