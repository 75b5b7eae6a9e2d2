"""Receiving TLSRPT reports: inputs (files, messages, mbox, Maildir, IMAP, HTTPS POST), summaries and the
dashboard. Parsing is in :mod:`mxsec.tlsrpt`; storage in :mod:`mxsec.storage.reportdb`."""
