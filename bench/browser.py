"""A headless Chromium driven by selenium, for the status page's test and benchmark.

The browser is Debian's ``chromium`` through its ``chromedriver`` (``./scripts/test``
installs both where missing). Selenium blocks: callers in an event loop run its
calls in a thread.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service

# Flags that let Chromium run headless as root on a machine without outside web.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--window-size=1280,1000"]


class BrowserMissing(RuntimeError):
    """chromium or chromedriver is not installed."""


def executable(name: str) -> str:
    path = shutil.which(name) or f"/usr/bin/{name}"
    if not os.access(path, os.X_OK):
        raise BrowserMissing(f"{name} is not installed; ./scripts/test installs it with "
                             "'apt-get install chromium chromium-driver' (as root)")
    return path


def chromium(profile: Path) -> webdriver.Chrome:
    """A fresh headless Chromium with its profile in ``profile``; the caller quits it."""
    options = Options()
    options.binary_location = executable("chromium")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable("chromedriver")))
    driver.set_page_load_timeout(30)
    driver.set_script_timeout(10)
    return driver
