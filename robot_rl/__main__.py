"""``python -m robot_rl`` is the ``robot-rl`` command (sessions start their parts this way)."""

import sys

from robot_rl.cli import main

sys.exit(main())
