from tokenops.cli import app

app()
