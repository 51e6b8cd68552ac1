// The demo page: one POST /reconstruct per photo (or per camera frame, as one video
// session), drawn over the image, the mesh's GLB in <model-viewer>, pose and blendshapes
// as text and bars. No framework, no network beyond
// this server. Elements carry data-* attributes that tests (and curious users) can read.

const $ = (id) => document.getElementById(id);

// iBUG-68 contours: [first, last, closed]
const CONTOURS = [[0, 16, false], [17, 21, false], [22, 26, false], [27, 30, false], [31, 35, false],
  [36, 41, true], [42, 47, true], [48, 59, true], [60, 67, true]];
const AXES = [["#e5383b", [0.06, 0, 0]], ["#2da44e", [0, 0.06, 0]], ["#1f6feb", [0, 0, 0.06]]];

const state = { file: null, bitmap: null, response: null, face: 0 };
// The live camera: one video session, one request in flight at a time.
const live = { running: false, stream: null, session: null, t0: 0, frames: 0, detected: 0, inflight: null };

function setStatus(kind, text) {
  const s = $("status");
  s.dataset.state = kind;
  s.textContent = text;
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

// The optional intrinsics as the API's `camera` JSON, or null when none are given.
function cameraJson() {
  const k = { fx: number("fx"), fy: number("fy"), cx: number("cx"), cy: number("cy") };
  const size = { width: number("cw"), height: number("ch") };
  const given = Object.values(k).filter((v) => v !== null).length;
  if (given === 0 && size.width === null && size.height === null) return null;
  if (given < 4) throw new Error("give all of fx, fy, cx and cy (or none)");
  if ((size.width === null) !== (size.height === null)) throw new Error("give both calibrated width and height (or neither)");
  return JSON.stringify(size.width === null ? k : { ...k, ...size });
}

function apiHeaders() {
  const key = $("apikey").value.trim();
  return key ? { "X-API-Key": key } : {};
}

// The intrinsics fields as `cameraJson`, or undefined after saying in the status what is wrong.
function cameraOrStatus() {
  try {
    return cameraJson();
  } catch (e) {
    setStatus("error", e.message);
    return undefined;
  }
}

async function choose(file) {
  if (!file) return;
  if (live.running) await stopCamera();
  state.file = file;
  try {
    // The server applies EXIF orientation; so does createImageBitmap by default.
    state.bitmap = await createImageBitmap(file);
  } catch {
    state.bitmap = null;  // the server will say what is wrong with it
  }
  $("run").disabled = false;
  await reconstruct();
}

async function reconstruct() {
  if (!state.file) return;
  const camera = cameraOrStatus();
  if (camera === undefined) return;
  const form = new FormData();
  form.append("image", state.file, state.file.name || "photo");
  form.append("include", "landmarks_2d,blendshapes");
  if (camera) form.append("camera", camera);
  if ($("flip").checked) form.append("flip_tta", "true");
  form.append("texture", "true");  // the 3D viewer shows the photo on the mesh
  const headers = apiHeaders();

  setStatus("busy", "Reconstructing…");
  $("run").disabled = true;
  let response, body;
  try {
    response = await fetch("/reconstruct", { method: "POST", body: form, headers });
    body = await response.json().catch(() => null);
  } catch (e) {
    setStatus("error", `The server did not answer: ${e.message}`);
    return;
  } finally {
    $("run").disabled = false;
  }
  if (!response.ok) {
    const err = body && body.error ? `${body.error.code}: ${body.error.message}` : response.statusText;
    setStatus("error", `Error ${response.status}: ${err}`);
    return;
  }
  state.response = body;
  state.face = 0;
  show();
}

function show(withMesh = true) {
  const r = state.response;
  $("results").hidden = false;
  const tabs = $("faces");
  tabs.replaceChildren(...r.faces.map((f, i) => {
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = `face ${i + 1}`;
    b.setAttribute("role", "tab");
    b.setAttribute("aria-selected", String(i === state.face));
    b.onclick = () => { state.face = i; show(!live.running); };
    return b;
  }));
  drawOverlay(r);
  const face = r.faces[state.face];
  showPose(r, face);
  showBlendshapes(face);
  if (withMesh) showMesh(face);
  const n = r.faces.length;
  const ms = r.timings_ms && r.timings_ms.total;
  setStatus(n ? "done" : "done-empty",
    n ? `${n} face${n > 1 ? "s" : ""} in ${ms ? Math.round(ms) + " ms" : "?"} (${r.model.name}).` : "No face found in this photo.");
}

// Pinhole projection of a head-frame point with the face's OpenCV pose (no distortion).
function project(K, pose, p) {
  const R = pose.rotation, t = pose.translation;
  const X = [0, 1, 2].map((i) => R[i][0] * p[0] + R[i][1] * p[1] + R[i][2] * p[2] + t[i]);
  return [K[0][0] * X[0] / X[2] + K[0][2], K[1][1] * X[1] / X[2] + K[1][2]];
}

function drawOverlay(r) {
  const canvas = $("overlay");
  const W = r.image.width, H = r.image.height;
  canvas.width = W;
  canvas.height = H;
  const g = canvas.getContext("2d");
  if (state.bitmap) g.drawImage(state.bitmap, 0, 0, W, H);
  else { g.fillStyle = "#333"; g.fillRect(0, 0, W, H); }
  const s = Math.max(W, H) / 800;  // line widths that read at any image size
  let points = 0;
  r.faces.forEach((f, i) => {
    const selected = i === state.face;
    g.globalAlpha = selected ? 0.85 : 0.4;
    g.fillStyle = "#30e070";
    for (const [x, y] of f.landmarks_2d || []) {
      g.fillRect(x - 1.2 * s, y - 1.2 * s, 2.4 * s, 2.4 * s);
      points += 1;
    }
    g.globalAlpha = selected ? 1 : 0.5;
    g.strokeStyle = "#ffd23f";
    g.lineWidth = 1.5 * s;
    const lm = f.landmarks_68 || [];
    for (const [a, b, closed] of CONTOURS) {
      if (lm.length < 68) break;
      g.beginPath();
      g.moveTo(...lm[a]);
      for (let k = a + 1; k <= b; k++) g.lineTo(...lm[k]);
      if (closed) g.closePath();
      g.stroke();
    }
    if (f.pose_ok) {
      const o = project(r.camera.K, f.pose, [0, 0, 0]);
      g.lineWidth = 3 * s;
      for (const [color, p] of AXES) {
        g.strokeStyle = color;
        g.beginPath();
        g.moveTo(...o);
        g.lineTo(...project(r.camera.K, f.pose, p));
        g.stroke();
      }
    }
    g.strokeStyle = selected ? "#1f6feb" : "#9aa4b1";
    g.lineWidth = 2 * s;
    const [x0, y0, x1, y1] = f.bbox;
    g.strokeRect(x0, y0, x1 - x0, y1 - y0);
  });
  g.globalAlpha = 1;
  canvas.dataset.points = String(points);
  canvas.dataset.faces = String(r.faces.length);
}

function showPose(r, face) {
  const c = r.camera;
  const fmt = (v, d = 1) => Number(v).toFixed(d);
  const rows = face ? [
    ["yaw / pitch / roll", `${fmt(face.pose.yaw)}° / ${fmt(face.pose.pitch)}° / ${fmt(face.pose.roll)}°`],
    ["distance", `${fmt(face.distance_m * 100)} cm`],
    ["translation (m, OpenCV)", face.pose.translation.map((v) => fmt(v, 3)).join(", ")],
    ["reprojection RMS", face.reprojection_rms_px == null ? "–" : `${fmt(face.reprojection_rms_px, 2)} px`],
    ["pose ok", face.pose_ok ? "yes" : "no"],
  ] : [];
  rows.push(
    ["intrinsics source", c.source],
    ["fx, fy / cx, cy", `${fmt(c.fx)}, ${fmt(c.fy)} / ${fmt(c.cx)}, ${fmt(c.cy)} px`],
    ["field of view", `${fmt(c.fov_x_deg)}° × ${fmt(c.fov_y_deg)}°`],
    ["image", `${r.image.width} × ${r.image.height} ${r.image.format}`],
    ["model", `${r.model.name} v${r.model.version} (${r.model.num_vertices} vertices, ${r.model.device})`],
    ["blendshapes", {head: "predicted by the network's expression head", fit: "fitted to the mesh",
                     none: "not available for this model"}[r.model.blendshapes] || r.model.blendshapes],
  );
  const dl = $("pose");
  dl.replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt");
    dt.textContent = k;
    const dd = document.createElement("dd");
    dd.textContent = v;
    dd.dataset.key = k;
    return [dt, dd];
  }));
  dl.dataset.source = c.source;
  $("warnings").replaceChildren(...(r.warnings || []).map((w) => {
    const li = document.createElement("li");
    li.textContent = w;
    return li;
  }));
}

function showBlendshapes(face) {
  const bars = $("bars");
  const shapes = (face && face.blendshapes) || {};
  bars.replaceChildren(...Object.entries(shapes).map(([name, v]) => {
    const row = document.createElement("div");
    row.className = "bar" + (v > 0.1 ? " on" : "");
    row.dataset.name = name;
    row.dataset.value = String(v);
    const label = document.createElement("span");
    label.textContent = name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.display = "block";
    fill.style.width = `${Math.round(Math.min(Math.max(v, 0), 1) * 100)}%`;
    track.append(fill);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = v.toFixed(2);
    row.append(label, track, value);
    return row;
  }));
  bars.dataset.count = String(Object.keys(shapes).length);
}

function showMesh(face) {
  const viewer = $("viewer");
  const links = { glb: $("download"), usdz: $("download-usdz") };
  const urls = face && face.mesh_urls ? face.mesh_urls : {};
  const url = urls.glb || null;
  viewer.dataset.loaded = "false";
  for (const [fmt, link] of Object.entries(links)) {
    link.hidden = !urls[fmt];
    if (urls[fmt]) link.href = urls[fmt];
  }
  if (!url) {
    viewer.removeAttribute("src");
    viewer.removeAttribute("ios-src");
    $("viewer-note").dataset.reason = face ? face.mesh_status || "no mesh stored" : "no face";
    return;
  }
  // iPhones and iPads open the USDZ in AR Quick Look (the viewer's AR button shows only there).
  if (urls.usdz) viewer.setAttribute("ios-src", urls.usdz);
  if (viewer.getAttribute("src") === url) viewer.dataset.loaded = "true";
  else viewer.src = url;
}

// ------------------------------------------------------------------ the live camera
// Frames are grabbed from the <video>, sent as JPEG with the session's id and their time,
// and answered one at a time: the next frame is grabbed when the answer is drawn, so the
// rate follows the server. The 3D viewer gets the last frame's mesh when the camera stops.

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    setStatus("error", "This browser gives the page no camera (it needs https, or this server on localhost).");
    return;
  }
  const camera = cameraOrStatus();
  if (camera === undefined) return;
  try {
    live.stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    setStatus("error", `No camera: ${e.message || e.name}`);
    return;
  }
  const video = $("video");
  video.srcObject = live.stream;
  await video.play();
  const id = window.crypto && crypto.randomUUID ? crypto.randomUUID() : String(Math.random()).slice(2);
  Object.assign(live, { running: true, session: `demo-${id}`, t0: performance.now(), frames: 0, detected: 0 });
  state.file = null;
  $("camera").textContent = "Stop the camera";
  $("camera").dataset.live = "true";
  $("status").dataset.session = live.session;
  setStatus("live", "Camera on: waiting for the first answer…");
  loop(camera);
}

async function loop(camera) {
  const video = $("video");
  const grab = document.createElement("canvas");
  while (live.running) {
    if (!video.videoWidth) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    grab.width = video.videoWidth;
    grab.height = video.videoHeight;
    grab.getContext("2d").drawImage(video, 0, 0, grab.width, grab.height);
    const [blob, bitmap] = await Promise.all([
      new Promise((r) => grab.toBlob(r, "image/jpeg", 0.85)), createImageBitmap(grab)]);
    if (!live.running) return;  // stopped while the frame was encoded: send nothing more
    const form = new FormData();
    form.append("image", blob, "frame.jpg");
    form.append("include", "landmarks_2d,blendshapes");
    form.append("session_id", live.session);
    form.append("timestamp", ((performance.now() - live.t0) / 1000).toFixed(4));
    if (camera) form.append("camera", camera);
    let response, body;
    // Kept so that stopping waits for it: a frame answered after the session's DELETE
    // would start the session again on the server.
    const request = fetch("/reconstruct", { method: "POST", body: form, headers: apiHeaders() })
      .then(async (r) => [r, await r.json().catch(() => null)]);
    live.inflight = request.catch(() => null);
    try {
      [response, body] = await request;
    } catch (e) {
      await stopCamera(`The server did not answer: ${e.message}`);
      return;
    }
    if (!live.running) return;
    if (!response.ok) {
      const err = body && body.error ? `${body.error.code}: ${body.error.message}` : response.statusText;
      await stopCamera(`Error ${response.status}: ${err}`);
      return;
    }
    live.frames += 1;
    if (body.session && body.session.detected) live.detected += 1;
    state.bitmap = bitmap;
    state.response = body;
    if (state.face >= body.faces.length) state.face = 0;
    show(false);
    const s = $("status");
    s.dataset.frames = String(live.frames);
    s.dataset.detected = String(live.detected);
    s.dataset.tracks = String(body.session ? body.session.tracks : 0);
    const ms = body.timings_ms && body.timings_ms.total;
    setStatus("live", `Live, frame ${live.frames}: ${body.faces.length} face${body.faces.length === 1 ? "" : "s"}, `
      + `${body.session && body.session.detected ? "detected" : "tracked"}, ${ms ? Math.round(ms) : "?"} ms `
      + `(the detector ran on ${live.detected} of ${live.frames} frames).`);
  }
}

// Stop the camera and end the session on the server (its state is not kept for a TTL).
async function stopCamera(error = null) {
  if (!live.running) return;
  live.running = false;
  for (const track of live.stream ? live.stream.getTracks() : []) track.stop();
  $("video").srcObject = null;
  $("camera").textContent = "Use the camera";
  $("camera").dataset.live = "false";
  if (live.inflight) await live.inflight;
  let ended = "";
  try {
    const r = await fetch(`/sessions/${encodeURIComponent(live.session)}`, { method: "DELETE", headers: apiHeaders() });
    ended = r.ok ? " The session was ended on the server." : "";
  } catch {
    ended = "";
  }
  $("status").dataset.sessionEnded = String(Boolean(ended));
  const face = state.response && state.response.faces[state.face];
  if (face) showMesh(face);
  if (error) setStatus("error", error);
  else setStatus("stopped", `Camera off after ${live.frames} frames (the detector ran on ${live.detected}).${ended}`);
}

// ------------------------------------------------------------------ wiring
$("camera").addEventListener("click", () => (live.running ? stopCamera() : startCamera()));
$("viewer").addEventListener("load", (e) => {
  // The GLB has no material (colours would be invented); tint it so the shape reads.
  const material = e.target.model && e.target.model.materials[0];
  if (material) {
    material.pbrMetallicRoughness.setBaseColorFactor([0.86, 0.68, 0.58, 1]);
    material.pbrMetallicRoughness.setRoughnessFactor(0.7);
    material.pbrMetallicRoughness.setMetallicFactor(0);
  }
  e.target.dataset.loaded = "true";
});
$("viewer").addEventListener("error", (e) => {
  e.target.dataset.loaded = "error";
  setStatus("error", "The 3D viewer could not load the mesh (it may have expired: reconstruct again).");
});
$("file").addEventListener("change", (e) => choose(e.target.files[0]));
$("form").addEventListener("submit", (e) => { e.preventDefault(); reconstruct(); });
const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const type of ["dragleave", "drop"]) {
  drop.addEventListener(type, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => choose(e.dataTransfer.files[0]));
document.body.dataset.ready = "true";
