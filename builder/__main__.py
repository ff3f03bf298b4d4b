"""``python -m builder``: the host CLI (the ``rescuekit`` console script) run by a given interpreter."""
from builder.cli import main

if __name__ == "__main__":
    main()
