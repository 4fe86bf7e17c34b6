"""Entry point: `python -m experiments COMMAND ...`."""

import sys

from experiments import cli

if __name__ == "__main__":
  sys.exit(cli.main())
