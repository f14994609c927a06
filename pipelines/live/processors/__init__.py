"""Live processors: pure event-time steps and the consumer loops around them."""
