"""Entry point: ``python -m experiments COMMAND ...``; see ``experiments.cli``."""

import sys

from experiments import cli

if __name__ == '__main__':
  sys.exit(cli.main())
