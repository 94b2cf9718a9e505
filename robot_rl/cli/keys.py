"""``robot-rl keys generate``: ZMQ CURVE key pairs for actors, learners, servers and cameras."""

from __future__ import annotations

import argparse
from pathlib import Path

from robot_rl.cli.errors import CliError


def add(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("keys", help="manage ZMQ CURVE keys for actors and learners")
    actions = parser.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    gen = actions.add_parser("generate", help="create NAME.key (public) and NAME.key_secret")
    gen.add_argument("--dir", type=Path, default=Path("keys"), help="folder (default keys/)")
    gen.add_argument("--name", required=True, help="e.g. learner, actor-1")
    gen.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    from robot_rl.transport.security import generate_keys

    try:
        public, secret = generate_keys(args.dir, args.name)
    except (FileExistsError, ValueError) as exc:
        raise CliError(str(exc)) from None
    print(f"public key: {public} (copy it to the peers that must trust {args.name})")
    print(f"secret key: {secret} (keep it on this machine; mode 0600)")
    return 0
