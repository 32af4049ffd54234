// minicnn studio: draws what the server computes (/api/analyze, /api/check, /api/training).
// No framework, no build step: plain DOM and canvas.
//
// Drawing stays instant because the page does little per update: at most one request is in
// flight (strokes made meanwhile go out together, once per animation frame), the prediction is
// updated first, each layer's maps go into one canvas per pass (an atlas, one putImageData),
// a panel off screen is painted only when it scrolls into view, and a map that did not change
// (the forward pass, when only the class changes) is not painted again.
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const state = {
  info: null, result: null, targetKind: "class", chosen: null,
  image: null,          // the image part of the last request ({drawing} or {test_index})
  next: null,           // () => request: the newest update wanted, made when it is sent
  nextStroke: null,     // when the first stroke not yet sent was drawn (performance.now())
  strokeAt: null,       // when the first stroke since the last animation frame was drawn
  inFlight: false, generation: 0, frameAsked: false, panels: [], watchingTraining: false,
};
// stroke-to-screen times, for whoever measures the page (the browser tests)
window.studioLatency = { prediction: [], frame: [], server: [] };

// -- arrays from the server: {shape: [C, H, W], data: base64 uint8, min, max, signed} ----------
function bytesOf(encoded) {
  const raw = atob(encoded.data);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

// the value a byte stands for: unsigned, [min, max] was spread over 0..255; signed, [-m, m]
// over 1..255 with 128 exactly 0 (compute.encode_maps)
function valueOf(encoded, byte) {
  if (encoded.signed) return ((byte - 128) / 127) * encoded.max;
  return encoded.min + (byte / 255) * (encoded.max - encoded.min);
}

// 256 colours packed as the canvas's 32-bit RGBA words (little-endian: A B G R)
function colourTable(rgb) {
  const table = new Uint32Array(256);
  for (let v = 0; v < 256; v++) {
    const [r, g, b] = rgb(v);
    table[v] = (255 << 24) | (b << 16) | (g << 8) | r;
  }
  return table;
}
const GREY = colourTable((v) => [v, v, v]);
const DIVERGING = colourTable((v) => {  // 128 is zero: white; red +, blue -
  const t = (v - 128) / 127;
  const fade = Math.round(255 * (1 - Math.abs(t)));
  return t >= 0 ? [255, fade, fade] : [fade, fade, 255];
});
const GAP = (255 << 24) | (234 << 16) | (228 << 8) | 226;
const TAB10 = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"];

// All C maps of an encoded (C, H, W) array into one canvas, in a grid with 1-pixel gaps, shown
// `zoom` times larger; the grid's geometry is kept on the canvas for clicks (cellAt).
function paintAtlas(canvas, encoded, { maxWidth = 700, zoom = null } = {}) {
  const [channels, height, width] = encoded.shape;
  const gap = channels > 1 ? 1 : 0;
  const cellW = width + gap, cellH = height + gap;
  zoom = zoom || Math.max(1, Math.min(4, Math.floor(56 / Math.max(height, width))));
  const widest = Math.max(1, Math.min(channels, Math.floor((maxWidth / zoom + gap) / cellW)));
  const rows = Math.ceil(channels / widest);
  const columns = Math.ceil(channels / rows);  // rows as full as they can be
  canvas.width = columns * cellW - gap;
  canvas.height = rows * cellH - gap;
  const context = canvas.getContext("2d");
  const image = context.createImageData(canvas.width, canvas.height);
  const words = new Uint32Array(image.data.buffer);
  words.fill(GAP);
  const table = encoded.signed ? DIVERGING : GREY;
  const bytes = bytesOf(encoded);
  for (let c = 0; c < channels; c++) {
    const left = (c % columns) * cellW, top = Math.floor(c / columns) * cellH;
    for (let y = 0; y < height; y++) {
      const from = (c * height + y) * width, to = (top + y) * canvas.width + left;
      for (let x = 0; x < width; x++) words[to + x] = table[bytes[from + x]];
    }
  }
  context.putImageData(image, 0, 0);
  canvas.style.width = canvas.width * zoom + "px";
  canvas.style.height = canvas.height * zoom + "px";
  canvas.atlas = { channels, height, width, columns, cellW, cellH };
  canvas.title = `${channels} map${channels > 1 ? "s" : ""} of ${height}x${width}, ` +
    `${fmt(encoded.min)} .. ${fmt(encoded.max)}`;
  return canvas;
}

// an image as a person sees it: grey, or in colour when it has three channels
function paintImage(canvas, encoded) {
  const [channels, height, width] = encoded.shape;
  const bytes = bytesOf(encoded), plane = height * width;
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < plane; i++) {
    for (let k = 0; k < 3; k++) image.data[4 * i + k] = bytes[(channels === 3 ? k : 0) * plane + i];
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  return canvas;
}

// the (row, column) of the canvas pixel under the pointer, measured in the canvas's drawing
// area (its border is not part of it)
function canvasPixel(event, canvas) {
  const box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left - canvas.clientLeft) / canvas.clientWidth * canvas.width;
  const y = (event.clientY - box.top - canvas.clientTop) / canvas.clientHeight * canvas.height;
  return [Math.min(canvas.height - 1, Math.max(0, Math.floor(y))),
          Math.min(canvas.width - 1, Math.max(0, Math.floor(x)))];
}

// which map of an atlas, and which of its pixels, is under the pointer (null on a gap)
function cellAt(event, canvas) {
  const a = canvas.atlas;
  const [py, px] = canvasPixel(event, canvas);
  const column = Math.floor(px / a.cellW), row = Math.floor(py / a.cellH);
  const x = px - column * a.cellW, y = py - row * a.cellH;
  const channel = row * a.columns + column;
  if (x >= a.width || y >= a.height || channel >= a.channels) return null;
  return [channel, y, x];
}

// A vector (a Dense or Flatten output, the logits): up to 64 values as labelled bars around
// zero, more as a grid of cells, 32 to a row, labelled by unit number.
function paintVector(canvas, encoded, labels) {
  const values = Array.from(bytesOf(encoded), (b) => valueOf(encoded, b));
  const context = canvas.getContext("2d");
  if (values.length <= 64) {
    const barWidth = Math.max(6, Math.min(40, Math.floor(640 / values.length)));
    canvas.width = values.length * barWidth + 60;
    canvas.height = 110;
    context.clearRect(0, 0, canvas.width, canvas.height);
    const low = Math.min(0, ...values), high = Math.max(0, ...values);
    const span = high - low || 1;
    const y = (v) => 8 + (1 - (v - low) / span) * 80;
    context.font = "10px sans-serif";
    context.fillStyle = "#555";
    context.textAlign = "right";
    context.fillText(fmt(high), 54, 12);
    context.fillText(fmt(low), 54, 90);
    for (let i = 0; i < values.length; i++) {
      const left = 60 + i * barWidth;
      context.fillStyle = values[i] >= 0 ? (encoded.signed ? "#d62728" : "#5b8def") : "#1f5fbf";
      const top = Math.min(y(values[i]), y(0));
      context.fillRect(left + 1, top, barWidth - 2, Math.max(1, Math.abs(y(values[i]) - y(0))));
      const every = Math.ceil(values.length / 16);
      if (labels || i % every === 0) {
        context.fillStyle = "#333";
        context.textAlign = "center";
        context.fillText(labels ? labels[i] : String(i), left + barWidth / 2, 104);
      }
    }
    context.strokeStyle = "#999";
    context.beginPath(); context.moveTo(60, y(0)); context.lineTo(canvas.width, y(0)); context.stroke();
    canvas.style.width = canvas.width + "px";
    canvas.style.height = canvas.height + "px";
    canvas.title = labels ? labels.map((l, i) => `${l}: ${fmt(values[i])}`).join("\n") : "";
    canvas.onmousemove = null;
    return canvas;
  }
  const per = 32, cell = 8, rows = Math.ceil(values.length / per);
  canvas.width = 28 + per * cell;
  canvas.height = 12 + rows * cell;
  context.clearRect(0, 0, canvas.width, canvas.height);
  const table = encoded.signed ? DIVERGING : GREY;
  const bytes = bytesOf(encoded);
  context.font = "9px sans-serif";
  context.fillStyle = "#555";
  context.textAlign = "right";
  for (let r = 0; r < rows; r += Math.ceil(rows / 12)) context.fillText(String(r * per), 26, 19 + r * cell);
  context.textAlign = "center";
  for (let c = 0; c < per; c += 8) context.fillText(`+${c}`, 28 + c * cell + cell / 2, 9);
  for (let i = 0; i < values.length; i++) {
    const word = table[bytes[i]];
    context.fillStyle = `rgb(${word & 255},${(word >> 8) & 255},${(word >> 16) & 255})`;
    context.fillRect(28 + (i % per) * cell, 12 + Math.floor(i / per) * cell, cell - 1, cell - 1);
  }
  canvas.style.width = canvas.width + "px";
  canvas.style.height = canvas.height + "px";
  canvas.onmousemove = (event) => {
    const [py, px] = canvasPixel(event, canvas);
    const i = Math.floor((py - 12) / cell) * per + Math.floor((px - 28) / cell);
    canvas.title = py >= 12 && px >= 28 && i < values.length ? `unit ${i}: ${fmt(values[i])}` : "";
  };
  return canvas;
}

function fmt(v) {
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(2) : String(Number(v.toPrecision(3)));
}

// -- talking to the server ----------------------------------------------------------------------
async function api(path, body) {
  const options = { headers: { "X-Studio-Token": TOKEN } };
  if (body !== undefined) {
    options.method = "POST";
    options.headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(body);
  }
  const reply = await fetch(path, options);
  const value = await reply.json();
  if (!reply.ok) throw new Error(value.error || reply.statusText);
  return value;
}

function targetFields() {
  const fields = { target: state.targetKind };
  if (state.chosen !== null) fields[state.targetKind === "class" ? "class" : "label"] = state.chosen;
  return fields;
}

// Ask for an analysis. One request at a time: what is asked meanwhile replaces what was
// waiting, and `make` builds it only when it is sent (a drawing then holds every stroke).
function update(make, strokeAt = null) {
  state.next = make;
  if (strokeAt !== null && state.nextStroke === null) state.nextStroke = strokeAt;
  if (!state.inFlight) sendNext();
}

async function sendNext() {
  const make = state.next, strokeAt = state.nextStroke, generation = state.generation;
  if (!make) return;
  state.next = null; state.nextStroke = null; state.inFlight = true;
  const box = document.getElementById("prediction");
  box.dataset.busy = "1";  // for whoever waits for the page to settle (the browser tests)
  try {
    const image = make();
    const result = await api("/api/analyze", { ...image, ...targetFields() });
    if (generation === state.generation) {  // not cleared meanwhile
      state.image = image;
      render(result, strokeAt);
    }
  } catch (error) {
    document.getElementById("model-summary").textContent = "error: " + error.message;
  } finally {
    state.inFlight = false;
    if (state.next) sendNext(); else delete box.dataset.busy;
  }
}

function reanalyze() {
  if (state.image) { const image = state.image; update(() => image); }
}

// -- rendering: the prediction at once, the maps in the next animation frame ---------------------
function scalarName(target, names) {
  return target.kind === "class" ? `S_${names[target.class]}` : "L";
}

function render(result, strokeAt) {
  state.result = result;
  const [, height, width] = result.input.shape;
  paintAtlas(document.getElementById("input-canvas"), result.input, { zoom: 112 / width });
  paintPrediction(result);
  const names = result.class_names, target = result.target;
  const chosenName = names[target.class ?? target.label];
  document.getElementById("target-text").textContent = target.kind === "class" ?
    `backward from S_${chosenName} = ${result.value.toFixed(4)}` :
    `backward from the loss L for label ${chosenName} = ${result.value.toFixed(4)}`;
  document.getElementById("target-class").value = state.chosen === null ? "auto" : String(state.chosen);
  if (strokeAt !== null) {
    window.studioLatency.prediction.push(performance.now() - strokeAt);
    window.studioLatency.server.push(result.server_ms);
  }
  requestAnimationFrame(() => {
    if (state.result !== result) return;  // a newer one came first
    paintSummary(result, height, width);
    const fresh = state.panels.length !== result.layers.length;
    if (fresh) buildPanels(result);
    state.panels.forEach((panel, i) => { panel.layer = result.layers[i]; if (panel.visible) paintPanel(panel); });
    document.body.dataset.analyzed = String(Number(document.body.dataset.analyzed || 0) + 1);
    if (strokeAt !== null) window.studioLatency.frame.push(performance.now() - strokeAt);
  });
}

function paintPrediction(result) {
  const box = document.getElementById("prediction");
  const chosen = result.target.class ?? result.target.label;
  if (box.children.length !== result.probabilities.length || !box.firstChild.classList.contains("bar")) {
    box.textContent = "";
    result.probabilities.forEach((_, i) => {
      const bar = document.createElement("div");
      bar.dataset.class = i;
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = result.class_names[i];
      const fill = document.createElement("span");
      fill.className = "fill";
      const value = document.createElement("span");
      value.className = "value";
      bar.append(name, fill, value);
      bar.addEventListener("click", () => chooseClass(i));
      box.appendChild(bar);
    });
  }
  result.probabilities.forEach((p, i) => {
    const bar = box.children[i];
    bar.className = "bar" + (i === result.predicted ? " best" : "") + (i === chosen ? " chosen" : "");
    bar.children[1].style.width = Math.max(1, Math.round(p * 250)) + "px";
    bar.children[2].textContent = (100 * p).toFixed(1) + "%";
  });
  box.dataset.predicted = result.class_names[result.predicted];
}

function paintSummary(result, height, width) {
  const zoom = 112 / width;
  const name = scalarName(result.target, result.class_names);
  paintAtlas(document.getElementById("input-gradient-canvas"), result.input_gradient, { zoom });
  document.getElementById("input-gradient-caption").textContent = `gradient: d${name} / d pixel`;
  const product = result.gradient_times_input;
  paintAtlas(document.getElementById("gradient-input-canvas"),
             { ...product, shape: [1, height, width] }, { zoom });
  if (result.grad_cam) {
    paintOverlay(document.getElementById("gradcam-canvas"), result.input, result.grad_cam);
    document.getElementById("gradcam-caption").textContent =
      `Grad-CAM of ${result.class_names[result.target.class ?? result.target.label]} ` +
      `(layer ${result.grad_cam.layer})`;
  }
  if (result.first_weight_gradient) {
    const weights = document.getElementById("first-weights");
    if (weights.painted !== result.first_weights.data) {  // they change only with the model
      paintAtlas(weights, result.first_weights, { zoom: 8, maxWidth: 330 });
      weights.painted = result.first_weights.data;
    }
    paintAtlas(document.getElementById("first-weight-gradient"), result.first_weight_gradient,
               { zoom: 8, maxWidth: 330 });
    document.getElementById("first-weight-gradient-caption").textContent =
      `d${name}/dW (click a weight)`;
  }
}

function paintOverlay(canvas, input, heat) {
  const [, height, width] = input.shape;
  const image = bytesOf(input), heatmap = bytesOf(heat);
  canvas.width = width; canvas.height = height;
  const context = canvas.getContext("2d");
  const pixels = context.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const base = image[i], h = heatmap[i] / 255;
    pixels.data[4 * i] = Math.round(base * (1 - h) + 255 * h);
    pixels.data[4 * i + 1] = Math.round(base * (1 - h) + 80 * h);
    pixels.data[4 * i + 2] = Math.round(base * (1 - h));
    pixels.data[4 * i + 3] = 255;
  }
  context.putImageData(pixels, 0, 0);
}

// -- the layer panels: built once per model, painted when in view -------------------------------
const panelWatcher = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    const panel = entry.target;
    panel.visible = entry.isIntersecting;
    if (panel.visible && panel.layer) paintPanel(panel);
  }
}, { rootMargin: "300px 0px" });

function buildPanels(result) {
  const layers = document.getElementById("layers");
  layers.textContent = "";
  state.panels.forEach((panel) => panelWatcher.unobserve(panel));
  state.panels = result.layers.map((layer) => {
    const panel = document.createElement("div");
    panel.className = "card layer-panel";
    panel.dataset.layer = layer.index;
    const title = document.createElement("h3");
    title.textContent = `${layer.index} · ${layer.describe}   ` +
      `(${layer.input_shape.join(", ")}) → (${layer.output_shape.join(", ")})`;
    const source = document.createElement("a");
    source.href = "/source/" + layer.source;
    source.target = "_blank";
    source.textContent = "source";
    source.className = "muted";
    title.append(" ", source);
    const explain = document.createElement("p");
    explain.className = "explain";
    explain.textContent = layer.formula.explain;
    const formula = document.createElement("div");
    formula.className = "formula mono";
    for (const [name, equations] of [["forward", layer.formula.forward], ["backward", layer.formula.backward]]) {
      if (!equations.length) continue;
      const label = document.createElement("b");
      label.textContent = name + ":\n";
      formula.append(label, document.createTextNode(equations.map((e) => "  " + e).join("\n") + "\n"));
    }
    const forwardLabel = document.createElement("div");
    forwardLabel.className = "pass-label";
    forwardLabel.textContent = "forward: y, this layer's output";
    const backwardLabel = document.createElement("div");
    backwardLabel.className = "pass-label backward-label";
    panel.forward = document.createElement("canvas");
    panel.forward.className = "atlas pixelated forward";
    panel.backward = document.createElement("canvas");
    panel.backward.className = "atlas pixelated backward";
    panel.backwardLabel = backwardLabel;
    panel.append(title, explain, formula, forwardLabel, panel.forward, backwardLabel, panel.backward);
    layers.appendChild(panel);
    panelWatcher.observe(panel);
    return panel;
  });
}

function paintPanel(panel) {
  const layer = panel.layer, result = state.result;
  const isVector = layer.output_shape.length === 2;
  const last = layer.index === result.layers.length - 1;
  const labels = isVector && last && layer.output_shape[1] === result.class_names.length ?
    result.class_names : null;
  const paint = (canvas, encoded) => {
    if (canvas.painted === encoded.data) return;  // unchanged (e.g. the forward pass, when only the class changed)
    if (isVector) paintVector(canvas, encoded, labels); else paintAtlas(canvas, encoded);
    canvas.painted = encoded.data;
  };
  paint(panel.forward, layer.forward);
  paint(panel.backward, layer.backward);
  const name = scalarName(result.target, result.class_names);
  panel.backwardLabel.textContent = `backward: d${name}/dy at this output (red +, blue -); ` +
    `the layer's d${name}/dx is the next panel up's d${name}/dy`;
}

// -- choosing the gradient ----------------------------------------------------------------------
function chooseClass(i) {
  state.chosen = i;
  reanalyze();
}

function setUpTargets(names) {
  const select = document.getElementById("target-class");
  const auto = document.createElement("option");
  auto.value = "auto"; auto.textContent = "the prediction";
  select.appendChild(auto);
  names.forEach((name, i) => {
    const option = document.createElement("option");
    option.value = String(i); option.textContent = name;
    select.appendChild(option);
  });
  select.addEventListener("change", () => {
    state.chosen = select.value === "auto" ? null : Number(select.value);
    reanalyze();
  });
  for (const radio of document.querySelectorAll("input[name=target]")) {
    radio.addEventListener("change", () => { state.targetKind = radio.value; reanalyze(); });
  }
}

// -- check it yourself --------------------------------------------------------------------------
// The server verifies what it reports (Studio.check): the page words its verdict and adds no
// claim of its own, so no sentence here can be contradicted by the numbers beside it.
function explainCheck(r, what, name) {
  const e = (v) => v.toExponential(6);
  const h = r.step.toExponential(1);
  let text = `${what}\nanalytic (backward pass)  ${e(r.analytic)}\n` +
    `numerical (central, h=${h})  ${e(r.numeric)}\nrelative error ${r.relative_error.toExponential(2)}`;
  if (r.verdict === "unresolved") {
    return text + `\n\nSeveral ReLUs or max-pooling windows switch within ±${h} of this point, too ` +
      "close to each other for a finite difference in float64 to separate them (the check " +
      `halved its step ${r.halvings} times). Nothing is claimed about the slopes here.`;
  }
  if (r.halvings > 0) {
    text += `\n\nAnother switch lies within ${r.first_step.toExponential(0)} of this point, on the ` +
      `${r.nearby.join(" and ")} (between h and 2h): a step across it would average two ` +
      `pieces, so the check halved its step ${r.halvings} time${r.halvings > 1 ? "s" : ""}, ` +
      `to h = ${h}, where only what happens at the point itself is within the step.`;
  }
  if (r.verdict === "smooth") {
    return text + (r.agrees ? "\n\nNo ReLU or max-pooling window switches within ±h of this " +
      "point: the network is smooth here, and both numbers are the same derivative." :
      "\n\nThe network is smooth here, yet the two disagree: a wrong backward pass?");
  }
  const first = r.bends[0];
  const where = `${first.units} output${first.units > 1 ? "s" : ""} of layer ` +
    `${first.layer} · ${first.name}` + (r.bends.length > 1 ? ` (the bend then passes through ` +
    `layers ${r.bends[1].layer}-${r.bends[r.bends.length - 1].layer})` : "");
  const side = {
    both: "both slopes", left: "the left slope", right: "the right slope",
    neither: "neither slope: the ties it broke went different ways",
  }[r.at_point];
  if (r.verdict === "switch") {
    return text + `\n\nA switch that does not reach ${name}: a step of ±h switches ${where}, ` +
      `but ${name} has the same slope on both sides (left ${e(r.left_slope)}, right ` +
      `${e(r.right_slope)}). The backward pass at the point gives ${side}.`;
  }
  return text + `\n\nA kink: a step of ±h switches ${where}. ReLUs whose input is exactly 0 ` +
    "and max-pooling windows that tie (common in a flat background) turn one way for +h and " +
    `the other for -h, so ${name} has two slopes here:\n` +
    `  from the left  ${e(r.left_slope)}   backward pass at -h: ${e(r.analytic_left)}\n` +
    `  from the right ${e(r.right_slope)}   backward pass at +h: ${e(r.analytic_right)}\n` +
    "On each side the backward pass agrees with the slope there (verified); the " +
    "central difference is the mean of the two. At the point itself the backward pass breaks " +
    "each tie by a fixed rule (a window's first maximum wins, ReLU'(0) = 0), one tie at a " +
    `time, and gives ${side}.` + (r.at_point === "neither" ? "" : " Training uses that " +
    "value; it is an exact derivative of one of the pieces that meet here.");
}

async function check(fields, what) {
  const box = document.getElementById("check-result");
  box.textContent = "computing ...";
  box.className = "mono";
  box.dataset.index = fields.index.join(",");
  delete box.dataset.relativeError;
  try {
    const r = await api("/api/check", { ...state.image, ...targetFields(), ...fields });
    box.textContent = explainCheck(r, what, scalarName(r.target, state.result.class_names));
    box.className = "mono " + (r.verdict !== "smooth" ? "" : (r.agrees ? "good" : "bad"));
    box.dataset.kink = r.kink;
    box.dataset.verdict = r.verdict;
    // the answer sits low in the sticky left column: show it without moving what is in view
    box.scrollIntoView({ block: "nearest" });
    box.dataset.relativeError = r.relative_error;
  } catch (error) {
    box.textContent = "error: " + error.message;
    box.className = "mono bad";
  }
}

function checkPixel(event, canvas) {
  if (!state.image || !canvas.atlas) return;
  const cell = cellAt(event, canvas);
  if (!cell) return;
  const [channel, row, col] = cell;
  const name = scalarName(state.result.target, state.result.class_names);
  check({ kind: "pixel", index: [channel, row, col] },
        `d${name} / dx[${channel}, ${row}, ${col}] (the normalized input)`);
}

function checkWeight(event, canvas) {
  if (!state.image || !canvas.atlas) return;
  const cell = cellAt(event, canvas);
  if (!cell) return;
  const [k, row, col] = cell;
  const inChannels = state.info.input_shape[0];
  const f = Math.floor(k / inChannels), c = k % inChannels;
  const name = scalarName(state.result.target, state.result.class_names);
  check({ kind: "weight", layer: 0, index: [f, c, row, col] }, `d${name} / dW[${f}, ${c}, ${row}, ${col}]`);
}

// -- drawing ----------------------------------------------------------------------------------
function setUpDrawing() {
  const canvas = document.getElementById("draw-canvas");
  const context = canvas.getContext("2d", { willReadFrequently: true });
  const blank = () => { context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height); };
  blank();
  context.strokeStyle = "#fff"; context.lineWidth = 22; context.lineCap = "round";
  context.lineJoin = "round";
  let drawing = false, last = null;
  const position = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  };
  // every stroke asks for an update; the page sends at most one per animation frame
  const stroked = () => {
    const at = performance.now();
    if (state.strokeAt === null) state.strokeAt = at;
    if (state.frameAsked) return;
    state.frameAsked = true;
    requestAnimationFrame(() => {
      state.frameAsked = false;
      const strokeAt = state.strokeAt;
      state.strokeAt = null;
      update(() => ({ drawing: drawingArray(canvas) }), strokeAt);
    });
  };
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true; last = position(event);
    canvas.setPointerCapture(event.pointerId);
    context.beginPath(); context.arc(last[0], last[1], 0.5, 0, 2 * Math.PI); context.stroke();
    stroked();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const point = position(event);
    context.beginPath(); context.moveTo(...last); context.lineTo(...point); context.stroke();
    last = point;
    stroked();
  });
  const stop = () => { drawing = false; };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  document.getElementById("clear-button").addEventListener("click", () => { blank(); clearAll(); });
}

// Clear: the drawing, and everything computed from it
function clearAll() {
  state.generation += 1;  // an answer still on its way is dropped
  state.next = null; state.nextStroke = null; state.strokeAt = null;
  state.image = null; state.result = null;
  const prediction = document.getElementById("prediction");
  prediction.textContent = "";
  delete prediction.dataset.predicted;
  for (const id of ["input-canvas", "input-gradient-canvas", "gradient-input-canvas",
                    "gradcam-canvas", "first-weight-gradient"]) {
    const canvas = document.getElementById(id);
    canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
    delete canvas.atlas;
  }
  // the panels stay, blank and of the same size, so that the page keeps its scroll position
  for (const panel of state.panels) {
    panel.layer = null;
    for (const canvas of [panel.forward, panel.backward]) {
      canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
      delete canvas.painted;
      delete canvas.atlas;
    }
  }
  document.getElementById("target-text").textContent = "";
  const box = document.getElementById("check-result");
  box.textContent = "nothing checked yet"; box.className = "mono";
  document.body.dataset.cleared = String(Number(document.body.dataset.cleared || 0) + 1);
}

// the canvas as rows of ink values in [0, 1], 112 x 112 (the server prepares 28 x 28 from it)
function drawingArray(canvas) {
  const size = 112;
  const small = drawingArray.canvas || (drawingArray.canvas = document.createElement("canvas"));
  small.width = size; small.height = size;
  const context = small.getContext("2d", { willReadFrequently: true });
  context.drawImage(canvas, 0, 0, size, size);
  const data = context.getImageData(0, 0, size, size).data;
  const rows = [];
  for (let y = 0; y < size; y++) {
    const row = new Array(size);
    for (let x = 0; x < size; x++) row[x] = Math.round(data[4 * (y * size + x)] / 2.55) / 100;
    rows.push(row);
  }
  return rows;
}

// -- the training view --------------------------------------------------------------------------
// Ticks a person reads: 1, 2 or 5 times a power of ten (linear), powers of ten (log)
function niceTicks(low, high, count = 4) {
  const raw = (high - low) / count || 1;
  const power = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * power).find((s) => s >= raw);
  const ticks = [];
  for (let t = Math.ceil(low / step) * step; t <= high + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
  return ticks;
}

// the first tick at or above `value` (0 .. it, in about 4 ticks)
function niceCeiling(value) {
  const ticks = niceTicks(0, value);
  const step = ticks.length > 1 ? ticks[1] - ticks[0] : value;
  return Math.ceil(value / step - 1e-9) * step;
}

function logTicks(low, high) {  // low, high: log10 of the range
  const ticks = [];
  for (let p = Math.floor(low); p <= Math.ceil(high); p++) ticks.push(p);
  return ticks;
}

function tickLabel(value) {
  const a = Math.abs(value);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return value.toExponential(0);
  return String(Number(value.toPrecision(6)));
}

// A line chart: `series` [{points: [[x, y]], colour, axis: "left" | "right"}], each axis
// {log, low, high, format}
function chart(canvas, series, axes) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  const box = { left: 44, right: width - (axes.right ? 40 : 8), top: 20, bottom: height - 22 };
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#ccd";
  context.strokeRect(box.left, box.top, box.right - box.left, box.bottom - box.top);
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  if (!xs.length) return;
  const xMin = Math.min(...xs), xMax = Math.max(...xs, xMin + 1);
  const px = (x) => box.left + (x - xMin) / (xMax - xMin) * (box.right - box.left);
  const scale = (axis) => {
    const f = axis.log ? Math.log10 : (v) => v;
    const span = (axis.high - axis.low) || 1;
    return (v) => box.bottom - (f(v) - axis.low) / span * (box.bottom - box.top);
  };
  context.font = "10px sans-serif";
  for (const [side, axis] of Object.entries(axes)) {
    if (!axis) continue;
    const py = scale(axis);
    const ticks = axis.log ? logTicks(axis.low, axis.high).map((p) => 10 ** p) : niceTicks(axis.low, axis.high);
    context.fillStyle = axis.colour || "#555";
    context.textAlign = side === "left" ? "right" : "left";
    for (const t of ticks) {
      const y = py(t);
      if (y < box.top - 1 || y > box.bottom + 1) continue;
      context.fillText((axis.format || tickLabel)(t), side === "left" ? box.left - 4 : box.right + 4, y + 3);
      context.strokeStyle = "#eef";
      context.beginPath(); context.moveTo(box.left, y); context.lineTo(box.right, y); context.stroke();
    }
  }
  context.fillStyle = "#555";
  context.textAlign = "center";
  for (const t of niceTicks(xMin, xMax)) context.fillText(tickLabel(t), px(t), height - 8);
  for (const s of series) {
    const py = scale(axes[s.axis || "left"]);
    context.strokeStyle = s.colour; context.lineWidth = 1.5; context.beginPath();
    let started = false;
    for (const [x, y] of s.points) {
      if (y === null || y === undefined || (axes[s.axis || "left"].log && y <= 0)) continue;
      if (started) context.lineTo(px(x), py(y)); else context.moveTo(px(x), py(y));
      started = true;
    }
    context.stroke();
  }
  context.lineWidth = 1;
}

function drawTraining(s) {
  const loss = s.records.map((r) => [r.step, r.loss]);
  const accuracy = s.records.map((r) => [r.step, r.accuracy]);
  const lossCanvas = document.getElementById("loss-curve");
  const top = niceCeiling(Math.max(...loss.map((p) => p[1]), 0.1));
  chart(lossCanvas, [{ points: loss, colour: TAB10[0] }, { points: accuracy, colour: TAB10[1], axis: "right" }],
        { left: { low: 0, high: top, colour: TAB10[0] },
          right: { low: 0, high: 1, colour: TAB10[1], format: (v) => Math.round(100 * v) + "%" } });
  const context = lossCanvas.getContext("2d");
  context.textAlign = "left";
  context.fillStyle = TAB10[0]; context.fillText("— loss", 48, 12);
  context.fillStyle = TAB10[1]; context.fillText("— accuracy", 100, 12);
  lossCanvas.dataset.points = String(loss.length);

  const names = s.gradient_norms.length ? Object.keys(s.gradient_norms[0].grad_norm) : [];
  const values = s.gradient_norms.flatMap((g) => Object.values(g.grad_norm)).filter((v) => v > 0);
  if (values.length) {
    const low = Math.floor(Math.log10(Math.min(...values))), high = Math.ceil(Math.log10(Math.max(...values)));
    chart(document.getElementById("gradnorm-curve"), names.map((name, i) => ({
      points: s.gradient_norms.map((g) => [g.step, g.grad_norm[name]]), colour: TAB10[i % TAB10.length],
    })), { left: { log: true, low, high: Math.max(high, low + 1) } });
    const legend = document.getElementById("gradnorm-legend");
    if (legend.children.length !== names.length) {
      legend.textContent = "";
      names.forEach((name, i) => {
        const item = document.createElement("span");
        item.textContent = name;
        item.style.setProperty("--colour", TAB10[i % TAB10.length]);
        legend.appendChild(item);
      });
    }
  }
  if (s.filters) paintAtlas(document.getElementById("training-filters"), s.filters, { zoom: 10, maxWidth: 200 });
}

// One request at a time, the next one asked for when this one is drawn: on a server busy
// training, overlapping requests could answer out of order and draw an older curve over a newer.
async function pollTraining() {
  const status = document.getElementById("training-status");
  let finished = false;
  try {
    const s = await api("/api/training");
    if (!s.started) return;
    finished = s.finished;
    drawTraining(s);
    const last = s.records[s.records.length - 1];
    status.textContent = s.error ? "error: " + s.error :
      (last ? `step ${last.step}: loss ${last.loss.toFixed(3)}, accuracy ` +
              `${(100 * last.accuracy).toFixed(1)}%` : "starting ...") +
      (s.finished ? " (done)" : "");
  } catch (error) {
    status.textContent = "error: " + error.message;
  } finally {
    if (!finished) {
      setTimeout(pollTraining, 400);
    } else {
      state.watchingTraining = false;
      const button = document.getElementById("train-button");
      if (button) button.disabled = false;
    }
  }
}

function watchTraining() {
  if (!state.watchingTraining) { state.watchingTraining = true; pollTraining(); }
}

// -- start -------------------------------------------------------------------------------------
async function start() {
  let info;
  try {
    info = await api("/api/info");
  } catch (error) {
    document.getElementById("model-summary").textContent = "error: " + error.message;
    return;
  }
  state.info = info;
  const trainButton = document.getElementById("train-button");
  if (info.training) {
    trainButton.addEventListener("click", async () => {
      trainButton.disabled = true;
      try { await api("/api/train", { steps: 200 }); watchTraining(); }
      catch (error) { document.getElementById("training-status").textContent = "error: " + error.message;
                      trainButton.disabled = false; }
    });
  } else {
    trainButton.remove();
  }
  if (info.attached) watchTraining();
  if (!info.model) {
    document.getElementById("model-summary").textContent = "live view of a training run";
    for (const id of ["input-column", "summary-card"]) document.getElementById(id).remove();
    return;
  }
  document.getElementById("model-summary").textContent =
    `${info.layers.length} layers: ${info.layers.join(" → ")}; input (${info.input_shape.join(", ")})`;
  setUpTargets(info.class_names);
  if (info.drawing) {
    setUpDrawing();
  } else {  // colour images: no drawing, the input still shown (one map per channel)
    for (const id of ["draw-canvas", "clear-button"]) document.getElementById(id).remove();
    document.querySelector("#draw-card h2").textContent = "Input";
    document.querySelector("#draw-card .explain").remove();
  }
  const picker = document.getElementById("picker");
  for (const item of info.test_images) {
    const canvas = paintImage(document.createElement("canvas"), item.image);
    canvas.title = `test image ${item.index}: ${info.class_names[item.label]}`;
    canvas.dataset.index = item.index;
    canvas.addEventListener("click", () => update(() => ({ test_index: item.index })));
    picker.appendChild(canvas);
  }
  if (!info.test_images.length) document.getElementById("picker-card").remove();
  for (const id of ["input-canvas", "input-gradient-canvas"]) {
    const canvas = document.getElementById(id);
    canvas.addEventListener("click", (event) => checkPixel(event, canvas));
  }
  const weights = document.getElementById("first-weight-gradient");
  weights.addEventListener("click", (event) => checkWeight(event, weights));
  if (info.test_images.length) update(() => ({ test_index: 0 }));
}

start();
