"""Measurements of the Flower runtime: ``ilora bench flower`` and ``ilora bench flower-parity``.

The only part of ``ilora.bench`` that imports ``flwr`` and ``ilora.flower`` (as the
``ilora.flower`` package does); the rest of the package runs without Flower installed.
"""
