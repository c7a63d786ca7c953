"""The actor runtime: actor base, supervisor, restart policy, settings, the actor system and its process tree.

It knows nothing about containers or shadows."""
