"""The web side of the TLSRPT receiver (``mxsec reports serve``): a read-only dashboard of the stored reports,
the RFC 8460 §5.4 ``POST /tlsrpt`` endpoint and Prometheus metrics of the stored counts.

* :mod:`.app` builds the Starlette application (:func:`~.app.create_app`) and its security headers;
* :mod:`.pages` holds the HTML pages, :mod:`.figures` the database queries behind them, :mod:`.params` the
  query-string parsing, :mod:`.format` the number and date formatting used by the templates;
* :mod:`.ingest_endpoint` receives reports over HTTPS; :mod:`.metrics` is the Prometheus collector;
* :mod:`.server` runs it all under uvicorn (:func:`~.server.serve`, used by the CLI).
"""
