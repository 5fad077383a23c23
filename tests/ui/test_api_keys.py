"""The dashboard on a server with API keys: the pages are open, the data asks for a key, which
the page keeps in sessionStorage and sends as a bearer header only, never in a URL (that the
pages themselves need no key is in tests/service/test_auth.py)."""

from tests.ui.conftest import KEY


def test_the_key_is_asked_for_kept_and_sent_only_as_a_header(tab, keyed_server, screenshot):
    page = tab.page
    page.goto(f"{keyed_server}/ui")
    page.wait_for_selector("#key-form")
    assert not [url for url, _ in tab.requests if "/v1/" in url]  # asked before any request for data
    screenshot(page, "key-prompt")
    page.fill("#api-key", "wrong-key")
    page.click("#key-form button")
    page.wait_for_selector("#key-form:has-text('refused')")  # a 401 asks again
    page.fill("#api-key", KEY)
    page.click("#key-form button")
    page.wait_for_selector('tr[data-id="owned"]')
    page.click('a[href="/ui/models/owned"]')
    page.wait_for_function("window.dashboard && window.dashboard.loaded")  # no second prompt: sessionStorage
    assert page.locator("#key-form").count() == 0
    assert page.evaluate("sessionStorage.getItem('gradserve.apiKey')") == KEY
    data = [(url, headers) for url, headers in tab.requests if "/v1/" in url]
    assert data and all(headers.get("authorization") in (f"Bearer {KEY}", "Bearer wrong-key")
                        for _, headers in data)
    for url, _ in tab.requests:
        assert KEY not in url and "wrong-key" not in url, url
    assert not [e for e in tab.errors if e.startswith("uncaught")], tab.errors
    assert [f for f in tab.failures if not f.endswith(": 401")] == []
