"""The ClientApp: one client of the experiment, chosen by the SuperNode's ``partition-id``."""

from ilora.flower.client import make_client_app

app = make_client_app()
