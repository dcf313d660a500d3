"""Command-line sub-apps, one module per stage. Each exposes `register(app, build_app)`.

Modules import only typer at the top; the stage's library code is imported inside each command, so start-up
stays small for every command.
"""
STAGE_MODULES = (
    "reasonseg.commands.build",
    "reasonseg.commands.qa",
    "reasonseg.commands.rephrase",
    "reasonseg.commands.predict",
    "reasonseg.commands.table",
    "reasonseg.commands.lisa",
    "reasonseg.commands.leaderboard",
    "reasonseg.commands.cache",
)
