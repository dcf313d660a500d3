"""The ReasonSeg leaderboard: a submission server with hidden test ground truth, its pages, a client and a static
export. Modules: db (storage), intake (what a submission must hold), worker (background scoring), board (the table
as data), render (HTML), app (FastAPI), client (`reasonseg submit`), demo (the demo's leaderboard step).

Importing this package imports nothing heavy; import the module you need.
"""
