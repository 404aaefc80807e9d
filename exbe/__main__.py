"""`python -m exbe` is the `exbe` command."""

from exbe.main import main

main()
