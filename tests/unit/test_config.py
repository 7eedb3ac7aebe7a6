from pathlib import Path

import pytest

from criservice import config as cfg
from criservice.config_template import DEFAULT_CONFIG


def test_default_text_is_the_default_config() -> None:
    assert cfg.loads(DEFAULT_CONFIG) == cfg.Config()


def test_missing_default_file_means_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cfg, "DEFAULT_CONFIG_PATH", tmp_path / "absent.toml")
    assert cfg.load() == cfg.Config()


def test_explicit_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(cfg.ConfigError, match="absent.toml: no such file"):
        cfg.load(tmp_path / "absent.toml")


def test_dropins_merge_in_lexical_order(tmp_path: Path) -> None:
    main = tmp_path / "criservice.toml"
    main.write_text('[log]\nlevel = "debug"\n[runtime.handlers.kata]\npath = "/usr/bin/kata"\n')
    (tmp_path / "criservice.toml.d").mkdir()
    (tmp_path / "criservice.toml.d" / "20-b.toml").write_text('[log]\nformat = "json"\nlevel = "error"\n')
    (tmp_path / "criservice.toml.d" / "10-a.toml").write_text('[log]\nlevel = "warning"\n')
    (tmp_path / "criservice.toml.d" / "ignored.txt").write_text('nonsense')
    c = cfg.load(main)
    assert (c.log.level, c.log.format) == ("error", "json")
    # Tables merge: the new handler joins the built-in ones.
    assert set(c.runtime.handlers) == {"runc", "crun", "kata"}
    assert c.runtime.handlers["kata"].path == "/usr/bin/kata"


def test_error_names_the_dropin_that_set_the_bad_key(tmp_path: Path) -> None:
    main = tmp_path / "c.toml"
    main.write_text('[streaming]\nport = 10010\n')
    (tmp_path / "c.toml.d").mkdir()
    bad = tmp_path / "c.toml.d" / "50-bad.toml"
    bad.write_text('[streaming]\nport = 70000\n')
    with pytest.raises(cfg.ConfigError) as e:
        cfg.load(main)
    assert (e.value.file, e.value.key) == (str(bad), "streaming.port")
    assert "0-65535" in e.value.reason


@pytest.mark.parametrize("text, key, reason", [
    ('[api]\nsockt = "/x"', "api.sockt", "unknown key"),
    ('[nosuch]\na = 1', "nosuch", "unknown key"),
    ('[api]\nsocket = "relative.sock"', "api.socket", "absolute path"),
    ('[runtime]\ncgroup_driver = "cgroupv3"', "runtime.cgroup_driver", "one of cgroupfs, systemd"),
    ('[runtime]\ndefault_handler = "kata"', "runtime.default_handler", "names no handler"),
    ('[runtime.handlers.kata]\nroot = "/run/kata"', "runtime.handlers.kata.path", "must not be empty"),
    ('[streaming]\nport = "80"', "streaming.port", "must be an integer"),
    ('[streaming]\naddress = "localhost"', "streaming.address", "IP address"),
    ('[metrics]\naddress = "9090"', "metrics.address", "HOST:PORT"),
    ('[log]\nlevel = "verbose"', "log.level", "one of"),
    ('[image]\nmax_concurrent_downloads = 0', "image.max_concurrent_downloads", "at least 1"),
    ('[image.registries."docker.io"]\nmirrors = ["127.0.0.1:5000"]',
     "image.registries.docker.io.mirrors", "http:// or https:// URL"),
    ('[image.registries."docker.io/library"]\ninsecure = true',
     "image.registries.docker.io/library", "registry host"),
    ('[cni]\nbin_dirs = "/usr/lib/cni"', "cni.bin_dirs", "must be an array"),
    ('[image.registries."x"]\ninsecure = "yes"', "image.registries.x.insecure", "true or false"),
])
def test_bad_values_name_file_key_and_reason(tmp_path: Path, text: str, key: str, reason: str) -> None:
    f = tmp_path / "criservice.toml"
    f.write_text(text)
    with pytest.raises(cfg.ConfigError) as e:
        cfg.load(f)
    assert e.value.file == str(f)
    assert e.value.key == key
    assert reason in e.value.reason
    assert str(e.value).startswith(f"{f}: {key}: ")


def test_invalid_toml(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text("[api\n")
    with pytest.raises(cfg.ConfigError, match="invalid TOML"):
        cfg.load(f)


def test_derived_paths() -> None:
    c = cfg.loads('[paths]\nstate_dir = "/s"\nrun_dir = "/r"\n')
    assert c.image_root == "/s/images"
    assert c.handler_root("runc") == "/r/runc"
