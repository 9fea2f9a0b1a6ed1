from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import SecretStr

from fanout.cli import main
from fanout.config import KafkaSettings, load_settings
from fanout.model.errors import ConfigError


def test_defaults_point_at_a_local_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FANOUT_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    s = load_settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert s.topics.subscriptions == "fanout.subscriptions"
    assert s.topics.retry(0) == "fanout.retry.0"
    assert s.topics.dlq == "fanout.dlq" and s.topics.ops == "fanout.ops"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "a:1, b:2")
    monkeypatch.setenv("FANOUT_TOPICS__PREFIX", "acme")
    monkeypatch.setenv("FANOUT_RETRY__TIERS", "[1, 2, 3]")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "a:1,b:2"
    assert s.topics.dlq == "acme.dlq"
    assert s.retry.tiers == [1, 2, 3]


def test_yaml_file_is_read_and_environment_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text(
        "kafka:\n  bootstrap_servers: filehost:9092\n  client_id: from-file\ntopics:\n  partitions: 12\n"
    )
    monkeypatch.setenv("FANOUT_KAFKA__CLIENT_ID", "from-env")
    s = load_settings(cfg)
    assert s.kafka.bootstrap_servers == "filehost:9092"
    assert s.kafka.client_id == "from-env"
    assert s.topics.partitions == 12


def test_librdkafka_dict_carries_sasl_and_ssl() -> None:
    k = KafkaSettings(
        bootstrap_servers="b:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="svc",
        sasl_password=SecretStr("hunter2"),
        ssl_ca_location=Path("/etc/ca.pem"),
        extra={"socket.keepalive.enable": "true"},
    )
    conf = k.librdkafka()
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.username"] == "svc" and conf["sasl.password"] == "hunter2"
    assert conf["ssl.ca.location"] == "/etc/ca.pem"
    assert conf["ssl.endpoint.identification.algorithm"] == "https"
    assert conf["socket.keepalive.enable"] == "true"
    assert "hunter2" not in repr(k)


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "", "kafka.bootstrap_servers"),
        ("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "nohostport", "kafka.bootstrap_servers"),
        ("FANOUT_TOPICS__PARTITIONS", "0", "topics.partitions"),
        ("FANOUT_RETRY__TIERS", "[5, 1]", "retry.tiers"),
        ("FANOUT_KAFKA__SECURITY_PROTOCOL", "SASL_SSL", "kafka"),
    ],
)
def test_invalid_settings_name_the_field(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert f"invalid setting {field}" in str(err.value)


def test_unknown_yaml_key_is_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "fanout.yaml"
    cfg.write_text("kafka:\n  bootstrap_server: typo:9092\n")
    with pytest.raises(ConfigError, match=r"kafka\.bootstrap_server"):
        load_settings(cfg)


def test_cli_exits_2_naming_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANOUT_KAFKA__BOOTSTRAP_SERVERS", "")
    result = CliRunner().invoke(main, ["topics", "describe"])
    assert result.exit_code == 2
    assert "kafka.bootstrap_servers" in result.output
    assert "FANOUT_KAFKA__BOOTSTRAP_SERVERS" in result.output


def test_cli_missing_config_file_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["--config", str(tmp_path / "nope.yaml"), "topics", "describe"])
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_version() -> None:
    from fanout import __version__

    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(
    ("page", "heading"),
    [("README.md", "## A subscription"), ("docs/delivery.md", "## Subscriptions: a routes file")],
)
def test_the_documented_routes_example_is_valid(page: str, heading: str) -> None:
    import re

    import yaml

    from fanout.config import DeliverySettings
    from fanout.control.routes import parse_routes

    text = (Path(__file__).resolve().parents[2] / page).read_text()
    block = re.search(re.escape(heading) + r"\n.*?```yaml\n(.*?)```", text, re.S)
    assert block is not None
    subs = parse_routes(yaml.safe_load(block.group(1)), DeliverySettings())
    assert [s.id for s in subs] == ["crm-users"]
    assert subs[0].rate_limit is not None and subs[0].rate_limit.per_second == 20
