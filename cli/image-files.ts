import { readdir, stat } from "node:fs/promises";
import { join } from "node:path";

/** File name endings taken from a folder; anything else in it is skipped. */
const imageName = /\.(jpe?g|png|webp|gif|avif|tiff?)$/i;

/** Whether a file name ends like one of the image formats the service reads. */
export function isImageName(name: string): boolean {
  return imageName.test(name);
}

/** The files to classify and the arguments that named nothing readable. */
export interface ImageFiles {
  readonly files: string[];
  readonly missing: { readonly path: string; readonly message: string }[];
}

/**
 * Expands the command line's paths: a folder gives its image files at any
 * depth, sorted; a file is taken as named, whatever its extension, since the
 * user asked for it and the server judges the content, not the name.
 */
export async function collectImageFiles(paths: readonly string[]): Promise<ImageFiles> {
  const files: string[] = [];
  const missing: { path: string; message: string }[] = [];
  const seen = new Set<string>();
  const add = (file: string) => {
    if (seen.has(file)) return;
    seen.add(file);
    files.push(file);
  };
  for (const path of paths) {
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      missing.push({ path, message: err instanceof Error ? err.message : String(err) });
      continue;
    }
    if (!info.isDirectory()) {
      add(path);
      continue;
    }
    const found: string[] = [];
    for (const entry of await readdir(path, { recursive: true, withFileTypes: true })) {
      if (!isImageName(entry.name)) continue;
      const file = join(entry.parentPath, entry.name);
      // A recursive listing reports a link as a link; one that points at a file counts as that file.
      if (entry.isFile() || (entry.isSymbolicLink() && (await stat(file).then((s) => s.isFile(), () => false)))) found.push(file);
    }
    for (const file of found.sort()) add(file);
  }
  return { files, missing };
}
