// The click heatmap: `/heatmap`'s density grid (cells of `cell_px` page pixels, `x`/`y` =
// column/row) drawn over an outline of the page.

import type { Heatmap } from "./api";

/** The page area drawn at least: clicks only tell how far they reached, not how large the
 * page was, so a typical desktop viewport is shown even when clicks stay in a corner. */
const MIN_PAGE_WIDTH = 1280;
const MIN_PAGE_HEIGHT = 800;
/** The canvas never grows taller than this (CSS pixels); a long page is scaled down. */
const MAX_CSS_HEIGHT = 640;

/** Blue (few clicks) through green and yellow to red (the most), on a log scale: one hot
 * button must not make every other cell invisible. */
export function heatColor(share: number): string {
  const t = Math.min(1, Math.max(0, share));
  const hue = 240 * (1 - t);
  return `hsla(${hue.toFixed(0)}, 95%, 50%, ${(0.35 + 0.6 * t).toFixed(2)})`;
}

export function drawHeatmap(canvas: HTMLCanvasElement, heatmap: Heatmap | null): void {
  const cell = heatmap?.grid.cell_px ?? 50;
  const cells = heatmap?.grid.cells ?? [];
  const maxColumn = cells.reduce((m, c) => Math.max(m, c.x), 0);
  const maxRow = cells.reduce((m, c) => Math.max(m, c.y), 0);
  const pageWidth = Math.max(MIN_PAGE_WIDTH, (maxColumn + 1) * cell);
  const pageHeight = Math.max(MIN_PAGE_HEIGHT, (maxRow + 1) * cell);

  const available = canvas.parentElement?.clientWidth || 600;
  const scale = Math.min(available / pageWidth, MAX_CSS_HEIGHT / pageHeight);
  const cssWidth = Math.round(pageWidth * scale);
  const cssHeight = Math.round(pageHeight * scale);
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  canvas.style.width = `${cssWidth}px`;
  canvas.style.height = `${cssHeight}px`;

  const ctx = canvas.getContext("2d");
  if (!ctx) return;
  ctx.setTransform(ratio * scale, 0, 0, ratio * scale, 0, 0);
  ctx.clearRect(0, 0, pageWidth, pageHeight);
  ctx.fillStyle = "#f4f6f9";
  ctx.fillRect(0, 0, pageWidth, pageHeight);

  // Guides every 200 page pixels, labelled, so positions can be read off.
  ctx.strokeStyle = "#dde2ea";
  ctx.lineWidth = 1 / scale;
  ctx.fillStyle = "#8a93a3";
  ctx.font = `${11 / scale}px system-ui, sans-serif`;
  for (let x = 200; x < pageWidth; x += 200) {
    ctx.beginPath();
    ctx.moveTo(x, 0);
    ctx.lineTo(x, pageHeight);
    ctx.stroke();
    ctx.fillText(`${x}`, x + 3 / scale, 12 / scale);
  }
  for (let y = 200; y < pageHeight; y += 200) {
    ctx.beginPath();
    ctx.moveTo(0, y);
    ctx.lineTo(pageWidth, y);
    ctx.stroke();
    ctx.fillText(`${y}`, 3 / scale, y - 3 / scale);
  }

  const most = cells.reduce((m, c) => Math.max(m, c.clicks), 0);
  if (most === 0) {
    ctx.fillStyle = "#5b6473";
    ctx.font = `${16 / scale}px system-ui, sans-serif`;
    ctx.fillText("no clicks with coordinates on this page in the last 24 h", 24 / scale, pageHeight / 2);
    canvas.setAttribute("aria-label", "click heatmap: no clicks");
    return;
  }
  // A soft disc per cell, so neighbouring cells blend like a heatmap rather than a grid.
  for (const c of cells) {
    const share = Math.log1p(c.clicks) / Math.log1p(most);
    const cx = (c.x + 0.5) * cell;
    const cy = (c.y + 0.5) * cell;
    const radius = cell * 1.5;
    const gradient = ctx.createRadialGradient(cx, cy, 0, cx, cy, radius);
    gradient.addColorStop(0, heatColor(share));
    gradient.addColorStop(0.45, heatColor(share * 0.8));
    gradient.addColorStop(1, "hsla(240, 95%, 50%, 0)");
    ctx.fillStyle = gradient;
    ctx.fillRect(cx - radius, cy - radius, radius * 2, radius * 2);
  }
  const total = cells.reduce((n, c) => n + c.clicks, 0);
  canvas.setAttribute(
    "aria-label",
    `click heatmap of ${heatmap?.page ?? "the page"}: ${total} clicks in ${cells.length} cells of ${cell} px, at most ${most} in one cell`,
  );
}
