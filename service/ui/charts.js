// One chart of the model page: series against step, drawn by uPlot (vendor/, a global), with
// a log y axis when the values span decades, reference lines and bands (the 1e-3 rule of
// thumb), and a legend that shows the latest values.

/* global uPlot */

import { formatNumber } from "./format.js";

const HEIGHT = 260;
// Tableau 10: distinct at a glance, and readable on white.
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                        "#ff9da7", "#9c755f", "#bab0ac"];

/** Gives whether positive `values` span more than `ratio` (a log axis reads them better). */
export function spansDecades(columns, ratio = 20) {
  let low = Infinity;
  let high = 0;
  for (const values of columns) {
    for (const v of values) {
      if (v > 0 && Number.isFinite(v)) {
        if (v < low) low = v;
        if (v > high) high = v;
      }
    }
  }
  return high / low > ratio;
}

function plottable(values, log) {
  return values.map((v) => (typeof v === "number" && Number.isFinite(v) && (!log || v > 0) ? v : null));
}

function powerOfTen(v) {
  const exponent = Math.log10(v);
  return Math.abs(exponent - Math.round(exponent)) < 1e-9;
}

function tickLabels(log) {
  return (u, splits) => splits.map((v) => {
    if (v == null) return "";
    if (log) return powerOfTen(v) ? (v >= 0.01 && v <= 1000 ? String(v) : `1e${Math.round(Math.log10(v))}`) : "";
    return formatNumber(v);
  });
}

// A log axis keeps its powers of ten only: a grid line per decade reads better than nine.
function decades(u, splits) {
  return splits.map((v) => (v != null && powerOfTen(v) ? v : null));
}

export class Chart {
  /**
   * container: the element to draw in; title, yLabel: what the chart and its y axis say;
   * log: true, false or "auto" (log when the values span decades); range: a fixed [min, max];
   * guides: [{value, label, color}] lines and [{band: [low, high], label, fill}] bands.
   */
  constructor(container, { title, yLabel, note = "", log = "auto", range = null, guides = [] }) {
    this.options = { yLabel, log, range, guides };
    this.section = document.createElement("section");
    this.section.className = "chart";
    const heading = document.createElement("h3");
    heading.textContent = title;
    this.note = document.createElement("p");
    this.note.className = "chart-note";
    this.note.textContent = note;
    this.plot = document.createElement("div");
    this.plot.className = "plot";
    this.empty = document.createElement("p");
    this.empty.className = "empty";
    this.section.append(heading, this.note, this.plot, this.empty);
    container.append(this.section);
    this.uplot = null;
    this.shape = "";
    new ResizeObserver(() => this.resize()).observe(this.plot);
  }

  /** Gives the width the plot has to draw in, in CSS pixels. */
  width() {
    return Math.max(240, Math.floor(this.plot.clientWidth || this.section.clientWidth - 24));
  }

  /** Draws `series` ([{label, values, color, dash?, width?}]) against the steps `x`. */
  setData(x, series) {
    const log = this.options.log === "auto" ? spansDecades(series.map((s) => s.values)) : this.options.log;
    const data = [x, ...series.map((s) => plottable(s.values, log))];
    const shape = JSON.stringify([log, series.map((s) => [s.label, s.color, s.dash])]);
    if (!this.uplot || shape !== this.shape) {
      this.uplot?.destroy();
      this.uplot = new uPlot(this.uplotOptions(series, log), data, this.plot);
      this.shape = shape;
      this.log = log;
    } else {
      this.uplot.setData(data);
    }
    if (this.uplot.cursor.left == null || this.uplot.cursor.left < 0) {
      this.uplot.setLegend({ idx: x.length ? x.length - 1 : null });
    }
    const drawn = data.slice(1).some((values) => values.some((v) => v !== null));
    this.empty.textContent = x.length === 0 ? "No steps yet." : drawn ? "" : "No values recorded.";
  }

  resize() {
    if (this.uplot && this.uplot.width !== this.width()) this.uplot.setSize({ width: this.width(), height: HEIGHT });
  }

  uplotOptions(series, log) {
    const { yLabel, range, guides } = this.options;
    const fixed = guides.flatMap((g) => (g.band ? g.band : g.extend ? [g.value] : []));
    const y = log ? { distr: 3, log: 10 } : {};
    if (range) {
      y.range = range;
    } else if (log) {
      y.range = (u, min, max) => {
        const low = Math.min(min ?? Infinity, ...fixed);
        const high = Math.max(max ?? -Infinity, ...fixed);
        if (!Number.isFinite(low) || !Number.isFinite(high)) return [0.1, 10];
        return uPlot.rangeLog(low, high, 10, true);
      };
    }
    return {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: false }, y },
      axes: [
        { label: "step", labelSize: 20, size: 40, values: tickLabels(false), grid: { stroke: "#eee" } },
        { label: yLabel, labelSize: 20, size: 62, values: tickLabels(log),
          grid: { stroke: "#eee", ...(log ? { filter: decades } : {}) }, ticks: log ? { filter: decades } : {} },
      ],
      series: [
        { label: "step", value: (u, v) => (v == null ? "–" : String(v)) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.width ?? 2,
          dash: s.dash,
          spanGaps: true,
          points: { show: false },
          value: (u, v) => formatNumber(v),
        })),
      ],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      hooks: { drawAxes: [(u) => drawGuides(u, guides)] },
    };
  }
}

function drawGuides(u, guides) {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const px = uPlot.pxRatio;
  ctx.save();
  ctx.font = `${12 * px}px system-ui, sans-serif`;
  for (const guide of guides) {
    if (guide.band) {
      const y0 = Math.min(top + height, u.valToPos(guide.band[0], "y", true));
      const y1 = Math.max(top, u.valToPos(guide.band[1], "y", true));
      if (y0 > y1) {
        ctx.fillStyle = guide.fill;
        ctx.fillRect(left, y1, width, y0 - y1);
      }
      continue;
    }
    const y = u.valToPos(guide.value, "y", true);
    if (!(y >= top && y <= top + height)) continue;
    ctx.strokeStyle = guide.color;
    ctx.lineWidth = 1.5 * px;
    ctx.setLineDash([6 * px, 4 * px]);
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
    // The label on a white box, so that the lines under it do not cross it out.
    const right = left + width - 6 * px;
    const textWidth = ctx.measureText(guide.label).width;
    ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
    ctx.fillRect(right - textWidth - 3 * px, y - 18 * px, textWidth + 6 * px, 15 * px);
    ctx.fillStyle = guide.color;
    ctx.textAlign = "right";
    ctx.fillText(guide.label, right, y - 6 * px);
  }
  ctx.restore();
}
