"""The dashboard page in Debian's headless Chromium over a fake view: it renders the view's numbers,
its rate column moves, and the price control reaches the view (confirmed, refusals shown in words)."""

import sys
from pathlib import Path

import pytest

from agents.errors import UserError
from agents.metrics import ListenSettings
from agents.node.dashboard import ensure_token, make_app, serve

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dashboard_browser import drive  # noqa: E402

TOKEN = 10**18


class MovingView:
    """Numbers as the real view gives them (amounts as strings); the session's bytes grow per poll."""

    def __init__(self):
        self.price, self.polls = 2 * TOKEN, 0

    def overview(self):
        self.polls += 1
        moved = self.polls * 5_000_000
        return {
            "now": 1_790_000_000.0 + self.polls * 2,
            "chain": {"node_id": "0x" + "ab" * 32, "registered": True, "active": True, "operator": "0x" + "11" * 20,
                      "region": "NL", "price_per_gib": str(self.price), "stake": str(100 * TOKEN),
                      "unbond_at": 0, "score_bps": 9_500, "reports": 3, "revoked": False,
                      "operator_balance": str(900 * TOKEN), "fee_bps": 100},
            "live": {"uptime_s": 10, "pending": 0, "price_per_gib": str(self.price),
                     "sessions": [{"client": "k1", "channel_id": "cd" * 32, "rx_bytes": moved // 20,
                                   "tx_bytes": moved, "billed_bytes": moved, "paid_bytes": moved,
                                   "paid_amount": "123456789"}],
                     "counters": {}, "refusals": {}, "receipt_refusals": {}, "unsettled_amount": "7", "last_error": None},
            "earnings": {"total": {"earned": str(3 * TOKEN), "settled": str(2 * TOKEN), "unsettled": str(TOKEN),
                                   "fee": str(3 * TOKEN // 100), "net": str(3 * TOKEN - 3 * TOKEN // 100)},
                         "days": [{"day": "2026-12-03", "earned": str(2 * TOKEN), "settled": str(2 * TOKEN),
                                   "unsettled": "0", "fee": str(2 * TOKEN // 100), "gas": 61_882, "receipts": 9},
                                  {"day": "2026-12-04", "earned": str(TOKEN), "settled": "0",
                                   "unsettled": str(TOKEN), "fee": str(TOKEN // 100), "gas": 0, "receipts": 4}],
                         "channels": []},
            "settlements": [{"channel_id": "0x" + "cd" * 32, "amount": str(2 * TOKEN), "bytes": 1, "tx_hash": "0x" + "ef" * 32,
                             "gas": 61_882, "status": "confirmed", "reason": None, "at": 1_790_000_000.0}],
            "reports": [{"block": 9, "epoch": 1, "challenger": "0x" + "22" * 20, "throughput_kbps": 90_000,
                         "latency_ms": 3, "passed": True, "score": 9_500, "tx_hash": "0x1"}],
            "policy": {"allow_ports": [80, 443]},
        }

    def set_price(self, wei):
        if wei == self.price:
            raise UserError(f"the price is already {wei} token wei per GiB")
        self.price = wei
        return {"message": f"price changed to {wei} token wei per GiB", "tx_hash": "0x" + "99" * 32}


def test_page__fake_view__numbers_shown_and_price_control_works(tmp_path):
    view = MovingView()
    server = serve(ListenSettings(True, ("127.0.0.1", 0)), make_app(view, ensure_token(tmp_path)))
    try:
        result = drive(f"http://127.0.0.1:{server.listen[1]}", ensure_token(tmp_path), tmp_path, new_price=3 * TOKEN,
                       wait_for_traffic=True)
    finally:
        server.close()
    page = result["page"]
    assert "token" not in result["address"]
    assert page["node_id"] == "0x" + "ab" * 32 and page["registered"] == "yes, active"
    assert page["stake"] == str(100 * TOKEN) and page["price_per_gib"] == str(2 * TOKEN) and page["score_bps"] == "9500"
    assert page["totals"] == {"earned": str(3 * TOKEN), "settled": str(2 * TOKEN), "unsettled": str(TOKEN),
                              "fee": str(3 * TOKEN // 100), "net": str(3 * TOKEN - 3 * TOKEN // 100)}
    assert page["chart_bars"] == 6 and page["gas_bars"] == 2 and page["settlement_rows"] == 1
    # Chartist's SVG: series by series (settled, unsettled, fee), then gas; each bar carries its figure.
    assert page["chart_figures"] == [
        f"2026-12-03 settled {2 * TOKEN}", "2026-12-04 settled 0", "2026-12-03 unsettled 0",
        f"2026-12-04 unsettled {TOKEN}", f"2026-12-03 fee {2 * TOKEN // 100}", f"2026-12-04 fee {TOKEN // 100}",
        "2026-12-03 gas 61882", "2026-12-04 gas 0"]
    (session,) = page["sessions"]
    assert session["paid_amount"] == "123456789" and session["rate"].endswith("Mbit/s")
    assert result["bad_price"] == "error: a price is a whole number of token wei per GiB, not 'twelve'"
    assert result["question"].startswith(f"Change the price to {3 * TOKEN} token wei per GiB?")
    assert result["price_message"].startswith(f"ok: price changed to {3 * TOKEN} token wei per GiB (transaction 0x99")
    assert result["after"]["price_per_gib"] == str(3 * TOKEN) and view.price == 3 * TOKEN
    assert Path(result["screenshot"]).stat().st_size > 10_000
