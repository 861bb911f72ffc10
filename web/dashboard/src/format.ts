// Figures as the page writes them, shared by the panels (and their unit tests).

/** A share of one as a percentage: whole percents, one decimal under 10 % so that a small
 * share never reads as "0%". */
export function percent(share: number): string {
  return `${(share * 100).toFixed(share > 0 && share < 0.1 ? 1 : 0)}%`;
}
