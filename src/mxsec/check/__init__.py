"""mxsec.check: the domain checker. ``gather`` collects facts (async adapters), ``rules`` judges them (pure),
``findings`` holds the catalogue of stable codes, ``report`` renders JSON, terminal and HTML."""
