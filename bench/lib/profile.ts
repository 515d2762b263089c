// Self time per function and per area (package, Node internals, our source) from a V8
// .cpuprofile written by `node --cpu-prof`, limited to a time window of the profile.
import { readFileSync } from 'node:fs';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileEntry {
  name: string;
  selfMs: number;
  /** Share of the busy (non-idle) time in the window, %. */
  pct: number;
  /** For functions: the nearest caller in a package or our code (not Node's internals), by weight. */
  via?: string;
}

export interface ProfileSummary {
  file: string;
  windowMs: number;
  samples: number;
  busyMs: number;
  idleMs: number;
  gcMs: number;
  programMs: number;
  topFunctions: ProfileEntry[];
  topAreas: ProfileEntry[];
  /** Like topAreas, but Node internals and natives are charged to the package (or our file) that called them. */
  topOwners: ProfileEntry[];
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

/** Which package, Node module or source file a script URL belongs to. */
export function areaOf(url: string): string {
  if (url === '') return '(V8 builtins / native)';
  if (url.startsWith('node:')) {
    const parts = url.slice(5).split('/');
    if (parts[0] === 'internal' && parts[1] === 'deps') return `node:deps/${parts[2] ?? ''}${parts[2] === 'undici' ? ' (built-in fetch)' : ''}`;
    const name = parts[0] === 'internal' ? (parts[1] ?? 'internal') : (parts[0] ?? url);
    return `node:${name.replace(/\.js$/, '')}`;
  }
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) {
    const rest = url.slice(modules + '/node_modules/'.length).split('/');
    if (rest[0] === undefined) return url;
    return rest[0]?.startsWith('@') === true ? `${rest[0]}/${rest[1] ?? ''}` : (rest[0] ?? url);
  }
  const src = url.indexOf('/dist/src/');
  if (src >= 0) return `gateway src/${url.slice(src + '/dist/src/'.length).replace(/\.js$/, '')}`;
  return url.replace(/^file:\/\//, '');
}

function shortUrl(url: string): string {
  if (url === '') return '';
  const modules = url.lastIndexOf('/node_modules/');
  if (modules >= 0) return url.slice(modules + '/node_modules/'.length);
  const src = url.indexOf('/dist/src/');
  if (src >= 0) return `src/${url.slice(src + '/dist/src/'.length)}`;
  return url.replace(/^file:\/\//, '');
}

/**
 * Sums self time per function and per area over the samples whose time since the profile's
 * start lies in [fromMs, toMs]. A sample's weight is the time until the next sample.
 */
export function summariseProfile(file: string, fromMs: number, toMs: number, top = 20): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parentOf = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parentOf.set(child, node.id);
  }
  const frameName = (node: ProfileNode): string => {
    const { functionName, url, lineNumber } = node.callFrame;
    return SPECIAL.has(functionName)
      ? functionName
      : `${functionName === '' ? '(anonymous)' : functionName} ${shortUrl(url)}${url === '' ? '' : `:${lineNumber + 1}`}`.trim();
  };
  const userlandCallerNode = (node: ProfileNode): ProfileNode | null => {
    let id = parentOf.get(node.id);
    while (id !== undefined) {
      const parent = byId.get(id);
      if (parent === undefined) return null;
      const url = parent.callFrame.url;
      if (url !== '' && !url.startsWith('node:') && parent.callFrame.functionName !== node.callFrame.functionName) return parent;
      id = parentOf.get(id);
    }
    return null;
  };
  const userlandCaller = (node: ProfileNode): string | null => {
    const caller = userlandCallerNode(node);
    return caller === null ? null : frameName(caller);
  };
  const perOwner = new Map<string, number>();
  const callers = new Map<string, Map<string, number>>();
  const perFunction = new Map<string, number>();
  const perArea = new Map<string, number>();
  let idle = 0;
  let gc = 0;
  let program = 0;
  let busy = 0;
  let counted = 0;
  let elapsedUs = 0;
  const fromUs = fromMs * 1000;
  const toUs = toMs * 1000;
  for (let i = 0; i < profile.samples.length; i++) {
    elapsedUs += profile.timeDeltas[i] ?? 0;
    if (elapsedUs < fromUs || elapsedUs > toUs) continue;
    const weightUs = Math.max(0, profile.timeDeltas[i + 1] ?? 0);
    const node = byId.get(profile.samples[i] as number);
    if (node === undefined) continue;
    counted += 1;
    const { functionName, url } = node.callFrame;
    if (functionName === '(idle)') {
      idle += weightUs;
      continue;
    }
    busy += weightUs;
    if (functionName === '(garbage collector)') gc += weightUs;
    if (functionName === '(program)') program += weightUs;
    const name = frameName(node);
    perFunction.set(name, (perFunction.get(name) ?? 0) + weightUs);
    if (url === '' || url.startsWith('node:')) {
      const caller = userlandCaller(node);
      if (caller !== null) {
        let byCaller = callers.get(name);
        if (byCaller === undefined) callers.set(name, (byCaller = new Map()));
        byCaller.set(caller, (byCaller.get(caller) ?? 0) + weightUs);
      }
    }
    const area = SPECIAL.has(functionName) ? functionName : areaOf(url);
    perArea.set(area, (perArea.get(area) ?? 0) + weightUs);
    let owner = area;
    if (!SPECIAL.has(functionName) && (url === '' || url.startsWith('node:'))) {
      const caller = userlandCallerNode(node);
      owner = caller === null ? `${area} (no package caller)` : areaOf(caller.callFrame.url);
    }
    perOwner.set(owner, (perOwner.get(owner) ?? 0) + weightUs);
  }
  const topCaller = (name: string): string | undefined => {
    const byCaller = callers.get(name);
    if (byCaller === undefined) return undefined;
    return [...byCaller.entries()].sort((a, b) => b[1] - a[1])[0]?.[0];
  };
  const entries = (map: Map<string, number>, withCallers: boolean): ProfileEntry[] =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => {
        const via = withCallers ? topCaller(name) : undefined;
        return { name, selfMs: us / 1000, pct: busy === 0 ? 0 : (100 * us) / busy, ...(via === undefined ? {} : { via }) };
      });
  return {
    file,
    windowMs: (toUs - fromUs) / 1000,
    samples: counted,
    busyMs: busy / 1000,
    idleMs: idle / 1000,
    gcMs: gc / 1000,
    programMs: program / 1000,
    topFunctions: entries(perFunction, true),
    topAreas: entries(perArea, false),
    topOwners: entries(perOwner, false),
  };
}
