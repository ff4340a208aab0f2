"""``python -m neurogate``: the same command line as the ``neurogate`` console script."""

from neurogate.cli.main import main

if __name__ == "__main__":
    main()
