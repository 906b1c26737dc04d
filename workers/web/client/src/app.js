// The page of `python -m workers.web`: create or join a room, one tile per persona (name, role,
// state from `lk.agent.state`, a live audio meter), live captions and a transcript from the
// personas' `lk.transcription` streams, microphone, chat (`lk.chat`) and leave.
// `window.webRoom.snapshot()` is what the browser tests read (tests/live/test_web_browser.py).
import { ParticipantKind, Room, RoomEvent, Track } from "livekit-client";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const AUDIBLE_RMS = 0.01; // a level well above the silence of a muted or idle voice track

// Milestones of the way to the first persona audio, performance.now() (0 at navigation
// start), each set once: what tests/live/browser/first_audio.py splits its figure by.
const marks = {};
function mark(name) {
  if (!(name in marks)) marks[name] = performance.now();
}
mark("script");

const page = {
  room: null,
  roomName: "",
  identity: "",
  joinedAt: null, // performance.now() when connected
  firstAudioMs: null, // since navigation start, any persona
  tiles: new Map(), // identity -> {el, meterEl, saidEl, peak, firstAudioMs, analyser}
  transcript: [], // {who, identity, text, final}
  left: null,
};
let audioCtx = null;

// -- API --------------------------------------------------------------------------------------

function apiKey() {
  return $("api-key").value || sessionStorage.getItem("webApiKey") || "";
}

async function callApi(method, path, body) {
  const headers = { "Content-Type": "application/json" };
  const key = apiKey();
  if (key) headers["X-Api-Key"] = key;
  const res = await fetch(path, { method, headers, body: body ? JSON.stringify(body) : undefined });
  const data = await res.json().catch(() => ({}));
  if (res.status === 401) $("key-field").hidden = false;
  if (!res.ok) throw Object.assign(new Error(describeError(data)), { status: res.status });
  if (key) sessionStorage.setItem("webApiKey", key);
  return data;
}

function describeError(data) {
  const err = data.error || {};
  const lines = [err.message || "the request failed"];
  for (const p of err.problems || []) {
    if (!err.message || !err.message.includes(p.message)) lines.push(`${p.path}: ${p.message}`);
  }
  return lines.join("\n");
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = !message;
}

async function loadScenarios() {
  const select = $("scenario");
  try {
    const { scenarios } = await callApi("GET", "/api/v1/scenarios");
    mark("scenarios");
    select.replaceChildren(
      ...scenarios.map((s) => {
        const opt = new Option(`${s.name} (${s.roles.join(", ")})`, s.name);
        opt.selected = s.name === params.get("scenario");
        return opt;
      }),
    );
  } catch (e) {
    showError(e.status === 401 ? "Enter the API key, then choose a scenario." : e.message);
  }
}

// -- joining ------------------------------------------------------------------------------------

function slug(name) {
  const base = name.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "") || "guest";
  return `web-${base}-${Math.random().toString(16).slice(2, 6)}`;
}

async function join(event) {
  event?.preventDefault();
  showError("");
  const name = $("display-name").value.trim();
  if (!name) {
    showError("Enter your name.");
    $("display-name").focus();
    return;
  }
  $("join").disabled = true;
  try {
    const identity = slug(name);
    let path = `/api/v1/rooms/${encodeURIComponent(params.get("room"))}/join`;
    let body = { identity, name };
    if (!params.get("room")) {
      const inline = $("inline-scenario").value.trim();
      let scenario = $("scenario").value || params.get("scenario") || "";
      if (inline) {
        try {
          scenario = JSON.parse(inline);
        } catch (e) {
          throw new Error(`The scenario JSON does not parse: ${e.message}`);
        }
      }
      path = "/api/v1/rooms/create";
      body = { scenario, identity, name };
    }
    mark("apiSent");
    const granting = callApi("POST", path, body);
    // Inside the click, so allowed to play; made once the request is on its way, as the
    // browser's audio service may take a moment to start.
    audioCtx = audioCtx || new AudioContext();
    audioCtx.resume().catch(() => {});
    const grant = await granting;
    mark("apiAnswered");
    await enterRoom(grant);
  } catch (e) {
    showError(e.message);
  } finally {
    $("join").disabled = false;
  }
}

async function enterRoom(grant) {
  const room = new Room({ adaptiveStream: false, dynacast: false });
  page.room = room;
  page.roomName = grant.room;
  page.identity = grant.identity;
  room
    .on(RoomEvent.ParticipantConnected, addIfPersona)
    .on(RoomEvent.ParticipantDisconnected, (p) => removeTile(p.identity))
    .on(RoomEvent.ParticipantAttributesChanged, (_changed, p) => updateTile(p))
    .on(RoomEvent.TrackSubscribed, trackSubscribed)
    .on(RoomEvent.AudioPlaybackStatusChanged, () => {
      $("audio-start").hidden = room.canPlaybackAudio;
    })
    .on(RoomEvent.Disconnected, (reason) => leftRoom(reason));
  room.registerTextStreamHandler("lk.transcription", readTranscription);
  await room.connect(grant.url, grant.token, { autoSubscribe: true });
  page.joinedAt = performance.now();
  mark("connected");
  for (const p of room.remoteParticipants.values()) {
    addIfPersona(p);
    for (const pub of p.trackPublications.values()) {
      if (pub.track) trackSubscribed(pub.track, pub, p);
    }
  }
  $("setup").hidden = true;
  $("stage").hidden = false;
  $("room-name").textContent = `Room ${grant.room}`;
  history.replaceState(null, "", `/?room=${encodeURIComponent(grant.room)}`);
  $("audio-start").hidden = room.canPlaybackAudio;
  $("mic").focus();
}

// -- tiles --------------------------------------------------------------------------------------

function isPersona(p) {
  return p.kind === ParticipantKind.AGENT;
}

function addIfPersona(p) {
  if (!isPersona(p) || page.tiles.has(p.identity)) return;
  mark("personaSeen");
  const el = document.createElement("li");
  el.className = "tile";
  el.dataset.persona = p.identity;
  el.setAttribute("aria-label", p.name || p.identity);
  el.innerHTML =
    '<div class="name"></div><div class="role"></div>' +
    '<span class="state" aria-live="polite"></span>' +
    '<div class="meter" role="meter" aria-valuemin="0" aria-valuemax="100" aria-valuenow="0"><span></span></div>' +
    '<p class="said"></p>';
  const tile = {
    el,
    meterEl: el.querySelector(".meter"),
    saidEl: el.querySelector(".said"),
    peak: 0,
    firstAudioMs: null,
    analyser: null,
  };
  page.tiles.set(p.identity, tile);
  $("tiles").append(el);
  $("waiting").hidden = true;
  updateTile(p);
}

function updateTile(p) {
  const tile = page.tiles.get(p.identity);
  if (!tile) return;
  const role = p.attributes.role || "persona";
  const state = p.attributes["lk.agent.state"] || "joining";
  tile.el.querySelector(".name").textContent = p.name || p.identity;
  tile.el.querySelector(".role").textContent = role;
  tile.el.querySelector(".state").textContent = state;
  tile.el.dataset.role = role;
  tile.el.dataset.state = state;
  tile.meterEl.setAttribute("aria-label", `${p.name || p.identity} audio level`);
}

function removeTile(identity) {
  const tile = page.tiles.get(identity);
  if (!tile) return;
  tile.el.remove();
  page.tiles.delete(identity);
  $("waiting").hidden = page.tiles.size > 0;
}

function trackSubscribed(track, _pub, participant) {
  if (track.kind !== Track.Kind.Audio) return;
  if (isPersona(participant)) mark("trackSubscribed");
  const audio = track.attach(); // plays it (and Chrome feeds WebAudio only from a played stream)
  audio.dataset.identity = participant.identity;
  document.body.append(audio);
  const tile = page.tiles.get(participant.identity);
  if (!tile) return;
  audioCtx = audioCtx || new AudioContext();
  const source = audioCtx.createMediaStreamSource(new MediaStream([track.mediaStreamTrack]));
  const analyser = audioCtx.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  tile.analyser = analyser;
}

const samples = new Float32Array(1024);
function meterTick() {
  for (const tile of page.tiles.values()) {
    if (!tile.analyser) continue;
    tile.analyser.getFloatTimeDomainData(samples);
    let sum = 0;
    for (const s of samples) sum += s * s;
    const rms = Math.sqrt(sum / samples.length);
    tile.peak = Math.max(tile.peak, rms);
    if (rms > AUDIBLE_RMS && tile.firstAudioMs === null) {
      tile.firstAudioMs = performance.now();
      if (page.firstAudioMs === null) page.firstAudioMs = tile.firstAudioMs;
      mark("firstAudio");
    }
    const pct = Math.min(100, Math.round(rms * 400));
    tile.meterEl.firstChild.style.width = `${pct}%`;
    tile.meterEl.setAttribute("aria-valuenow", String(pct));
  }
}
setInterval(meterTick, 50);

// -- captions and transcript --------------------------------------------------------------------

function nameOf(identity) {
  if (identity === page.identity) return "You";
  const p = page.room?.remoteParticipants.get(identity);
  return p?.name || identity;
}

async function readTranscription(reader, from) {
  const attrs = reader.info.attributes || {};
  // the lead's transcript of a human's speech is sent by the lead, about the human's track
  const trackId = attrs["lk.transcribed_track_id"];
  const local = page.room.localParticipant;
  const mine = trackId && [...local.trackPublications.values()].some((t) => t.trackSid === trackId);
  const identity = mine ? page.identity : from.identity;
  const line = { who: nameOf(identity), identity, text: "", final: false };
  const item = addLine(line);
  for await (const chunk of reader) {
    line.text += chunk;
    item.lastChild.textContent = line.text;
    $("caption").textContent = `${line.who}: ${line.text}`;
    const tile = page.tiles.get(identity);
    if (tile) tile.saidEl.textContent = line.text;
  }
  line.final = true;
  if (!line.text.trim()) {
    item.remove();
    page.transcript.splice(page.transcript.indexOf(line), 1);
  }
}

function addLine(line) {
  page.transcript.push(line);
  const li = document.createElement("li");
  if (line.identity === page.identity) li.className = "you";
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = `${line.who}: `;
  li.append(who, document.createTextNode(line.text));
  const list = $("transcript");
  const atEnd = list.scrollTop + list.clientHeight >= list.scrollHeight - 4;
  list.append(li);
  if (atEnd) list.scrollTop = list.scrollHeight;
  return li;
}

// -- controls -----------------------------------------------------------------------------------

async function toggleMic() {
  const local = page.room.localParticipant;
  const on = !local.isMicrophoneEnabled;
  try {
    await local.setMicrophoneEnabled(on);
  } catch (e) {
    showError(`The microphone could not be opened: ${e.message}`);
    return;
  }
  $("mic").setAttribute("aria-pressed", String(on));
  $("mic").textContent = on ? "Microphone on" : "Microphone off";
}

async function sendChat(event) {
  event.preventDefault();
  const input = $("chat");
  const text = input.value.trim();
  if (!text || !page.room) return;
  input.value = "";
  // to the whole room: the lead persona reads it, the others are told by the floor
  await page.room.localParticipant.sendText(text, { topic: "lk.chat" });
  addLine({ who: "You", identity: page.identity, text, final: true });
}

function leftRoom(reason) {
  if (page.left) return;
  page.left = { reason: String(reason ?? ""), at: performance.now() };
  for (const el of document.querySelectorAll("audio")) el.remove();
  $("stage").hidden = true;
  $("left").hidden = false;
  $("left-reason").textContent = reason === 1 ? "" : `Disconnected (${reason}).`;
  $("left").querySelector("a").focus();
}

async function leave() {
  await page.room?.disconnect();
}

async function endRoom() {
  if (!confirm("End the room for everyone?")) return;
  try {
    await callApi("DELETE", `/api/v1/rooms/${encodeURIComponent(page.roomName)}`);
  } catch (e) {
    showError(e.message);
  }
  await leave();
}

function snapshot() {
  const room = page.room;
  return {
    room: page.roomName,
    identity: page.identity,
    connected: room?.state === "connected",
    left: page.left,
    joinedAtMs: page.joinedAt,
    firstAudioMs: page.firstAudioMs,
    timeOrigin: performance.timeOrigin, // epoch ms of navigation start: to align others' clocks
    marks: { ...marks },
    micEnabled: !!room?.localParticipant.isMicrophoneEnabled,
    tiles: [...page.tiles.entries()].map(([identity, t]) => ({
      identity,
      name: t.el.querySelector(".name").textContent,
      role: t.el.dataset.role,
      state: t.el.dataset.state,
      peak: t.peak,
      firstAudioMs: t.firstAudioMs,
      hasAudio: !!t.analyser,
    })),
    transcript: page.transcript.map((l) => ({ ...l })),
    caption: $("caption").textContent,
    error: $("error").hidden ? "" : $("error").textContent,
  };
}

// -- start --------------------------------------------------------------------------------------

window.webRoom = { snapshot, toggleMic, leave };
$("join-form").addEventListener("submit", join);
$("mic").addEventListener("click", toggleMic);
$("leave").addEventListener("click", leave);
$("end").addEventListener("click", endRoom);
$("chat-form").addEventListener("submit", sendChat);
$("audio-start").addEventListener("click", () => page.room?.startAudio());
$("copy-link").addEventListener("click", () => {
  const link = `${location.origin}/?room=${encodeURIComponent(page.roomName)}`;
  navigator.clipboard?.writeText(link).catch(() => {});
  $("copy-link").textContent = "Link copied";
});
document.addEventListener("keydown", (e) => {
  // m toggles the microphone when not typing
  if (e.key === "m" && page.room && !["INPUT", "TEXTAREA", "SELECT"].includes(e.target.tagName)) {
    toggleMic();
  }
});
$("display-name").value = params.get("name") || sessionStorage.getItem("webName") || "";
$("display-name").addEventListener("change", (e) => sessionStorage.setItem("webName", e.target.value));
if (params.get("room")) {
  $("scenario-field").hidden = true;
  $("room-field").hidden = false;
  $("link-room").textContent = params.get("room");
  $("join").textContent = "Join room";
}
// A link with autojoin=1 (tests, figures) joins at once when it names the scenario or the room
// (the list fills the picker meanwhile), else once the scenario list is in.
const ready = params.get("room") ? Promise.resolve() : loadScenarios();
if (params.get("autojoin") === "1") {
  (params.get("scenario") || params.get("room") ? Promise.resolve() : ready).then(() => join());
}
