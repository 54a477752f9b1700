"""The command line: each subcommand's flags parsed and checked, errors printed as one line.

The layer above the library: nothing below `cli/` imports it (tests/test_layers.py).
"""
