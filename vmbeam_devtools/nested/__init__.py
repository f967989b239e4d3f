"""Dev tools of the nested sibling: its testbed, bench and test payload."""
