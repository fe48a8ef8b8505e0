"""Delivery guarantees under real faults: kill -9, rebalances, graceful shutdown, concurrent migrations."""
