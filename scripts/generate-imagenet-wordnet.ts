/**
 * Generates core/taxonomy/imagenet-wordnet.json: for each of the model's 1000
 * classes (in index order) its WordNet 3.0 noun synset and every hypernym
 * above it, plus one display lemma per synset involved. The taxonomy code
 * resolves a category's synsets to model classes with this table, so the
 * running node needs no WordNet files and no dependency.
 *
 * Input: WordNet 3.0 `data.noun` (Debian package `wordnet-base` 1:3.0-37,
 * file usr/share/wordnet/data.noun; WordNet 3.1 offsets differ, so the
 * version matters) and the model's `imagenet_synset.txt` (lines "nOFFSET label").
 *
 * Usage (see core/taxonomy/PROVENANCE.md for the exact command):
 *   npx tsx scripts/generate-imagenet-wordnet.ts DATA_NOUN IMAGENET_SYNSET_TXT > core/taxonomy/imagenet-wordnet.json
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";

interface Synset {
  readonly lemma: string;
  readonly hypernyms: readonly string[];
}

function parseDataNoun(text: string): Map<string, Synset> {
  const out = new Map<string, Synset>();
  for (const line of text.split("\n")) {
    // License header lines start with two spaces.
    if (line.length === 0 || line.startsWith(" ")) continue;
    const fields = line.split(" | ")[0]!.split(" ");
    const offset = fields[0]!;
    const wordCount = parseInt(fields[3]!, 16);
    const lemma = fields[4]!.replace(/_/g, " ").replace(/\(.*\)$/, "");
    let i = 4 + wordCount * 2;
    const pointers = parseInt(fields[i]!, 10);
    i++;
    const hypernyms: string[] = [];
    for (let p = 0; p < pointers; p++, i += 4) {
      const symbol = fields[i]!;
      // "@" hypernym, "@i" instance hypernym: both mean "is a".
      if ((symbol === "@" || symbol === "@i") && fields[i + 2] === "n") hypernyms.push(`n${fields[i + 1]!}`);
    }
    out.set(`n${offset}`, { lemma, hypernyms });
  }
  return out;
}

function main(): void {
  const [dataNounPath, synsetPath] = process.argv.slice(2);
  if (dataNounPath === undefined || synsetPath === undefined) {
    process.stderr.write("usage: generate-imagenet-wordnet.ts DATA_NOUN IMAGENET_SYNSET_TXT\n");
    process.exitCode = 2;
    return;
  }
  const dataNoun = readFileSync(dataNounPath, "utf8");
  const synsetText = readFileSync(synsetPath, "utf8");
  const synsets = parseDataNoun(dataNoun);
  const wnids = synsetText
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => l.split(" ")[0]!);
  if (wnids.length !== 1000) throw new Error(`expected 1000 classes, got ${wnids.length}`);
  const lemmas: Record<string, string> = {};
  const classes = wnids.map((wnid, index) => {
    const own = synsets.get(wnid);
    if (own === undefined) throw new Error(`class ${index} ${wnid} is not a WordNet 3.0 noun synset`);
    // Every synset reachable over hypernym pointers (WordNet has multiple inheritance).
    const seen = new Set<string>();
    const stack = [...own.hypernyms];
    while (stack.length > 0) {
      const s = stack.pop()!;
      if (seen.has(s)) continue;
      seen.add(s);
      stack.push(...(synsets.get(s)?.hypernyms ?? []));
    }
    for (const s of [wnid, ...seen]) lemmas[s] = synsets.get(s)!.lemma;
    return { wnid, ancestors: [...seen].sort() };
  });
  const sortedLemmas = Object.fromEntries(Object.entries(lemmas).sort(([a], [b]) => a.localeCompare(b)));
  const sha = (s: string) => createHash("sha256").update(s).digest("hex");
  const table = {
    source: { wordnet: "WordNet 3.0 data.noun (Debian wordnet-base 1:3.0-37)", dataNounSha256: sha(dataNoun), imagenetSynsetSha256: sha(synsetText) },
    classes,
    lemmas: sortedLemmas,
  };
  process.stdout.write(`${JSON.stringify(table)}\n`);
}

main();
