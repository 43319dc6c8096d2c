"""`lora serve`: a local web page over the library (face layer, optional extra ``serve``).

Starlette routes (``app``) render Jinja2 templates (autoescaped: card and Civitai text is shown, never run) and
a JSON API whose objects are those of `lora list --json` and `lora show --json`. Files are served only from
the library's previews folder, by their content address (``files``). Editing is off unless the server was
started with ``allow_edit``, and then each change needs the token printed at start-up (``edit``).
Nothing here is imported by `lora list`: the command module imports this package inside its function.
"""
