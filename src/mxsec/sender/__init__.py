"""The TLSRPT sender's front-end (``mxsec tlsrpt …``): session collection, report delivery, status.

It composes the sans-I/O core (:mod:`mxsec.tlsrpt.datagram`, :mod:`~mxsec.tlsrpt.session`,
:mod:`~mxsec.tlsrpt.build`) with adapters (the Unix socket, DNS, SMTP, HTTPS) and the sender's database
(:mod:`mxsec.storage.senderdb`).
"""
