// GET /ui/models/{id}: one model's training history as charts against step, and its flags
// with what to try. Loads the history downsampled by the server to about one point per pixel,
// then polls every second for the steps after the last one shown and appends them; once the
// appended points pass twice the width, it loads the downsampled history again.

import { getJSON } from "./api.js";
import { Chart, PALETTE } from "./charts.js";
import { explainFlags, formatCount, formatNumber, layerAt, layersLine } from "./format.js";
import { append, normalize } from "./history.js";

const POLL_MS = 1000;
const LIVE_MS = 5000; // a model whose step moved this recently is shown as training
const RULE_OF_THUMB = 1e-3; // update/parameter ratio of healthy training (Karpathy's rule of thumb)
const THRESHOLD = "#8b1a1a"; // the guides' colours: darker than any series'
const RULE = "#1b5e20";

const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
const base = `/v1/models/${encodeURIComponent(id)}`;
const $ = (elementId) => document.getElementById(elementId);

// Everything the page shows; tests read it (window.dashboard.charts.loss.uplot.data).
const state = { id, info: null, history: null, points: 0, thresholds: {}, charts: {}, loaded: false,
                step: null, movedAt: 0, readAt: 0, historyOff: false, gone: false };
window.dashboard = state;

function historyURL(since) {
  const query = since === undefined ? `points=${state.points}` : `since=${since}`;
  return `${base}/history?${query}&format=json`;
}

// --- the charts ---------------------------------------------------------------------------

function isWeight(name) {
  return (state.info?.parameter_shapes?.[name]?.length ?? 2) >= 2;
}

/** Gives one series per parameter: a colour per layer, weights solid, biases and scales dashed. */
function parameterSeries(metric) {
  const layers = [];
  return Object.entries(state.history.parameters).map(([name, metrics]) => {
    const layer = name.slice(0, name.lastIndexOf("."));
    if (!layers.includes(layer)) layers.push(layer);
    const weight = isWeight(name);
    return { label: name, values: metrics[metric] ?? [], color: PALETTE[layers.indexOf(layer) % PALETTE.length],
             dash: weight ? undefined : [6, 4], width: weight ? 2 : 1.5 };
  });
}

function activationSeries() {
  const series = [];
  for (const [name, metrics] of Object.entries(state.history.activations)) {
    const type = layerAt(state.info?.spec?.layers, name)?.type ?? "";
    for (const [metric, values] of Object.entries(metrics)) {
      const what = metric.replace("_fraction", "");
      series.push({ label: `${name} ${type}: ${what}`, values, color: PALETTE[series.length % PALETTE.length],
                    dash: what === "saturated" ? [6, 4] : undefined });
    }
  }
  return series;
}

function makeCharts() {
  const t = state.thresholds;
  const box = $("charts");
  const chart = (name, options) => (state.charts[name] = new Chart(box, options));
  chart("loss", { title: "Loss", yLabel: "loss", note: "mean training loss of each step's batches" });
  chart("lr", { title: "Learning rate", yLabel: "learning rate", note: "the lr each step applied" });
  chart("norms", { title: "Global gradient and update norms", yLabel: "L2 norm",
                   note: "over all parameters: ‖∇θ‖ of each step's gradients, ‖Δθ‖ of its update",
                   guides: t.exploding_norm ? [{ value: t.exploding_norm, color: THRESHOLD,
                                                 label: `exploding: ${formatNumber(t.exploding_norm)}` }] : [] });
  chart("ratios", { title: "Update / parameter ratio", yLabel: "‖Δw‖ / ‖w‖", log: true,
                    note: "per parameter, log scale; healthy training sits near 1e-3 (the band: 3e-4 to 3e-3); " +
                      "biases and norm scales dashed",
                    guides: [{ band: [3e-4, 3e-3], fill: "rgba(89, 161, 79, 0.16)" },
                             { value: RULE_OF_THUMB, extend: true, color: RULE, label: "1e-3 rule of thumb" },
                             ...(t.exploding_update_ratio ? [{ value: t.exploding_update_ratio, color: THRESHOLD,
                               label: `exploding: ${formatNumber(t.exploding_update_ratio)}` }] : [])] });
  chart("grads", { title: "Gradient norm per parameter", yLabel: "‖∇w‖ (L2)", log: true,
                   note: "per parameter, log scale; biases and norm scales dashed" });
  const limit = t.dead_fraction ?? 0.5;
  chart("activations", { title: "Dead ReLU and saturated units", yLabel: "fraction of units", log: false, range: [0, 1],
                         note: "per activation layer: dead = zero for the whole batch; saturated = within 0.01 of " +
                           "tanh/sigmoid's bounds",
                         guides: [{ value: limit, color: THRESHOLD, label: `flagged above ${limit}` }] });
}

function drawCharts() {
  const h = state.history;
  const { charts } = state;
  charts.loss.setData(h.step, [{ label: "loss", values: h.loss, color: PALETTE[0] }]);
  charts.lr.setData(h.step, [{ label: "lr", values: h.lr, color: PALETTE[4] }]);
  charts.norms.setData(h.step, [{ label: "‖∇θ‖ gradient", values: h.grad_norm, color: PALETTE[2] },
                                { label: "‖Δθ‖ update", values: h.update_norm, color: PALETTE[0] }]);
  charts.ratios.setData(h.step, parameterSeries("update_to_param"));
  charts.grads.setData(h.step, parameterSeries("grad_norm"));
  charts.activations.setData(h.step, activationSeries());
}

// --- the summary and the flags ------------------------------------------------------------

/** Gives {loss, flags} of the last step: the model info's, or the history's when it read a later step. */
function lastStep(info) {
  const h = state.history;
  if (h?.step.length && (h.step.at(-1) > info.step || !("flags" in info))) {
    return { loss: h.loss.at(-1), flags: h.flags.at(-1) ?? [] };
  }
  return { loss: info.last_loss, flags: info.flags ?? [] };
}

function showSummary(info) {
  const spec = info.spec ?? {};
  $("summary").hidden = false;
  $("model-id").textContent = info.id;
  document.title = `gradserve · ${info.id}`;
  $("layers").textContent = layersLine(spec.layers);
  const step = Math.max(info.step, state.history?.step.at(-1) ?? 0); // the history may be a poll ahead
  $("step").textContent = formatCount(step);
  $("last-loss").textContent = formatNumber(lastStep(info).loss);
  $("parameters").textContent = formatCount(info.num_parameters);
  $("loss-type").textContent = spec.loss?.type ?? "–";
  const optimizer = spec.optimizer ?? {};
  $("optimizer").textContent = optimizer.type ? `${optimizer.type}, lr ${formatNumber(optimizer.lr)}` : "–";
  if (step !== state.step) {
    if (state.step !== null) state.movedAt = Date.now();
    state.step = step;
  }
  const training = Date.now() - state.movedAt < LIVE_MS;
  $("live").textContent = training ? "● training" : "idle";
  $("live").className = training ? "live on" : "live";
}

function showFlags(info) {
  const { flags } = lastStep(info);
  const list = $("flag-list");
  $("flags").hidden = false;
  $("flags").className = flags.length ? "flags raised" : "flags";
  const key = JSON.stringify(flags);
  if (list.dataset.flags === key) return;
  list.dataset.flags = key;
  if (!flags.length) {
    const item = document.createElement("li");
    item.className = "ok";
    item.textContent = info.step ? "None: gradients, updates and activations are within the thresholds."
      : "None yet: the model has not stepped.";
    list.replaceChildren(item);
    return;
  }
  list.replaceChildren(...explainFlags(flags, info.spec?.layers, state.thresholds).map(({ title, why, advice }) => {
    const item = document.createElement("li");
    const name = document.createElement("strong");
    name.textContent = title;
    item.append(name, why ? `: ${why}.` : "");
    if (advice) {
      const tip = document.createElement("div");
      tip.className = "advice";
      tip.textContent = `Try: ${advice}.`;
      item.append(tip);
    }
    return item;
  }));
}

function showHistoryNote() {
  const h = state.history;
  const shown = h.step.length;
  $("history-note").textContent = shown === 0 ? "No steps recorded yet: the charts fill in as the model trains."
    : `${formatCount(shown)} records, steps ${h.step[0]} to ${h.step.at(-1)}` +
      (h.downsampled ? ` (downsampled by the server to about ${state.points} points, each bucket's extremes kept)`
                     : "") + "; updated every second.";
}

function showStatus(text, kind = "", ...more) {
  $("status").replaceChildren(text, ...more);
  $("status").className = `status ${kind}`;
  $("status").hidden = !text;
}

function showGone(error) {
  state.gone = true;
  const back = document.createElement("a");
  back.href = "/ui";
  back.textContent = "all models";
  showStatus(`Model "${id}" not found: ${error.message}. It may have been deleted. `, "error", "Back to ", back, ".");
  if (state.loaded) $("charts").classList.add("stale"); // what it showed last, faded
  else $("charts").hidden = true;
}

// --- loading and polling ------------------------------------------------------------------

async function loadHistory() {
  state.points = Math.max(2, state.charts.loss.width());
  state.history = normalize(await getJSON(historyURL()));
}

async function updateHistory(info) {
  const h = state.history;
  if (h && info.step === state.readAt) return; // no step since the last read
  if (!h || !h.step.length || info.step < state.readAt) {
    await loadHistory(); // the first read, or the model was made again
  } else {
    const fresh = normalize(await getJSON(historyURL(h.step.at(-1))));
    append(h, fresh);
    if (fresh.total > fresh.step.length || h.step.length > 2 * state.points) await loadHistory();
  }
  state.readAt = info.step;
}

function showHistoryOff(error) {
  state.historyOff = true;
  $("charts").hidden = true;
  $("history-note").textContent = `No charts: ${error.message}. The step, loss and flags above stay live.`;
}

async function update() {
  let info;
  try {
    info = await getJSON(base);
  } catch (error) {
    if (error.status === 404 || error.status === 422) {
      showGone(error);
      return false;
    }
    showStatus(`Cannot reach the server: ${error.message} (retrying every second)`, "error");
    return true;
  }
  state.info = info;
  showStatus("");
  try {
    if (!state.historyOff) await updateHistory(info);
  } catch (error) {
    if (error.code === "history_off") showHistoryOff(error);
    else showStatus(`Cannot read the training history: ${error.message} (retrying every second)`, "error");
  }
  showSummary(info);
  showFlags(info);
  if (state.history || state.historyOff) state.loaded = true;
  if (state.history) {
    drawCharts();
    showHistoryNote();
  }
  return true;
}

async function poll() {
  if (await update()) setTimeout(poll, POLL_MS);
}

async function start() {
  try {
    state.thresholds = (await getJSON(`${base}/diagnostics`)).thresholds ?? {};
  } catch {
    state.thresholds = {}; // an unknown model: update() says so
  }
  makeCharts();
  poll();
}

start();
