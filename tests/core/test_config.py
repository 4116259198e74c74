import pytest

from studio.core.config import load_settings
from studio.core.errors import ConfigError


def test_lookup_order_flag_env_file_default(tmp_path, monkeypatch):
    assert load_settings().steps == 25
    (tmp_path / "studio.toml").write_text('steps = 30\nsampler = "Euler a"\n')
    assert load_settings().steps == 30
    (tmp_path / ".env").write_text("STUDIO_STEPS=35\n")
    assert load_settings().steps == 35
    monkeypatch.setenv("STUDIO_STEPS", "40")
    assert load_settings().steps == 40
    settings = load_settings({"steps": 45, "cfg": None})
    assert (settings.steps, settings.sampler, settings.cfg) == (45, "Euler a", 7.0)


def test_bad_values_name_the_setting_and_source(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_STEPS", "many")
    with pytest.raises(ConfigError, match="STUDIO_STEPS sets steps to 'many'"):
        load_settings()
    monkeypatch.delenv("STUDIO_STEPS")
    (tmp_path / "studio.toml").write_text("stepz = 3\n")
    with pytest.raises(ConfigError, match=r"unknown keys \['stepz'\]"):
        load_settings()
    (tmp_path / "studio.toml").unlink()
    with pytest.raises(ConfigError, match="`steps` has to be between 1 and 150 but is 0"):
        load_settings({"steps": 0})
