"""Throughput and latency benchmarks of the services on the real broker and databases (`make bench`)."""
