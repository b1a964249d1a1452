"""One module per resource of the API; each handler is ``(ctx, **path parameters) -> Response``.

The route table (``gcbatch/sandbox/routes.py``) says which handler serves which URL and
method; handlers know nothing of routing and reach the sandbox only through ``ctx``.
"""
