"""`python -m orchestrator.interfaces.cli`: the `maker` command."""

import sys

from orchestrator.interfaces.cli import main

sys.exit(main())
