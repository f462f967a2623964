"""``python -m quart_chat.bench ...``: the same as ``quart-chat bench ...``."""

import sys

from . import main

sys.exit(main())
