"""``python -m parallel_setup.fake_github``."""

import sys

from .cli import main

sys.exit(main())
