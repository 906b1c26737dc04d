"""The worker, the selector and the command-line tools."""
