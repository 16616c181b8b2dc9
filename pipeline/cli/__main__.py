"""``python -m pipeline.cli``: the ``gpo`` command."""

import sys

from pipeline.cli._main import main

sys.exit(main())
