"""``python -m rescuekit``: the entry point used inside WinPE."""
from rescuekit.cli import main

if __name__ == "__main__":
    main()
