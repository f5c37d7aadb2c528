"""`python -m mediad` runs the command line."""

from mediad.cli import run

run()
