"""`python -m magflow.cli ...`: the `magflow` command."""

import sys

from magflow.cli import main

sys.exit(main())
