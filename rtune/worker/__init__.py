"""Worker side: runs inside Ray Train workers (the loop, strategies, objectives, optimizer)."""
