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

// Steps are whole: the x axis ticks at 1, 2, 5, 10, 20, 50, ... steps, never at 0.2.
const WHOLE = Array.from({ length: 30 }, (_, i) => [1, 2, 5][i % 3] * 10 ** Math.floor(i / 3));

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
    this.raw = [x, ...series.map((s) => s.values)]; // what the legend says: a 0 or NaN too, which no log axis draws
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
    const drawn = data.slice(1).some((values) => values.some((v) => v !== null));
    this.empty.textContent = x.length === 0 ? "No steps yet." : drawn ? "" : "No values recorded.";
  }

  /** Gives what the legend shows: the value under the cursor, else the latest one. */
  legendValue(format) {
    return (u, v, seriesIndex, index) => {
      const values = this.raw?.[seriesIndex] ?? [];
      let i = index ?? values.length - 1;
      while (index == null && i > 0 && values[i] == null) i--;
      return values[i] == null ? "–" : format(values[i]);
    };
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
        { label: "step", labelSize: 20, size: 40, incrs: WHOLE, values: tickLabels(false), grid: { stroke: "#eee" } },
        { label: yLabel, labelSize: 20, size: 62, values: tickLabels(log),
          grid: { stroke: "#eee", ...(log ? { filter: decades } : {}) }, ticks: log ? { filter: decades } : {} },
      ],
      series: [
        { label: "step", value: this.legendValue(String) },
        ...series.map((s) => ({
          label: s.label,
          stroke: s.color,
          width: s.width ?? 2,
          dash: s.dash,
          spanGaps: true, // uPlot draws points only where they are sparse: a first step shows as a dot
          value: this.legendValue(formatNumber),
        })),
      ],
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      // Guides under the series, their labels over them.
      hooks: { drawAxes: [(u) => drawGuides(u, guides)], draw: [(u) => labelGuides(u, guides)] },
    };
  }
}

function guideY(u, guide) {
  const y = u.valToPos(guide.value, "y", true);
  return y >= u.bbox.top && y <= u.bbox.top + u.bbox.height ? y : null;
}

function drawGuides(u, guides) {
  const { ctx } = u;
  const { left, top, width, height } = u.bbox;
  const px = uPlot.pxRatio;
  ctx.save();
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
    const y = guideY(u, guide);
    if (y === null) continue;
    ctx.strokeStyle = guide.color;
    ctx.lineWidth = 2 * px;
    ctx.setLineDash([2 * px, 3 * px]); // dotted: the series are solid or dashed
    ctx.beginPath();
    ctx.moveTo(left, y);
    ctx.lineTo(left + width, y);
    ctx.stroke();
  }
  ctx.restore();
}

function labelGuides(u, guides) {
  const { ctx } = u;
  const px = uPlot.pxRatio;
  ctx.save();
  ctx.font = `${12 * px}px system-ui, sans-serif`;
  for (const guide of guides) {
    const y = guide.label ? guideY(u, guide) : null;
    if (y === null) continue;
    // On a white box, so that the series under it do not cross it out.
    const right = u.bbox.left + u.bbox.width - 6 * px;
    const textWidth = ctx.measureText(guide.label).width;
    ctx.fillStyle = "rgba(255, 255, 255, 0.85)";
    ctx.fillRect(right - textWidth - 3 * px, y - 18 * px, textWidth + 6 * px, 15 * px);
    ctx.fillStyle = guide.color;
    ctx.textAlign = "right";
    ctx.fillText(guide.label, right, y - 6 * px);
  }
  ctx.restore();
}
