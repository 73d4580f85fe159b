/**
 * The help text, in a module of its own: `categorize --help` loads this and
 * cli/main.ts only, none of a command's dependencies.
 */
export const usage = `usage:
  categorize serve [edge|core|all]            run a node (default: all, the embedded single process)
  categorize classify PATH... [options]       classify image files and folders (recursive) over one stream
      --edge URL          edge node (default http://127.0.0.1:8080)
      --format F          table (default), json (one object per line) or csv
      --json              the same as --format json
      --top-k N           labels per image in json (default 5)
      --concurrency N     images in flight on the stream (default 8, at most 16)
  categorize model fetch                      fetch and verify the catalog's default model into the cache
  categorize evaluate DIR [--edge URL] [--concurrency N]
                                              classify a labelled folder (DIR/expected.tsv) and submit its feedback
configuration of serve and model comes from the environment; see the README.`;
