"""The synthetic day: a seeded realistic day of claim traffic, streamed and reconciled."""
