"""Fleetlet's actors: the root supervisor, its children, and the thin runtime they share."""
