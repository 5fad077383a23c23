// GET /ui: every model the caller may see, one row each, refreshed every second in place.

import { getJSON } from "./api.js";
import { formatCount, formatNumber, layersLine, shortFlags } from "./format.js";

const REFRESH_MS = 1000;
const LIVE_MS = 5000; // a model whose step moved this recently is marked as training
const table = document.getElementById("models");
const body = table.querySelector("tbody");
const status = document.getElementById("status");
const rows = new Map(); // model id -> its <tr>
const moved = new Map(); // model id -> [step, when it last changed]

function cell(row, index, text, title) {
  const td = row.cells[index];
  if (td.textContent !== text) td.textContent = text;
  if (title !== undefined && td.title !== title) td.title = title;
}

function newRow(id) {
  const row = document.createElement("tr");
  row.dataset.id = id;
  for (const className of ["id", "layers", "num", "num step", "num loss", "flag-cell"]) {
    row.insertCell().className = className;
  }
  const link = document.createElement("a");
  link.href = `/ui/models/${encodeURIComponent(id)}`;
  link.textContent = id;
  row.cells[0].append(link);
  return row;
}

function flagsCell(td, flags) {
  const text = flags.join(" ");
  if (td.dataset.flags === text) return;
  td.dataset.flags = text;
  td.replaceChildren(...shortFlags(flags).flatMap(({ text, title }) => {
    const badge = document.createElement("span");
    badge.className = "flag";
    badge.textContent = text;
    badge.title = title;
    return [badge, " "];
  }));
}

function show(models) {
  models.sort((a, b) => a.id.localeCompare(b.id));
  const seen = new Set();
  models.forEach((model, index) => {
    seen.add(model.id);
    let row = rows.get(model.id);
    if (!row) rows.set(model.id, (row = newRow(model.id)));
    if (body.rows[index] !== row) body.insertBefore(row, body.rows[index] ?? null);
    const layers = layersLine(model.spec?.layers);
    cell(row, 1, layers, layers);
    cell(row, 2, formatCount(model.num_parameters));
    cell(row, 3, formatCount(model.step));
    const [step, at] = moved.get(model.id) ?? [model.step, 0];
    const movedAt = step === model.step ? at : Date.now();
    moved.set(model.id, [model.step, movedAt]);
    row.classList.toggle("training", Date.now() - movedAt < LIVE_MS);
    cell(row, 4, "last_loss" in model ? formatNumber(model.last_loss) : "–");
    flagsCell(row.cells[5], model.flags ?? []);
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.remove();
      rows.delete(id);
      moved.delete(id);
    }
  }
  table.hidden = models.length === 0;
  status.className = "status";
  status.textContent = models.length
    ? `${models.length} model${models.length === 1 ? "" : "s"}`
    : "No models yet: create one with POST /v1/models (see the API docs).";
}

async function refresh() {
  try {
    show((await getJSON("/v1/models")).models);
  } catch (error) {
    status.className = "status error";
    status.textContent = `Cannot list the models: ${error.message} (retrying)`;
  }
  setTimeout(refresh, REFRESH_MS);
}

refresh();
