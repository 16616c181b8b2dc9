"""Prices: from the configuration, from the genai-prices database, or unknown (never $0)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from pipeline.config._load import load_config, unpriced_endpoints
from pipeline.errors import ConfigError
from pipeline.llm._pricing import FREE, Price, lookup_price

DAY = datetime.date(2026, 12, 1)


def test_a_model_the_database_knows_at_its_provider_is_priced_with_source_and_date() -> None:
    price = lookup_price("gpt-5-mini", "https://api.openai.com/v1", on=DAY)
    assert price is not None
    assert price.input_per_mtok > 0
    assert price.output_per_mtok > price.input_per_mtok
    assert price.source.startswith("genai-prices ")
    assert "openai gpt-5-mini" in price.source
    assert price.as_of == "2026-12-01"
    assert "as of 2026-12-01" in price.summary()


def test_batch_and_cached_input_prices_are_read_where_the_database_has_them() -> None:
    price = lookup_price("gpt-4o-mini", "https://api.openai.com/v1", on=DAY)
    assert price is not None
    assert price.batch_input_per_mtok == pytest.approx(price.input_per_mtok / 2)
    assert price.batch_output_per_mtok == pytest.approx(price.output_per_mtok / 2)
    assert price.cached_input_per_mtok is not None
    assert price.cached_input_per_mtok < price.input_per_mtok


def test_a_proxy_serving_a_known_model_is_priced_by_the_model_name() -> None:
    price = lookup_price("claude-haiku-4-5", "http://127.0.0.1:4000/v1", on=DAY)
    direct = lookup_price("claude-haiku-4-5", "https://api.anthropic.com/v1", on=DAY)
    assert price is not None
    assert direct is not None
    assert (price.input_per_mtok, price.output_per_mtok) == (
        direct.input_per_mtok,
        direct.output_per_mtok,
    )
    assert "matched by model name" in price.source


def test_a_model_nobody_prices_is_unknown_not_free() -> None:
    assert lookup_price("my-finetune-7b", "http://127.0.0.1:8080/v1", on=DAY) is None


def test_long_context_tiers_charge_the_whole_request_at_the_tier_rate() -> None:
    price = Price(input_per_mtok=3.0, output_per_mtok=15.0, tiers=((200_000, 6.0, 22.5),))
    assert price.cost(1_000, 1_000) == pytest.approx(0.018)
    assert price.cost(300_000, 1_000) == pytest.approx(300_000 * 6e-6 + 1_000 * 22.5e-6)


def test_negative_rates_are_refused() -> None:
    with pytest.raises(ValueError, match=">= 0"):
        Price(input_per_mtok=1.0, batch_output_per_mtok=-1.0)


# --- configuration ---------------------------------------------------------------------------


def config_file(tmp_path: Path, endpoint: str, run: str = "") -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(f'{{"input": "Q{i}?", "target": "yes"}}\n' for i in range(12)), encoding="utf-8"
    )
    path = tmp_path / "run.toml"
    path.write_text(
        f"[run]\n{run}\n[endpoints.local]\n{endpoint}\n"
        '[[jobs]]\ndata = "data.jsonl"\ndev_size = 4\ntest_size = 4\n',
        encoding="utf-8",
    )
    return path


LOCAL = 'model = "my-finetune-7b"\nbase_url = "http://127.0.0.1:8080/v1"\napi_key_env = ""'


def test_a_usd_cap_with_an_unknown_price_is_refused_naming_the_ways_out(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, LOCAL, run="budget_usd = 1.0"), env={})
    with pytest.raises(ConfigError) as info:
        unpriced_endpoints(config)
    message = str(info.value)
    assert "endpoints.local" in message
    assert "'my-finetune-7b'" in message
    assert "price = {" in message
    assert 'price = "free"' in message
    assert "\n" not in message


def test_a_job_usd_cap_with_an_unknown_price_is_refused(tmp_path: Path) -> None:
    path = config_file(tmp_path, LOCAL)
    path.write_text(path.read_text() + "budget_usd = 0.5\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="no price is known"):
        unpriced_endpoints(load_config(path, env={}))


def test_without_a_usd_cap_an_unknown_price_is_listed_not_refused(tmp_path: Path) -> None:
    config = load_config(config_file(tmp_path, LOCAL, run="budget_tokens = 100000"), env={})
    assert [e.name for e in unpriced_endpoints(config)] == ["local"]


def test_price_free_marks_a_local_server_as_billing_nothing(tmp_path: Path) -> None:
    endpoint = LOCAL + '\nprice = "free"'
    config = load_config(config_file(tmp_path, endpoint, run="budget_usd = 1.0"), env={})
    assert unpriced_endpoints(config) == []
    assert config.endpoint("local").effective_price == FREE


def test_a_configured_price_wins_and_takes_batch_and_cached_rates(tmp_path: Path) -> None:
    endpoint = (
        'model = "gpt-4o-mini"\napi_key_env = ""\nprice = { input_per_mtok = 1, '
        "output_per_mtok = 2, cached_input_per_mtok = 0.5, batch_input_per_mtok = 0.5, "
        "batch_output_per_mtok = 1 }"
    )
    price = load_config(config_file(tmp_path, endpoint), env={}).endpoint("local").effective_price
    assert price == Price(
        input_per_mtok=1.0,
        output_per_mtok=2.0,
        cached_input_per_mtok=0.5,
        batch_input_per_mtok=0.5,
        batch_output_per_mtok=1.0,
        source="config",
    )


def test_a_price_that_is_neither_free_nor_a_table_names_both_forms(tmp_path: Path) -> None:
    path = config_file(tmp_path, LOCAL + '\nprice = "cheap"')
    with pytest.raises(ConfigError, match=r'endpoints\.local\.price: expected "free" or a table'):
        load_config(path, env={})


def test_a_simulator_endpoint_is_free_by_default(tmp_path: Path) -> None:
    path = config_file(tmp_path, 'kind = "simulator"', run="budget_usd = 1.0")
    config = load_config(path, env={})
    assert unpriced_endpoints(config) == []
    assert config.endpoint("local").effective_price == FREE
