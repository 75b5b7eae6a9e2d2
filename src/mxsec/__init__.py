"""mxsec: mail transport security for both ends of SMTP (MTA-STS, DANE, TLSRPT)."""

__version__ = "0.1.0"
