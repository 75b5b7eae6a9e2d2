"""SMTP TLS Reporting (RFC 8460). Sans-I/O parts live here; see :mod:`mxsec.tlsrpt.record`."""
