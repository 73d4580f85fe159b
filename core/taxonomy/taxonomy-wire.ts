import { create } from "@bufbuild/protobuf";
import { CategoryInfoSchema, ListCategoriesResponseSchema, type ListCategoriesResponse } from "../../gen/categorize/v1/categorize_pb.js";
import { ModelRefSchema } from "../../gen/categorize/v1/types_pb.js";
import type { ModelKey } from "../store/result-store.js";
import type { CategoryScorer } from "./category-scorer.js";

/** The protobuf description of the taxonomy in use (ListCategories). */
export function toListCategoriesResponse(scorer: CategoryScorer, model: ModelKey): ListCategoriesResponse {
  const { taxonomy } = scorer;
  return create(ListCategoriesResponseSchema, {
    name: taxonomy.name,
    version: taxonomy.version,
    minScore: scorer.minScore,
    model: create(ModelRefSchema, { name: model.name, version: model.version, sha256: model.sha256 }),
    categories: taxonomy.categories.map((c) =>
      create(CategoryInfoSchema, { name: c.name, path: c.path, parent: c.parent < 0 ? "" : taxonomy.categories[c.parent]!.path, synsets: [...c.synsets], classes: [...c.members] }),
    ),
  });
}
