"""faust-streaming processors: pricing, budget ledgers and alerts, derived from the usage log."""
