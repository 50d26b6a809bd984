"""``ilora flower new`` and ``ilora flower certs``: checked with flwr's own loaders.

The app must pass the validation ``flwr run`` applies (``load_and_validate`` with the module
check) and build into a FAB holding the experiment; the run config must give back the config
it was made from. The credentials must load the way ``flwr supernode register`` and
``flower-supernode --auth-supernode-private-key`` load them, and the SuperLink's certificate
must chain to the CA and name 127.0.0.1 and localhost.
"""

from __future__ import annotations

import datetime
import io
import stat
import tomllib
import zipfile
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from flwr.cli.build import build_fab_from_disk
from flwr.cli.config_utils import load_and_validate
from flwr.cli.supernode.register import try_load_public_key
from flwr.common.config import get_fab_config
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from typer.testing import CliRunner

from ilora import config as config_mod
from ilora.cli import app as cli
from ilora.config import ConfigError
from ilora.flower.app import AppExistsError
from ilora.flower.app import write_app
from ilora.flower.certs import CredentialsExistError
from ilora.flower.certs import make_trial_credentials
from ilora.flower.server import config_from_run_config

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ROOT / "configs" / "smoke.yaml"
EXAMPLE = ROOT / "examples" / "flower-app"


def test_new_app_passes_flowers_checks_and_gives_back_its_config(tmp_path: Path) -> None:
    app = tmp_path / "my-app"
    write_app(app, SMOKE, ["fed.rounds=3", "data.num_clients=3"], out="/results/x", timeout=30)
    config, warnings = load_and_validate(app / "pyproject.toml", check_module=True)
    assert warnings == []
    flwr_app = config["tool"]["flwr"]["app"]
    run_config = flwr_app["config"]
    assert run_config == {
        "config": "experiment.yaml",
        "set": "fed.rounds=3 data.num_clients=3",
        "out": "/results/x",
        "timeout": 30.0,
        "resume": False,  # so that `--run-config resume=true` may override it
    }
    fab = build_fab_from_disk(app)
    names = zipfile.ZipFile(io.BytesIO(fab)).namelist()
    for name in ("experiment.yaml", "ilora_app/server_app.py", "ilora_app/client_app.py"):
        assert name in names
    assert get_fab_config(fab)["tool"]["flwr"]["app"]["components"] == flwr_app["components"]
    got = config_from_run_config(run_config, app)
    want = config_mod.load(SMOKE, ["fed.rounds=3", "data.num_clients=3"])
    assert config_mod.to_dict(got) == config_mod.to_dict(want)


def test_new_app_refuses_what_it_cannot_keep(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without spaces"):
        write_app(tmp_path / "a", SMOKE, ["lora.ranks=[2, 4]"])
    with pytest.raises(ConfigError):
        write_app(tmp_path / "b", SMOKE, ["fed.no_such_key=1"])
    assert not (tmp_path / "b" / "pyproject.toml").exists()
    write_app(tmp_path / "c", SMOKE)
    with pytest.raises(AppExistsError):
        write_app(tmp_path / "c", SMOKE)


def test_committed_example_is_what_the_command_writes(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["flower", "new", str(tmp_path / "flower-app"), "--config", "configs/smoke.yaml"]
    )
    assert result.exit_code == 0, result.output
    new = tmp_path / "flower-app"
    made = sorted(p.relative_to(new) for p in new.rglob("*") if p.is_file())
    committed = sorted(
        p.relative_to(EXAMPLE)
        for p in EXAMPLE.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    assert made == committed
    for rel in made:
        want = (new / rel).read_text().replace(str(new), "examples/flower-app")
        assert (EXAMPLE / rel).read_text() == want, rel


def _san(cert: x509.Certificate) -> set[str]:
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return ips | set(names.get_values_for_type(x509.DNSName))


def test_trial_credentials_load_as_flower_loads_them(tmp_path: Path) -> None:
    made = make_trial_credentials(tmp_path, nodes=2, days=2, hosts=["10.0.0.5", "link.lan"])
    ca = x509.load_pem_x509_certificate(made.ca.read_bytes())
    server = x509.load_pem_x509_certificate(made.server_cert.read_bytes())
    server.verify_directly_issued_by(ca)
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert _san(server) == {"127.0.0.1", "::1", "localhost", "10.0.0.5", "link.lan"}
    valid = server.not_valid_after_utc - server.not_valid_before_utc
    assert datetime.timedelta(days=2) <= valid <= datetime.timedelta(days=2, minutes=10)
    assert len(made.node_keys) == 2
    publics = set()
    for private_path, public_path in made.node_keys:
        private = load_ssh_private_key(private_path.read_bytes(), None)
        assert isinstance(private, ec.EllipticCurvePrivateKey)
        assert private.curve.name == "secp384r1"
        assert try_load_public_key(public_path) == public_key_to_bytes(private.public_key())
        assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
        publics.add(public_path.read_bytes())
    assert len(publics) == 2
    assert stat.S_IMODE(made.server_key.stat().st_mode) == 0o600
    assert "LOCAL TRIAL ONLY" in (tmp_path / "README.md").read_text()
    with pytest.raises(CredentialsExistError):
        make_trial_credentials(tmp_path, nodes=1)


def test_certs_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["flower", "certs", str(tmp_path / "c"), "--nodes", "3"])
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "c" / "nodes").glob("node-*.pub"))) == 3
    again = CliRunner().invoke(cli, ["flower", "certs", str(tmp_path / "c")])
    assert again.exit_code == 2 and "--force" in again.output


def test_one_flower_pin_matches_what_is_installed() -> None:
    import flwr

    from ilora.flower import FLWR_VERSION

    project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
    wanted = f"flwr[simulation]=={FLWR_VERSION}"
    requirements = [*project["optional-dependencies"]["flower"]]
    requirements += [r for r in project["optional-dependencies"]["dev"] if r.startswith("flwr")]
    assert requirements == [wanted, wanted]
    assert flwr.__version__ == FLWR_VERSION
    app = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())
    assert app["project"]["dependencies"] == [f"flwr=={FLWR_VERSION}"]


def test_worker_runs_only_the_clientapp_of_an_ilora_app(tmp_path: Path) -> None:
    from ilora.flower.worker import ForeignAppError
    from ilora.flower.worker import check_fab

    app = tmp_path / "app"
    write_app(app, SMOKE)
    check_fab(build_fab_from_disk(app))  # what `ilora flower new` writes: accepted
    pyproject = app / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace("ilora_app.client_app:app", "ilora_app.evil:app")
    )
    (app / "ilora_app" / "evil.py").write_text("app = None\n")
    with pytest.raises(ForeignAppError, match="only ILoRA apps"):
        check_fab(build_fab_from_disk(app))
