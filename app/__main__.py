"""`python -m app` is the `sidekiq-supervisor` command."""

from app.cli.main import main

main()
