"""`python -m mediad` runs the command line."""

from mediad.cli import main

raise SystemExit(main())
