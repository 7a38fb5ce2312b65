"""`tokenops access`: make the password hashes and API tokens that access.yaml holds."""

from __future__ import annotations

import sys

import typer

access_app = typer.Typer(
    no_args_is_help=True, help="Make password hashes and API tokens for access.yaml."
)


@access_app.command("hash-password")
def hash_password() -> None:
    """Ask for a password (twice, not echoed; or read one line from a pipe) and print its
    scrypt hash for a user's `password_hash` in access.yaml."""
    from warehouse.access import hash_password as scrypt_hash

    if sys.stdin.isatty():
        password = typer.prompt("password", hide_input=True, confirmation_prompt=True)
    else:
        password = sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        raise typer.BadParameter("use at least 8 characters", param_hint="password")
    typer.echo(scrypt_hash(password))


@access_app.command("new-token")
def new_token(
    name: str = typer.Option(..., help="what the token is for (its name in access.yaml)"),
) -> None:
    """Print a new random API token (give it to its user; it is not stored) and the access.yaml
    entry that accepts it (its SHA-256 only)."""
    from warehouse.access import hash_token
    from warehouse.access import new_token as random_token

    token = random_token()
    typer.echo(f"token: {token}")
    typer.echo("access.yaml entry (set its tenants):")
    typer.echo(f"  - name: {name}\n    sha256: {hash_token(token)}\n    tenants: []")
