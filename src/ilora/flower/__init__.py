"""The Flower runtime: the same algorithms on Flower's message API (``pip install ilora[flower]``).

``codec`` maps our boundary types onto Flower records, ``strategy.AlgorithmStrategy`` drives any
registered algorithm from a ``ServerApp``, ``client.make_client_app`` runs the one local training
loop in a ``ClientApp``, and ``grid.LocalGrid`` delivers messages in-process (tests, debugging).
Only this package imports ``flwr``; the core never does.
"""

FLWR_VERSION = "1.42.0"  # the one Flower release this package is pinned to (pyproject.toml)
