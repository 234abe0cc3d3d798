"""``python -m services.admin``: enroll, revoke and list nodes (see :mod:`services.admin.cli`)."""

import sys

from services.admin.cli import main

sys.exit(main())
