"""Drive the node dashboard in Debian's headless Chromium (selenium + chromium-driver).

Importable (the fast page test) and runnable as a script (the netns test runs it inside the node's
namespace, where the dashboard listens on loopback)::

    python tests/dashboard_browser.py URL TOKEN OUT_DIR [NEW_PRICE]

prints one JSON object: what the page showed, the messages of the controls, the screenshots' paths.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

#: Flags that work on these machines (the environment notes): no GPU, no sandbox as root, and no
#: background connections (a closed network refuses them, many at a time).
CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage", "--window-size=1400,1800")


def _driver(profile: str):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    return webdriver.Chrome(service=Service(executable_path="/usr/bin/chromedriver"), options=options)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # noqa: BLE001 - the element is being re-rendered by the poll
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _read(driver) -> dict:
    from selenium.webdriver.common.by import By

    wei = lambda element_id: driver.find_element(By.ID, element_id).get_attribute("data-wei")  # noqa: E731
    sessions = []
    for row in driver.find_elements(By.CSS_SELECTOR, "#sessions tr"):
        cells = row.find_elements(By.TAG_NAME, "td")
        sessions.append({"channel_id": row.get_attribute("data-channel"),
                         "rx_bytes": int(cells[2].get_attribute("data-bytes")),
                         "tx_bytes": int(cells[3].get_attribute("data-bytes")), "rate": cells[4].text,
                         "paid_amount": cells[6].get_attribute("data-wei")})
    return {
        "node_id": driver.find_element(By.ID, "node-id").text,
        "registered": driver.find_element(By.ID, "registered").text,
        "price_per_gib": wei("price"), "stake": wei("stake"),
        "score_bps": driver.find_element(By.ID, "score").get_attribute("data-bps"),
        "revoked": driver.find_element(By.ID, "revoked").text,
        "totals": {k: wei(f"total-{k}") for k in ("earned", "settled", "unsettled", "fee", "net")},
        "sessions": sessions,
        # Chartist draws each bar as an SVG line with its figure in ct:meta ("<day> <series> <wei or gas>").
        "chart_bars": len(driver.find_elements(By.CSS_SELECTOR, "#chart svg line.ct-bar")),
        "gas_bars": len(driver.find_elements(By.CSS_SELECTOR, "#gas-chart svg line.ct-bar")),
        "chart_figures": [bar.get_attribute("ct:meta") for bar in
                          driver.find_elements(By.CSS_SELECTOR, "#chart svg line.ct-bar, #gas-chart svg line.ct-bar")],
        "settlement_rows": len(driver.find_elements(By.CSS_SELECTOR, "#settlements tr")),
        "policy": driver.find_element(By.ID, "policy").text,
    }


def _submit_price(driver, text: str) -> tuple[str, str]:
    from selenium.webdriver.common.by import By

    box = driver.find_element(By.ID, "price-input")
    box.clear()
    box.send_keys(text)
    driver.find_element(By.ID, "price-button").click()
    alert = _wait(lambda: driver.switch_to.alert, 10, "the confirmation dialog")
    question = alert.text
    alert.accept()
    message = driver.find_element(By.ID, "message")
    _wait(lambda: message.get_attribute("class") in ("ok", "error") and message.text != "sending…", 60,
          "the control's answer")
    return question, f"{message.get_attribute('class')}: {message.text}"


def drive(url: str, token: str, out_dir: str | Path, new_price: int | None = None,
          wait_for_traffic: bool = False) -> dict:
    """Log in, read the page (after two polls, so rates show), screenshot; optionally change the price."""
    from selenium.webdriver.common.by import By

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="warren-chromium-") as profile:
        driver = _driver(profile)
        try:
            driver.get(f"{url}/?token={token}")
            result["address"] = driver.current_url  # the token left the address bar
            _wait(lambda: driver.find_element(By.TAG_NAME, "body").get_attribute("data-loaded") == "1", 30,
                  "the page's first data")
            _wait(lambda: driver.find_elements(By.CSS_SELECTOR, "#gas-chart svg line.ct-bar")
                  or driver.find_element(By.ID, "chart-empty").is_displayed(), 10, "the earnings chart drawn")
            if wait_for_traffic:
                _wait(lambda: any(c.text.endswith("Mbit/s") and not c.text.startswith("0.00")
                                  for c in driver.find_elements(By.CSS_SELECTOR, "#sessions td.rate")), 30,
                      "a live session's rate")
            result["page"] = _read(driver)
            result["screenshot"] = str(out_dir / "dashboard.png")
            driver.save_screenshot(result["screenshot"])
            if new_price is not None:
                result["bad_price"] = _submit_price(driver, "twelve")[1]
                result["question"], result["price_message"] = _submit_price(driver, str(new_price))
                _wait(lambda: driver.find_element(By.ID, "price").get_attribute("data-wei") == str(new_price), 30,
                      "the new price on the page")
                result["after"] = _read(driver)
                result["screenshot_after"] = str(out_dir / "dashboard-after-price.png")
                driver.save_screenshot(result["screenshot_after"])
        finally:
            driver.quit()
    return result


if __name__ == "__main__":
    url, token, out = sys.argv[1:4]
    price = int(sys.argv[4]) if len(sys.argv) > 4 else None
    print(json.dumps(drive(url, token, out, price, wait_for_traffic=price is not None)))
