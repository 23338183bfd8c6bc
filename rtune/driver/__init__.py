"""Driver side: runs in the process that calls `python -m rtune` (launch, sweeps, tune, submit)."""
