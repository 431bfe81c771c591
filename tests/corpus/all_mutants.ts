/**
 * Every semantic mutant, in one stable order: the text, embedding and reranker mutants
 * (mutants.ts), then the projector mutants (mutants_projector.ts) with the text models they
 * pair with.
 *
 * @module
 */
import { type Mutant, textMutants } from "./mutants.ts";
import { projectorMutants } from "./mutants_projector.ts";

/** A mutant, and for a projector the index (in `pairs`) of the text model it loads beside. */
export type PairedMutant = Mutant & { pair?: number };

/** The mutants and the paths of the text models projectors pair with. */
export async function allMutants(): Promise<{ mutants: PairedMutant[]; pairs: string[] }> {
  const mutants: PairedMutant[] = await textMutants();
  const pairs: string[] = [];
  for (const set of await projectorMutants()) {
    const pair = pairs.push(set.model) - 1;
    for (const x of set.mutants) {
      mutants.push({
        name: `${set.base}-projector/${x.name}`,
        group: x.group,
        kind: "projector",
        make: () => x.bytes,
        pair,
      });
    }
  }
  return { mutants, pairs };
}
