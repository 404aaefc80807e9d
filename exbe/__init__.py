"""exbe: renew, trust, bind, verify and clean up the Exchange Server Back End certificate."""

__version__ = "0.1.0"
