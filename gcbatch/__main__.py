"""``python -m gcbatch``."""

from gcbatch.cli import main

if __name__ == "__main__":
    main()
