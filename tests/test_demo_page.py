"""The demo page: served files, and a real headless browser using it end to end.

The browser test drives Debian's chromium through chromedriver (selenium), on the
shipped model, with the README's astronaut photo. It skips with the reason when
chromium, chromedriver or selenium is missing (``.ci/run`` installs them). Set
``JMLR_DEMO_SCREENSHOT=docs/demo_page.png`` to refresh the README's screenshot, and
``JMLR_DEMO_LIVE_SCREENSHOT=docs/demo_live.png`` for the live camera's.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from jmlr.facemodel.blendshapes import ARKIT_BLENDSHAPE_NAMES
from jmlr.store import make_random_model
from service.app import create_app
from service.routers.demo import STATIC_DIR
from service.settings import Settings

CHROMIUM = os.environ.get("JMLR_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("JMLR_TEST_CHROMEDRIVER", "/usr/bin/chromedriver")
BROWSER_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-sync", "--disable-dev-shm-usage",
                 # WebGL without a GPU: SwiftShader, chromium's own software renderer.
                 "--use-angle=swiftshader", "--enable-unsafe-swiftshader", "--window-size=1280,1400")


# ----------------------------------------------------------------------------- served files


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    store = tmp_path_factory.mktemp("store")
    make_random_model(arch="jmlr_resnet18d", input_size=64, name="tiny", store_dir=store, set_default=True)
    settings = Settings(model_store=store, data_dir=tmp_path_factory.mktemp("var"), device="cpu")
    with TestClient(create_app(settings)) as c:
        yield c


def test_page_and_assets_are_served(client):
    r = client.get("/", follow_redirects=False)
    assert r.status_code in (302, 307) and r.headers["location"] == "/demo"
    page = client.get("/demo")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    refs = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/vendor/model-viewer/model-viewer.min.js" in refs
    for ref in refs:  # everything the page loads comes from this server
        assert not ref.startswith(("http:", "https:", "//")), ref
        if ref.startswith("/static/"):
            assert client.get(ref).status_code == 200, ref
    js = client.get("/static/vendor/model-viewer/model-viewer.min.js")
    assert "javascript" in js.headers["content-type"] and len(js.content) > 500_000
    assert "three.js" in client.get("/static/vendor/model-viewer/LICENSES.txt").text
    assert client.get("/static/nope.js").status_code == 404


def test_demo_sources_name_no_other_origin():
    for path in (STATIC_DIR / "demo").iterdir():
        text = path.read_text(encoding="utf-8")
        assert not re.search(r"https?://", text), path.name


def test_demo_page_is_in_openapi(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert "/demo" in paths and "/" not in paths


# ----------------------------------------------------------------------------- the browser


def _browser_missing() -> str | None:
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        return (f"no chromium at {CHROMIUM} or chromedriver at {CHROMEDRIVER} "
                "(apt-get install chromium chromium-driver; .ci/run does)")
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The shipped model behind a real HTTP server on loopback (the browser needs one)."""
    import uvicorn

    # The page is under test, not the speed: a loaded CI machine (the 10 s default deadline
    # gave a 504 beside a training run) must not fail it.
    settings = Settings(data_dir=tmp_path_factory.mktemp("var"), device="cpu", request_timeout_s=150.0)
    port = _free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.1)
    if not srv.started:
        pytest.fail("the test server did not start")
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


def _fake_camera_video(path: Path, frames: int = 30) -> Path | None:
    """A 640x480 Y4M clip of the astronaut drifting 1 px per frame (chromium loops it);
    None without scikit-image (the camera then shows chromium's test pattern)."""
    try:
        import cv2
        from skimage import data as skimage_data
    except ImportError:
        return None
    face = cv2.resize(skimage_data.astronaut(), (440, 440), interpolation=cv2.INTER_AREA)
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg\n")
        for k in range(frames):
            frame = np.full((480, 640, 3), 90, np.uint8)
            x = 90 + (k if k < frames // 2 else frames - k)
            frame[20:460, x:x + 440] = face
            f.write(b"FRAME\n" + cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in BROWSER_FLAGS:
        opts.add_argument(flag)
    opts.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    # A camera that plays a file (the astronaut, drifting sideways) and asks no permission.
    opts.add_argument("--use-fake-device-for-media-stream")
    opts.add_argument("--use-fake-ui-for-media-stream")
    video = _fake_camera_video(tmp_path_factory.mktemp("camera") / "astronaut.y4m")
    if video is not None:
        opts.add_argument(f"--use-file-for-fake-video-capture={video}")
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(120)  # a starved machine (a training run beside) answers slowly
    yield driver
    driver.quit()


def _wait(driver, script: str, timeout: float = 90.0, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = driver.execute_script(script)
        if value:
            return value
        time.sleep(0.2)
    status = driver.execute_script("return document.getElementById('status').textContent")
    raise AssertionError(f"timed out waiting for {what or script} (status: {status!r})")


def _data(driver, element_id: str) -> dict:
    return driver.execute_script(f"return Object.assign({{}}, document.getElementById('{element_id}').dataset)")


@pytest.mark.slow
def test_demo_in_a_real_browser(server, browser, tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skimage_data.astronaut()).save(photo, "JPEG", quality=92)
    num_vertices = json.loads(_fetch(server + "/readyz"))["model"]["num_vertices"]

    browser.get(server + "/")  # redirects to /demo
    _wait(browser, "return document.body.dataset.ready === 'true'", what="the page script")
    assert browser.current_url.endswith("/demo")
    browser.find_element("id", "file").send_keys(str(photo))

    _wait(browser, "return document.getElementById('status').dataset.state === 'done'", timeout=180.0,
          what="the reconstruction")
    overlay = _data(browser, "overlay")
    assert overlay["faces"] == "1" and int(overlay["points"]) == num_vertices
    bars = browser.find_elements("css selector", "#bars .bar")
    assert [b.get_attribute("data-name") for b in bars] == [n for n in ARKIT_BLENDSHAPE_NAMES if n != "tongueOut"]
    assert all(0.0 <= float(b.get_attribute("data-value")) <= 1.0 for b in bars)
    assert _data(browser, "pose")["source"] == "default_fov"
    pose_text = browser.find_element("id", "pose").text
    assert "yaw / pitch / roll" in pose_text and "distance" in pose_text and "cm" in pose_text
    model = json.loads(_fetch(server + "/readyz"))["model"]
    blendshapes = browser.find_element("css selector", "#pose dd[data-key='blendshapes']").text
    assert blendshapes == {"head": "predicted by the network's expression head", "fit": "fitted to the mesh"}[
        model.get("blendshapes", "fit")]

    # The 3D viewer fetched the GLB from this server and rendered it.
    _wait(browser, "return document.getElementById('viewer').dataset.loaded === 'true'", what="the 3D viewer")
    assert browser.execute_script("return document.getElementById('viewer').loaded") is True
    glb = browser.execute_script("return document.getElementById('viewer').src")
    assert glb.startswith(server + "/mesh/") and glb.endswith(".glb")
    assert b'"mimeType":"image/jpeg"' in _fetch(glb).replace(b" ", b"")  # the photo as its texture
    # On iPhones the viewer's AR button opens the same mesh's USDZ in AR Quick Look.
    usdz = browser.execute_script("return document.getElementById('viewer').getAttribute('ios-src')")
    assert usdz == glb.removesuffix(".glb") + ".usdz"
    assert _fetch(usdz)[:2] == b"PK"
    link = browser.find_element("id", "download-usdz")
    assert link.is_displayed() and link.get_attribute("href") == usdz
    browser.set_window_size(1280, browser.execute_script("return document.body.scrollHeight") + 140)
    time.sleep(1.0)  # let the viewer draw a few frames at the new size before the screenshot
    browser.save_screenshot(str(tmp_path / "demo_page.png"))
    shot = os.environ.get("JMLR_DEMO_SCREENSHOT")
    if shot:  # 256 colours: a quarter of the bytes in git, and the page has few colours
        Image.open(tmp_path / "demo_page.png").convert("RGB").quantize(256).save(shot, optimize=True)

    # The optional intrinsics: the response says they were used.
    for field, value in (("fx", "600"), ("fy", "600"), ("cx", "256"), ("cy", "256")):
        browser.find_element("id", field).send_keys(value)
    browser.find_element("id", "run").click()
    _wait(browser, "return document.getElementById('pose').dataset.source === 'request'", what="request intrinsics")
    assert "600.0, 600.0" in browser.find_element("id", "pose").text

    # Half the intrinsics is refused in the page; an unreadable photo gets the API's error.
    browser.find_element("id", "fy").clear()
    browser.find_element("id", "run").click()
    _wait(browser, "return document.getElementById('status').dataset.state === 'error'", what="the form error")
    assert "fx, fy, cx and cy" in browser.find_element("id", "status").text
    bad = tmp_path / "not_a_photo.jpg"
    bad.write_bytes(b"this is not a JPEG")
    for field in ("fx", "cx", "cy"):
        browser.find_element("id", field).clear()
    browser.find_element("id", "file").send_keys(str(bad))
    _wait(browser, "return /Error 4\\d\\d/.test(document.getElementById('status').textContent)", what="the API error")

    # Offline: every resource came from this server, and the CSP refused nothing.
    urls = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert urls and all(u.startswith(server) or u.startswith(("blob:", "data:")) for u in urls), urls
    logs = [e["message"] for e in browser.get_log("browser")]
    assert not [m for m in logs if "Content Security Policy" in m or "Refused" in m], logs


@pytest.mark.slow
def test_live_camera_session_in_a_real_browser(server, browser):
    """The camera button streams frames as one video session: the page shows each answer,
    the detector runs on the first frame only, and stopping ends the session."""
    pytest.importorskip("skimage.data")  # the fake camera plays the astronaut
    import urllib.error

    browser.get(server + "/demo")
    _wait(browser, "return document.body.dataset.ready === 'true'", what="the page script")
    browser.find_element("id", "camera").click()
    _wait(browser, "const s = document.getElementById('status'); "
                   "return s.dataset.state === 'live' && Number(s.dataset.frames || 0) >= 3",
          timeout=240.0, what="three answered camera frames")
    status = _data(browser, "status")
    assert int(status["detected"]) < int(status["frames"])  # later frames were tracked, not detected
    assert _data(browser, "overlay")["faces"] == "1" and status["tracks"] == "1"
    assert "yaw / pitch / roll" in browser.find_element("id", "pose").text
    session = status["session"]
    assert json.loads(_fetch(f"{server}/sessions/{session}"))["frames"] >= 3
    shot = os.environ.get("JMLR_DEMO_LIVE_SCREENSHOT")
    if shot:
        browser.set_window_size(1280, 900)
        time.sleep(1.0)
        browser.save_screenshot(shot + ".raw.png")
        Image.open(shot + ".raw.png").convert("RGB").quantize(256).save(shot, optimize=True)
        os.remove(shot + ".raw.png")

    browser.find_element("id", "camera").click()
    _wait(browser, "return document.getElementById('status').dataset.state === 'stopped'", what="the camera stop")
    assert _data(browser, "status")["sessionEnded"] == "true"
    with pytest.raises(urllib.error.HTTPError) as err:
        _fetch(f"{server}/sessions/{session}")
    assert err.value.code == 404
    _wait(browser, "return document.getElementById('viewer').dataset.loaded === 'true'", what="the last frame's mesh")


def _fetch(url: str) -> bytes:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as r:
        return r.read()


def test_screenshot_for_the_readme_exists():
    shot = Path(__file__).resolve().parents[1] / "docs" / "demo_page.png"
    assert shot.is_file() and Image.open(shot).size[0] >= 800
