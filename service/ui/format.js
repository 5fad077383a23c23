// What the pages write about a model: its layers in one line, numbers, and flags with what to try.

/** Gives a number of the API as a JS number: the strings "NaN", "Infinity", "-Infinity" too. */
export function numeric(value) {
  if (typeof value === "number") return value;
  if (value === "NaN") return NaN;
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  return null;
}

/** Gives a number written for a person: 4 significant digits, exponents far from 1. */
export function formatNumber(value) {
  const x = numeric(value);
  if (x === null) return "–";
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (x === 0) return "0";
  if (Number.isInteger(x) && Math.abs(x) < 1e6) return String(x);
  const magnitude = Math.abs(x);
  if (magnitude >= 1e4 || magnitude < 1e-3) return x.toExponential(2).replace(/\.?0+e/, "e").replace("e+", "e");
  return String(Number(x.toPrecision(4)));
}

/** Gives a count with thousands separated: 203,530. */
export function formatCount(n) {
  return n.toLocaleString("en-US");
}

function size(layer) {
  switch (layer.type) {
    case "linear":
      return `${layer.in_features}→${layer.out_features}`;
    case "conv2d":
      return `${layer.in_channels}→${layer.out_channels} k${[].concat(layer.kernel_size).join("×")}`;
    case "rnn":
    case "lstm":
    case "gru":
      return `${layer.input_size}→${layer.hidden_size}`;
    case "embedding":
      return `${layer.num_embeddings}×${layer.embedding_dim}`;
    case "attention":
      return layer.num_heads ? `${layer.num_heads} heads` : "";
    default:
      return "";
  }
}

/** Gives the layers of a spec in one line: `linear 784→256 · relu · linear 256→10`. */
export function layersLine(layers) {
  return (layers ?? [])
    .map((layer) => {
      const inner = sublayers(layer);
      if (inner) return `${layer.type}(${layersLine(inner)})`;
      return [layer.type, size(layer)].filter(Boolean).join(" ");
    })
    .join(" · ");
}

function sublayers(layer) {
  return layer.layers ?? layer.block ?? null;
}

/** Gives the spec of the layer a module name points at: "3", or "1.block.2" inside a residual block. */
export function layerAt(layers, name) {
  let found = null;
  let level = layers ?? [];
  for (const part of String(name).split(".")) {
    if (part === "block") continue;
    found = level[Number(part)];
    if (!found) return null;
    level = sublayers(found) ?? [];
  }
  return found;
}

// What each kind of flag means and what to try, the diagnostics' thresholds filled in.
const FLAGS = {
  exploding_gradients: {
    short: "exploding",
    title: () => "Exploding gradients",
    why: (t) => `the global gradient norm is over ${formatNumber(t.exploding_norm ?? 1e3)}, or an update moved ` +
      `a weight matrix by more than ${formatNumber(t.exploding_update_ratio ?? 0.1)} of its norm`,
    advice: "lower the learning rate; clip the gradients (the optimizer's clip_grad_norm, e.g. 1.0)",
  },
  vanishing_gradients: {
    short: "vanishing",
    title: (where) => `Vanishing gradients in ${where}`,
    why: (t) => `the gradient norm is below ${formatNumber(t.vanishing_ratio ?? 1e-7)} × the parameter's norm`,
    advice: "add normalization (layernorm, batchnorm) or residual connections; relu instead of sigmoid/tanh; " +
      "lstm or gru for long sequences",
  },
  dead_relu_layers: {
    short: "dead ReLU",
    title: (where, plural) => `Dead ReLUs in layer${plural} ${where}`,
    why: (t) => `more than ${percent(t.dead_fraction ?? 0.5)} of the units were zero for the whole batch`,
    advice: "leaky_relu instead of relu; a lower learning rate; He (Kaiming) initialization",
  },
  saturated_layers: {
    short: "saturated",
    title: (where, plural) => `Saturated layer${plural} ${where}`,
    why: (t) => `more than ${percent(t.saturated_fraction ?? 0.5)} of the outputs sit at the bounds`,
    advice: "normalization (batchnorm, layernorm) before it; smaller initial weights; a lower learning rate",
  },
};

function percent(fraction) {
  return `${Math.round(fraction * 100)}%`;
}

/** Gives [[kind, [where...]]] of flag strings such as "dead_relu_layers:1", in their order. */
function byKind(flags) {
  const kinds = new Map();
  for (const flag of flags) {
    const [kind, where = ""] = String(flag).split(/:(.*)/s);
    if (!kinds.has(kind)) kinds.set(kind, []);
    if (where) kinds.get(kind).push(where);
  }
  return [...kinds];
}

/**
 * Gives [{title, why, advice}] of the flags, one per kind: "Vanishing gradients in 0.weight,
 * 2.weight" says its advice once. Layers are named with their type: "3 (relu)".
 */
export function explainFlags(flags, layers, thresholds = {}) {
  return byKind(flags).map(([kind, wheres]) => {
    const known = FLAGS[kind];
    if (!known) return { title: [kind, ...wheres].join(" "), why: "", advice: "" };
    const named = wheres.map((where) => {
      const type = kind === "vanishing_gradients" ? null : layerAt(layers, where)?.type;
      return type ? `${where} (${type})` : where;
    });
    const title = known.title(named.join(", "), named.length > 1 ? "s" : "");
    return { title, why: known.why(thresholds), advice: known.advice };
  });
}

/** Gives [{text, title}] of the flags in short, one per kind, for the list: "dead ReLU 1, 3", "vanishing ×4". */
export function shortFlags(flags) {
  return byKind(flags).map(([kind, wheres]) => {
    const where = wheres.length > 2 ? `×${wheres.length}` : wheres.join(", ");
    return { text: [FLAGS[kind]?.short ?? kind, where].filter(Boolean).join(" "),
             title: wheres.length ? `${kind}: ${wheres.join(", ")}` : kind };
  });
}
