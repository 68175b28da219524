"""Debian's Chromium, headless, driven by Selenium through Debian's chromedriver.

Both come from the same Debian source package, so the driver always matches the browser;
with the driver's path given, Selenium never runs Selenium Manager, so nothing downloads a
browser or a driver. Where they are missing and the tests run as root (CI), they are
installed with apt, as the other Debian packages the tests need.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from support.tools import apt_install

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
# Headless, and nothing that reaches out: no sync, updates, field trials or QUIC probes.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage", "--hide-scrollbars")


def missing() -> str | None:
    """Why the browser cannot run here (after trying to install it), or None."""
    if CHROMIUM.exists() and CHROMEDRIVER.exists():
        return None
    if os.geteuid() != 0:
        return f"{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install chromium chromium-driver (as root)"
    apt_install(["chromium", "chromium-driver"], "no apt-get: install Debian's chromium and chromium-driver")
    return None if CHROMIUM.exists() and CHROMEDRIVER.exists() else "apt installed no chromium/chromedriver"


@contextmanager
def chromium(width: int = 1400, height: int = 900) -> Iterator:
    """A headless Chromium (a Selenium WebDriver) with a fresh profile, always quit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rtvi-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--window-size={width},{height}", f"--user-data-dir={profile}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
