"""Reference pages generated from the code: the config reference (pydantic models) and the CLI reference (typer app).

``python -m ai_how.docs_gen`` writes ``docs/reference/{configuration,cli}.md``; ``--check`` exits 1 with a
diff when the committed pages are stale.
"""
