"""A command module for the lazy-loading test (it must not be imported until its command is needed)."""

import click


@click.command("hello")
def hello() -> None:
    """Say hello."""
    click.echo("hello")
