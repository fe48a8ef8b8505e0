"""Operator tools: replay a service's input topics and inspect or redrive dead letters, with a dry run first."""
