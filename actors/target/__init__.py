"""Target state (containers): model, planner, poller, reconciler, reporter and the engine adapter."""
