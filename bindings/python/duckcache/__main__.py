"""`python -m duckcache`: moving a directory between the original module's layout and
duckcache's.

    python -m duckcache migrate DIR    # the original's entries into duckcache (as an open does)
    python -m duckcache rollback DIR   # duckcache's entries back into the original's layout
"""

import argparse
import sys

from . import migrate, rollback


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m duckcache", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="import a directory the original module wrote").add_argument("dir")
    back = commands.add_parser(
        "rollback",
        help="rewrite a directory duckcache wrote in the original's layout (stop its users first)",
    )
    back.add_argument("dir")
    args = parser.parse_args(argv)
    try:
        if args.command == "migrate":
            print(f"{migrate(args.dir)} entries imported into {args.dir}")
        else:
            done = rollback(args.dir)
            print(
                f"{done.written} entries written in the original's layout in {args.dir}"
                f" ({done.skipped} skipped); duckcache's files kept in {done.kept_in}"
            )
    except (OSError, ValueError, ImportError) as e:
        print(f"python -m duckcache {args.command}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
