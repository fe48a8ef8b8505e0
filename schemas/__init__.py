"""Versioned wire contracts shared by producers and consumers."""
