"""`python -m parachute.cli`: the same as the `kubectl-parachute` command."""

import sys

from parachute.cli.main import main

sys.exit(main())
