"""The Docker engine: the adapter (current state from labels, steps as engine calls) and its worker actor."""
