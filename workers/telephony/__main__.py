"""`python -m workers.telephony sync|list|prune`: see workers.telephony.cli."""

import sys

from workers.telephony.cli import main

sys.exit(main())
