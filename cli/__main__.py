"""`python -m cli ...` is `runbooks ...`."""

import sys

from cli.main import main

sys.exit(main())
