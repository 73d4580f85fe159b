/**
 * The V8 flags every serving process runs with: the container images'
 * ENTRYPOINT, `npm start` and the bench's child nodes pass exactly these
 * (test/infra/static-artifacts.test.ts holds the three to this list).
 *
 * `--max-semi-space-size=4` (MB): V8's young generation otherwise grows to
 * 2 x 16 MB under request load and stays resident, though a request's
 * short-lived garbage (protobuf messages, headers, promises) fits a 4 MB
 * semi-space. Measured with 800 distinct photos at c=8 through a compiled
 * edge and core on local services: edge RSS 197 -> 148 MB, core 276 -> 265
 * MB, with the same throughput; the price is more frequent scavenges
 * (0.07 -> 0.25 ms of the edge's event loop per request).
 */
export const servingNodeFlags: readonly string[] = Object.freeze(["--max-semi-space-size=4"]);
