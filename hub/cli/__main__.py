"""``python -m hub.cli``: the ``lydian`` command."""

import sys

from hub.cli.main import main

sys.exit(main())
