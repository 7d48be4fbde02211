"""``python -m marketarena.cli``: the same as the ``marketarena`` command."""

import sys

from marketarena.cli.app import main

sys.exit(main())
