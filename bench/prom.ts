/** A Prometheus histogram summed over every label set but `le`. */
export interface Histogram {
  /** Cumulative counts by upper bound ("+Inf" included). */
  readonly buckets: ReadonlyMap<string, number>;
  readonly sum: number;
  readonly count: number;
}

export async function scrape(url: string): Promise<string> {
  const res = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) });
  if (!res.ok) throw new Error(`GET ${url}/metrics: HTTP ${res.status}`);
  return res.text();
}

/** Parses `name` (a histogram) out of Prometheus text exposition. */
export function parseHistogram(text: string, name: string): Histogram {
  const buckets = new Map<string, number>();
  let sum = 0;
  let count = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith("#") || !line.startsWith(name)) continue;
    const m = /^(\S+?)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m === null) continue;
    const [, metric, labels = "", value] = m;
    const v = Number(value);
    if (metric === `${name}_bucket`) {
      const le = /le="([^"]+)"/.exec(labels)?.[1];
      if (le !== undefined) buckets.set(le, (buckets.get(le) ?? 0) + v);
    } else if (metric === `${name}_sum`) sum += v;
    else if (metric === `${name}_count`) count += v;
  }
  return { buckets, sum, count };
}

/** after - before, bucket by bucket. */
export function diffHistogram(before: Histogram, after: Histogram): Histogram {
  const buckets = new Map<string, number>();
  for (const [le, v] of after.buckets) buckets.set(le, v - (before.buckets.get(le) ?? 0));
  return { buckets, sum: after.sum - before.sum, count: after.count - before.count };
}

/** Sums histograms of several nodes. */
export function addHistograms(list: readonly Histogram[]): Histogram {
  const buckets = new Map<string, number>();
  let sum = 0;
  let count = 0;
  for (const h of list) {
    for (const [le, v] of h.buckets) buckets.set(le, (buckets.get(le) ?? 0) + v);
    sum += h.sum;
    count += h.count;
  }
  return { buckets, sum, count };
}

/** Batch-size distribution of a step: runs per bucket ("<=1", "2", "3-4", ...), and the mean items per run. */
export interface BatchDistribution {
  readonly runs: number;
  readonly items: number;
  readonly meanSize: number;
  /** Non-cumulative runs per bucket, labelled by the size range it covers. */
  readonly byBucket: Readonly<Record<string, number>>;
}

export function batchDistribution(h: Histogram): BatchDistribution {
  const bounds = [...h.buckets.keys()].sort((a, b) => (a === "+Inf" ? 1 : b === "+Inf" ? -1 : Number(a) - Number(b)));
  const byBucket: Record<string, number> = {};
  let prevCum = 0;
  let prevBound = 0;
  for (const le of bounds) {
    const cum = h.buckets.get(le) ?? 0;
    const n = Math.round(cum - prevCum);
    const lo = prevBound + 1;
    const label = le === "+Inf" ? `>${prevBound}` : Number(le) === lo ? le : `${lo}-${le}`;
    if (n > 0) byBucket[label] = n;
    prevCum = cum;
    if (le !== "+Inf") prevBound = Number(le);
  }
  return { runs: h.count, items: h.sum, meanSize: h.count > 0 ? Math.round((h.sum / h.count) * 100) / 100 : 0, byBucket };
}

export const BATCH_SIZE_METRIC = "categorize_batch_size";

/** Scrapes the batch-size histogram of every core URL, summed. */
export async function scrapeBatchSizes(coreUrls: readonly string[]): Promise<Histogram> {
  const texts = await Promise.all(coreUrls.map((u) => scrape(u)));
  return addHistograms(texts.map((t) => parseHistogram(t, BATCH_SIZE_METRIC)));
}
