"""``python -m ilora``: the same command line as the ``ilora`` script."""

from ilora.cli import app

app(prog_name="ilora")
