"""The `mlserve` command line: argument parsing only; the work is library code."""
