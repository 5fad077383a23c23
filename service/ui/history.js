// A model's training history as the page holds it: the API's columns (GET
// /v1/models/{id}/history, format=json) with every number a JS number, and appended to as new
// steps arrive.

import { numeric } from "./format.js";

const SCALARS = ["step", "time", "lr", "loss", "grad_norm", "update_norm"];

/** Gives the history of the API with every number a JS number (non-finite strings too). */
export function normalize(history) {
  const out = { flags: history.flags ?? [], total: history.total, downsampled: history.downsampled,
                parameters: {}, activations: {} };
  for (const key of SCALARS) out[key] = (history[key] ?? []).map(numeric);
  for (const group of ["parameters", "activations"]) {
    for (const [name, metrics] of Object.entries(history[group] ?? {})) {
      out[group][name] = Object.fromEntries(Object.entries(metrics).map(([m, values]) => [m, values.map(numeric)]));
    }
  }
  return out;
}

/** Appends the records of `fresh` to `history`, a column that one of them lacks padded with nulls. */
export function append(history, fresh) {
  const before = history.step.length;
  const added = fresh.step.length;
  const pad = (n) => new Array(n).fill(null);
  for (const key of SCALARS) history[key] = history[key].concat(fresh[key]);
  history.flags = history.flags.concat(fresh.flags.length ? fresh.flags : pad(added).map(() => []));
  for (const group of ["parameters", "activations"]) {
    const names = new Set([...Object.keys(history[group]), ...Object.keys(fresh[group])]);
    for (const name of names) {
      const into = (history[group][name] ??= {});
      const from = fresh[group][name] ?? {};
      for (const metric of new Set([...Object.keys(into), ...Object.keys(from)])) {
        into[metric] = (into[metric] ?? pad(before)).concat(from[metric] ?? pad(added));
      }
    }
  }
}
