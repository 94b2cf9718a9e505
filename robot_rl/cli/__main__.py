"""``python -m robot_rl.cli ...`` runs the CLI (as ``python -m robot_rl`` and ``robot-rl`` do)."""

import sys

from robot_rl.cli import main

sys.exit(main())
