"""Network-namespace hosts for the N-level tests (issue 9). See hosts.py."""
