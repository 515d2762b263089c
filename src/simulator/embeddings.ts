// The simulated embedding model: a deterministic unit vector per input, the normalised sum of
// one pseudo-random vector per token, so equal texts embed equally and texts sharing words
// point in similar directions. `dimensions` keeps the first N components and normalises them
// again, as a Matryoshka model does.
import { seededRandom } from './generation';

export const EMBEDDING_DIMENSIONS = 384;

export function embed(tokenIds: readonly number[], dimensions: number): number[] {
  const vector = new Array<number>(dimensions).fill(0);
  for (const id of tokenIds) {
    const random = seededRandom(id);
    for (let d = 0; d < dimensions; d++) vector[d] += random() * 2 - 1;
  }
  const norm = Math.sqrt(vector.reduce((sum, value) => sum + value * value, 0)) || 1;
  return vector.map((value) => value / norm);
}

/** `encoding_format: "base64"`: the little-endian float32 bytes, as vLLM (and OpenAI) send them. */
export function base64Floats(vector: readonly number[]): string {
  const floats = new Float32Array(vector);
  return Buffer.from(floats.buffer, floats.byteOffset, floats.byteLength).toString('base64');
}
