"""Live operations: the event bus, receivers, writers and the simulator (issue 11)."""
