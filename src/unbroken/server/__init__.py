"""`unbroken ui`: a read-mostly web dashboard over a home's tracking index.

Layers inside this package (imports point down):

    app            the Starlette application: routes, middleware, static files
    routes_*       HTTP endpoints: runs, one trial, actions (POST)
    security       token and Host checks (ASGI middleware)
    documents      the JSON documents (the CLI's --json shapes, reused from unbroken.cli)
    series · lttb  metric columns (cached, incremental), windowing, LTTB, binary encoding
    columns        reading metric columns from the index (a fast SQLite path, a Tracker fallback)
    logs · actions attempt logs by id; verify / export of checkpoints
    config · ids   the server's settings; validation of every id taken from a URL

Only ``app`` and ``routes_*`` import starlette; the rest is plain Python, testable without it.
The web page itself is static (``static/``), with uPlot vendored (MIT, see static/vendor/uplot).
"""
