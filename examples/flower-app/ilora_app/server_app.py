"""The ServerApp: the experiment in ../experiment.yaml (run config ``config``), any registered algorithm."""

from pathlib import Path

from ilora.flower.server import make_server_app

app = make_server_app(base=Path(__file__).resolve().parent.parent)
