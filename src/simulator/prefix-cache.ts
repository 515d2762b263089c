// vLLM's automatic prefix caching, as far as usage shows it: the KV cache is kept in blocks
// of 16 tokens, each named by a hash chained over the blocks before it (and the request's
// cache_salt, so that salted prompts never share), and a new prompt reuses the leading full
// blocks that are still cached. At least one prompt token is always computed, so a hit covers
// at most the full blocks before the last token. Blocks are evicted least recently used.
import { fnv1a } from './tokenizer';

export const BLOCK_SIZE = 16;

export class PrefixCache {
  /** Block hash → nothing; a Map keeps insertion order, which is the LRU order here. */
  private readonly blocks = new Map<number, true>();

  constructor(private readonly capacityBlocks: number) {}

  /** The prompt's cached tokens (a multiple of the block size), and its blocks are cached from now on. */
  admit(tokenIds: readonly number[], salt: string | null): number {
    const hashes = blockHashes(tokenIds, salt);
    const reusable = Math.floor((tokenIds.length - 1) / BLOCK_SIZE);
    let hits = 0;
    while (hits < Math.min(reusable, hashes.length) && this.blocks.has(hashes[hits])) hits++;
    for (const hash of hashes) {
      this.blocks.delete(hash);
      this.blocks.set(hash, true);
    }
    while (this.blocks.size > this.capacityBlocks) {
      const oldest = this.blocks.keys().next();
      if (oldest.done === true) break;
      this.blocks.delete(oldest.value);
    }
    return hits * BLOCK_SIZE;
  }

  clear(): void {
    this.blocks.clear();
  }
}

function blockHashes(tokenIds: readonly number[], salt: string | null): number[] {
  const hashes: number[] = [];
  let parent = salt === null ? 0x811c9dc5 : fnv1a(salt);
  for (let start = 0; start + BLOCK_SIZE <= tokenIds.length; start += BLOCK_SIZE) {
    parent = fnv1a(tokenIds.slice(start, start + BLOCK_SIZE).join(','), parent);
    hashes.push(parent);
  }
  return hashes;
}
