// minicnn studio: draws what the server computes (/api/analyze, /api/check, /api/training).
// No framework, no build step: plain DOM and canvas.
"use strict";

const state = { info: null, request: null, result: null, targetKind: "class", chosen: null,
                inFlight: false, pending: null, watchingTraining: false };

// -- arrays from the server: {shape: [C, H, W], data: base64 uint8, signed} ---------------------
function bytesOf(encoded) {
  const raw = atob(encoded.data);
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function colour(value, signed) {
  if (!signed) return [value, value, value];
  const t = (value - 128) / 127;  // -1 .. 1: blue, white, red
  if (t >= 0) return [255, Math.round(255 * (1 - t)), Math.round(255 * (1 - t))];
  return [Math.round(255 * (1 + t)), Math.round(255 * (1 + t)), 255];
}

function paint(canvas, bytes, offset, height, width, signed, cssWidth) {
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  const image = context.createImageData(width, height);
  for (let i = 0; i < height * width; i++) {
    const [r, g, b] = colour(bytes[offset + i], signed);
    image.data[4 * i] = r; image.data[4 * i + 1] = g; image.data[4 * i + 2] = b;
    image.data[4 * i + 3] = 255;
  }
  context.putImageData(image, 0, 0);
  if (cssWidth) {
    canvas.style.width = cssWidth + "px";
    canvas.style.height = Math.max(2, Math.round(cssWidth * height / width)) + "px";
  }
  return canvas;
}

// every channel of an encoded (C, H, W) array as a small canvas in `container`
function paintMaps(container, encoded, maxWidth, onClick) {
  container.textContent = "";
  const [channels, height, width] = encoded.shape;
  const bytes = bytesOf(encoded);
  let cssWidth = Math.min(maxWidth, Math.max(width * Math.max(1, Math.floor(56 / Math.max(height, width))), 8));
  if (height === 1) cssWidth = Math.min(560, Math.max(width * 4, 14));  // a vector: one long strip
  for (let c = 0; c < channels; c++) {
    const canvas = paint(document.createElement("canvas"), bytes, c * height * width, height,
                         width, encoded.signed, cssWidth);
    canvas.dataset.channel = c;
    canvas.title = `channel ${c}: ${encoded.min.toPrecision(3)} .. ${encoded.max.toPrecision(3)}`;
    if (onClick) canvas.addEventListener("click", (event) => onClick(event, canvas, c));
    container.appendChild(canvas);
  }
}

function pixelAt(event, canvas) {
  const box = canvas.getBoundingClientRect();
  return [Math.min(canvas.height - 1, Math.floor((event.clientY - box.top) / box.height * canvas.height)),
          Math.min(canvas.width - 1, Math.floor((event.clientX - box.left) / box.width * canvas.width))];
}

// -- talking to the server ----------------------------------------------------------------------
async function api(path, body) {
  const options = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
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

// one analysis at a time; while one runs, only the newest waiting request is kept
async function analyze(request) {
  state.request = request;
  if (state.inFlight) { state.pending = request; return; }
  state.inFlight = true;
  const box = document.getElementById("prediction");
  box.dataset.busy = "1";  // for whoever waits for the page to settle (the browser tests)
  try {
    const result = await api("/api/analyze", { ...request, ...targetFields() });
    state.result = result;
    render(result);
  } catch (error) {
    document.getElementById("model-summary").textContent = "error: " + error.message;
  } finally {
    state.inFlight = false;
    if (state.pending) { const next = state.pending; state.pending = null; analyze(next); }
    else delete box.dataset.busy;
  }
}

// -- rendering --------------------------------------------------------------------------------
function render(result) {
  const [, height, width] = result.input.shape;
  paint(document.getElementById("input-canvas"), bytesOf(result.input), 0, height, width, false, 112);
  paintPrediction(result);
  const { target } = result;
  const chosenName = result.class_names[target.class ?? target.label];
  document.getElementById("target-text").textContent = target.kind === "class" ?
    `backward from y[${chosenName}] = ${result.value.toFixed(4)}` :
    `backward from the loss for label ${chosenName}: ${result.value.toFixed(4)}`;
  const select = document.getElementById("target-class");
  select.value = state.chosen === null ? "auto" : String(state.chosen);

  paint(document.getElementById("saliency-canvas"), bytesOf(result.saliency), 0, height, width, false, 112);
  paint(document.getElementById("input-gradient-canvas"), bytesOf(result.input_gradient), 0,
        height, width, true, 112);
  if (result.grad_cam) {
    paintOverlay(document.getElementById("gradcam-canvas"), result.input, result.grad_cam);
    document.getElementById("gradcam-caption").textContent =
      `Grad-CAM of ${chosenName} (layer ${result.grad_cam.layer})`;
  }
  if (result.first_weight_gradient) {
    paintMaps(document.getElementById("first-weights"), result.first_weights, 42);
    paintMaps(document.getElementById("first-weight-gradient"), result.first_weight_gradient, 42,
              (event, canvas, k) => checkWeight(event, canvas, k));
  }
  const layers = document.getElementById("layers");
  layers.textContent = "";
  for (const layer of result.layers) layers.appendChild(layerPanel(layer));
  document.body.dataset.analyzed = String(Number(document.body.dataset.analyzed || 0) + 1);
}

function paintPrediction(result) {
  const box = document.getElementById("prediction");
  box.textContent = "";
  const chosen = result.target.class ?? result.target.label;
  result.probabilities.forEach((p, i) => {
    const bar = document.createElement("div");
    bar.className = "bar" + (i === result.predicted ? " best" : "") + (i === chosen ? " chosen" : "");
    bar.dataset.class = i;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = result.class_names[i];
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = Math.max(1, Math.round(p * 200)) + "px";
    const value = document.createElement("span");
    value.textContent = (100 * p).toFixed(1) + "%";
    bar.append(name, fill, value);
    bar.addEventListener("click", () => chooseClass(i));
    box.appendChild(bar);
  });
  box.dataset.predicted = result.class_names[result.predicted];
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
  canvas.style.width = "112px"; canvas.style.height = Math.round(112 * height / width) + "px";
}

function layerPanel(layer) {
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
  const lines = [["forward", layer.formula.forward], ["backward", layer.formula.backward]];
  for (const [name, equations] of lines) {
    if (!equations.length) continue;
    const label = document.createElement("b");
    label.textContent = name + ":\n";
    formula.appendChild(label);
    formula.appendChild(document.createTextNode(equations.map((e) => "  " + e).join("\n") + "\n"));
  }
  const forwardLabel = document.createElement("div");
  forwardLabel.className = "pass-label";
  forwardLabel.textContent = "forward: y, this layer's output";
  const forward = document.createElement("div");
  forward.className = "maps forward";
  paintMaps(forward, layer.forward, 56);
  const backwardLabel = document.createElement("div");
  backwardLabel.className = "pass-label";
  backwardLabel.textContent = "backward: dL/dy at this output (red +, blue -); the layer's " +
    "dL/dx is the next panel up's dL/dy";
  const backward = document.createElement("div");
  backward.className = "maps backward";
  paintMaps(backward, layer.backward, 56);
  panel.append(title, explain, formula, forwardLabel, forward, backwardLabel, backward);
  return panel;
}

// -- choosing the gradient ----------------------------------------------------------------------
function chooseClass(i) {
  state.chosen = i;
  if (state.request) analyze(state.request);
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
    if (state.request) analyze(state.request);
  });
  for (const radio of document.querySelectorAll("input[name=target]")) {
    radio.addEventListener("change", () => {
      state.targetKind = radio.value;
      if (state.request) analyze(state.request);
    });
  }
}

// -- check it yourself --------------------------------------------------------------------------
async function check(fields, what) {
  const box = document.getElementById("check-result");
  box.textContent = "computing ...";
  box.className = "mono";
  try {
    const r = await api("/api/check", { ...state.request, ...targetFields(), ...fields });
    box.textContent = `${what}\nanalytic  ${r.analytic.toExponential(6)}\n` +
      `numerical ${r.numeric.toExponential(6)}\nrelative error ${r.relative_error.toExponential(2)}`;
    if (r.kink) {
      box.textContent += `\n\nA kink here: the slope from the left is ` +
        `${r.left_slope.toExponential(3)}, from the right ${r.right_slope.toExponential(3)}. ` +
        "A ReLU input sits at 0 or two values tie in a max-pooling window (common in the flat " +
        "background), so the function has no single derivative: the backward pass takes one " +
        "side, a central difference averages both. Try a pixel on the stroke, or a weight.";
    }
    box.className = "mono " + (r.relative_error < 1e-5 ? "good" : (r.kink ? "" : "bad"));
    box.dataset.relativeError = r.relative_error;
    box.dataset.kink = r.kink;
  } catch (error) {
    box.textContent = "error: " + error.message;
    box.className = "mono bad";
  }
}

function checkPixel(event, canvas) {
  if (!state.request) return;
  const [row, col] = pixelAt(event, canvas);
  check({ kind: "pixel", index: [0, row, col] },
        `d value / d x[0, ${row}, ${col}] (the normalized input)`);
}

function checkWeight(event, canvas, k) {
  if (!state.request || !state.result) return;
  const [row, col] = pixelAt(event, canvas);
  const inChannels = state.info.input_shape[0];
  const f = Math.floor(k / inChannels), c = k % inChannels;
  check({ kind: "weight", layer: 0, index: [f, c, row, col] }, `d value / d W[${f}, ${c}, ${row}, ${col}]`);
}

// -- drawing ----------------------------------------------------------------------------------
function setUpDrawing() {
  const canvas = document.getElementById("draw-canvas");
  const context = canvas.getContext("2d");
  context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
  context.strokeStyle = "#fff"; context.lineWidth = 22; context.lineCap = "round";
  context.lineJoin = "round";
  let drawing = false, last = null, timer = null;
  const position = (event) => {
    const box = canvas.getBoundingClientRect();
    return [(event.clientX - box.left) * canvas.width / box.width,
            (event.clientY - box.top) * canvas.height / box.height];
  };
  const send = () => analyze({ drawing: drawingArray(canvas) });
  canvas.addEventListener("pointerdown", (event) => {
    drawing = true; last = position(event);
    canvas.setPointerCapture(event.pointerId);
    context.beginPath(); context.arc(last[0], last[1], 0.5, 0, 2 * Math.PI); context.stroke();
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    const point = position(event);
    context.beginPath(); context.moveTo(...last); context.lineTo(...point); context.stroke();
    last = point;
    if (!timer) timer = setTimeout(() => { timer = null; send(); }, 120);  // updates as you draw
  });
  const stop = () => { if (drawing) { drawing = false; send(); } };
  canvas.addEventListener("pointerup", stop);
  canvas.addEventListener("pointercancel", stop);
  document.getElementById("clear-button").addEventListener("click", () => {
    context.fillStyle = "#000"; context.fillRect(0, 0, canvas.width, canvas.height);
  });
}

// the canvas as rows of ink values in [0, 1], 112 x 112 (the server prepares 28 x 28 from it)
function drawingArray(canvas) {
  const size = 112;
  const small = document.createElement("canvas");
  small.width = size; small.height = size;
  const context = small.getContext("2d");
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
function plot(canvas, series, { log = false, yMax = null } = {}) {
  const context = canvas.getContext("2d");
  const { width, height } = canvas;
  context.clearRect(0, 0, width, height);
  context.strokeStyle = "#ccd"; context.strokeRect(30, 5, width - 35, height - 25);
  const all = series.flatMap((s) => s.points.map((p) => p[1])).filter((v) => v !== null && v > (log ? 0 : -Infinity));
  if (!all.length) return;
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const xMin = Math.min(...xs), xMax = Math.max(...xs, xMin + 1);
  const f = log ? Math.log10 : (v) => v;
  const lo = log ? f(Math.min(...all)) : 0, hi = yMax !== null ? yMax : f(Math.max(...all));
  const span = hi - lo || 1;
  for (const s of series) {
    context.strokeStyle = s.colour; context.lineWidth = 1.5; context.beginPath();
    s.points.forEach(([x, y], i) => {
      if (y === null || (log && y <= 0)) return;
      const px = 30 + (x - xMin) / (xMax - xMin) * (width - 35);
      const py = 5 + (1 - (f(y) - lo) / span) * (height - 25);
      if (i === 0) context.moveTo(px, py); else context.lineTo(px, py);
    });
    context.stroke();
  }
  context.fillStyle = "#555"; context.font = "10px sans-serif";
  context.fillText(log ? `1e${hi.toFixed(1)}` : hi.toFixed(2), 0, 12);
  context.fillText(log ? `1e${lo.toFixed(1)}` : lo.toFixed(2), 0, height - 22);
  context.fillText(`step ${xMax}`, width - 50, height - 5);
}

const PALETTE = ["#440154", "#3b528b", "#21918c", "#5ec962", "#c8b31b", "#e8833a", "#b42318"];

// One request at a time, the next one asked for when this one is drawn: on a server busy
// training, overlapping requests could answer out of order and draw an older curve over a newer.
async function pollTraining() {
  const status = document.getElementById("training-status");
  let finished = false;
  try {
    const s = await api("/api/training");
    if (!s.started) return;
    finished = s.finished;
    const loss = s.records.map((r) => [r.step, r.loss]);
    const accuracy = s.records.map((r) => [r.step, r.accuracy]);
    const lossCanvas = document.getElementById("loss-curve");
    const top = Math.max(1, ...loss.map((p) => p[1]));
    plot(lossCanvas, [{ points: loss, colour: "#5b8def" },
                      { points: accuracy.map(([x, a]) => [x, a * top]), colour: "#e8833a" }]);
    lossCanvas.dataset.points = String(loss.length);
    const names = s.gradient_norms.length ? Object.keys(s.gradient_norms[0].grad_norm) : [];
    plot(document.getElementById("gradnorm-curve"), names.map((name, i) => ({
      points: s.gradient_norms.map((g) => [g.step, g.grad_norm[name]]),
      colour: PALETTE[Math.round(i * (PALETTE.length - 1) / Math.max(1, names.length - 1))],
    })), { log: true });
    if (s.filters) paintMaps(document.getElementById("training-filters"), s.filters, 28);
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
  const info = await api("/api/info");
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
  if (info.drawing) setUpDrawing(); else document.getElementById("draw-card").remove();
  const picker = document.getElementById("picker");
  for (const item of info.test_images) {
    const [, h, w] = item.image.shape;
    const canvas = paint(document.createElement("canvas"), bytesOf(item.image), 0, h, w, false);
    canvas.title = `test image ${item.index}: ${info.class_names[item.label]}`;
    canvas.dataset.index = item.index;
    canvas.addEventListener("click", () => analyze({ test_index: item.index }));
    picker.appendChild(canvas);
  }
  document.getElementById("input-canvas").addEventListener("click", (e) =>
    checkPixel(e, document.getElementById("input-canvas")));
  document.getElementById("input-gradient-canvas").addEventListener("click", (e) =>
    checkPixel(e, document.getElementById("input-gradient-canvas")));
  if (info.test_images.length) analyze({ test_index: 0 });
}

start();
