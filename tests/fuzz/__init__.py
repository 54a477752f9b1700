"""The fuzz suite: hostile input through every front end (see harness.py)."""
