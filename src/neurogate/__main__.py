"""``python -m neurogate``: the same command line as the ``neurogate`` console script."""

from neurogate.cli.main import entry

if __name__ == "__main__":
    entry()
