// Events per minute: uPlot (about 50 KB minified), bars for the total and a line per
// leading event type.

import uPlot from "uplot";
import type { SeriesBucket } from "./api";

/** More lines than this make the chart unreadable; the rest stay in the total. */
const MAX_TYPE_LINES = 4;
const COLORS = ["#e8590c", "#2f9e44", "#7048e8", "#1098ad", "#d6336c"];
const HEIGHT = 240;

export class SeriesChart {
  private plot: uPlot | null = null;
  private types: string[] = [];

  constructor(private readonly container: HTMLElement) {}

  render(buckets: SeriesBucket[]): void {
    const sums = new Map<string, number>();
    for (const b of buckets) {
      for (const [type, n] of Object.entries(b.counts)) sums.set(type, (sums.get(type) ?? 0) + n);
    }
    const types = [...sums.entries()]
      .filter(([, n]) => n > 0)
      .sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))
      .slice(0, MAX_TYPE_LINES)
      .map(([type]) => type)
      .sort();
    const data: uPlot.AlignedData = [
      buckets.map((b) => Date.parse(b.start) / 1000),
      buckets.map((b) => b.total),
      ...types.map((type) => buckets.map((b) => b.counts[type] ?? 0)),
    ];
    if (this.plot && sameList(types, this.types)) {
      this.plot.setData(data);
      return;
    }
    this.destroy();
    this.types = types;
    this.plot = new uPlot(this.options(types), data, this.container);
  }

  resize(): void {
    this.plot?.setSize({ width: this.width(), height: HEIGHT });
  }

  destroy(): void {
    this.plot?.destroy();
    this.plot = null;
  }

  private width(): number {
    return Math.max(280, this.container.clientWidth);
  }

  private options(types: string[]): uPlot.Options {
    const bars = uPlot.paths.bars?.({ size: [0.8, 24] });
    return {
      width: this.width(),
      height: HEIGHT,
      scales: { x: { time: true }, y: { range: (_u, _min, max) => [0, Math.max(5, Math.ceil(max * 1.1))] } },
      axes: [{}, { values: (_u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : "")) }],
      series: [
        {},
        { label: "all events", stroke: "#1c7ed6", fill: "rgba(28, 126, 214, 0.25)", paths: bars, points: { show: false } },
        ...types.map((type, i) => ({
          label: type,
          stroke: COLORS[i % COLORS.length],
          width: 1.5,
          points: { show: false },
        })),
      ],
      legend: { live: true },
      cursor: { drag: { x: false, y: false } },
    };
  }
}

function sameList(a: string[], b: string[]): boolean {
  return a.length === b.length && a.every((v, i) => v === b[i]);
}
